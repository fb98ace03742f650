"""CUDA graphs (``runtime.cuda_graphs``, issue #6) replay the eager computation: same edit, same LoRA.

These need a CUDA device and are opt-in: ``pytest -m gpu tests/test_cuda_graphs.py`` (the GPU machine runs
them: docs/performance.md); the default run keeps only the configuration check. The tiny pipeline in fp32
and PyTorch's deterministic settings keep the comparison exact: a graph replays the eager loop's kernels,
and on CUDA both use the fused Adam/AdamW.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from conftest import build_tiny_pipeline, make_test_image
from dragdiff.bench.runner import deterministic_mode
from dragdiff.config import ConfigError, EditConfig, GenerateConfig, LoraConfig, RuntimeConfig, preset
from dragdiff.diffusion.graphs import GraphedForward, graphs_usable
from dragdiff.diffusion.lora import train_lora
from dragdiff.diffusion.optimise import _eager_iterations, _graphed_iterations
from dragdiff.diffusion.unet import Conditioning, unet_eps
from dragdiff.editor import DragEditor
from dragdiff.types import DragInstruction


def cuda(test):  # opt-in (pytest -m gpu), and skipped where there is no CUDA device
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
    return pytest.mark.gpu(skip(test))


CASE = preset("dragdiffusion").override(
    **{
        "lora.steps": 8,  # > the 2 warm-up steps: the graph is captured and replayed
        "lora.batch_size": 2,
        "lora.rank": 4,
        "inversion.num_steps": 10,
        "drag.max_iterations": 10,
        "drag.stop_distance": 0.0,  # every iteration runs: the trajectories have the same length
    }
)


def test_cuda_graphs_setting() -> None:
    assert RuntimeConfig().cuda_graphs  # on by default (it only acts on CUDA)
    with pytest.raises(ConfigError, match="runtime.cuda_graphs"):
        RuntimeConfig(cuda_graphs="yes")  # type: ignore[arg-type]
    assert not graphs_usable(torch.device("cpu"), True)


@pytest.fixture(scope="module")
def gpu_pipe():
    with deterministic_mode():
        yield build_tiny_pipeline().to("cuda")


@pytest.fixture(autouse=True)
def deterministic(request):
    """Every GPU test runs under the benchmark's deterministic settings (which graphs must support too)."""
    if "gpu_pipe" not in request.fixturenames:
        yield
        return
    with deterministic_mode():
        yield


@cuda
def test_graphed_forward_replays_the_eager_forward(gpu_pipe) -> None:
    unet = gpu_pipe.unet
    gen = torch.Generator().manual_seed(0)
    length, dim = gpu_pipe.tokenizer.model_max_length, gpu_pipe.text_encoder.config.hidden_size
    cond = Conditioning(torch.randn((1, length, dim), generator=gen).cuda())
    graphed = GraphedForward(lambda z, t: unet_eps(unet, z, t, cond))
    for i, t in enumerate([901, 601, 301, 1]):  # warm-up, capture, replays, each at another z and t
        z = torch.randn((1, 4, 16, 16), generator=gen).cuda()
        with torch.no_grad():
            want = unet_eps(unet, z, t, cond)
        got = graphed(z, t)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"call {i}, t={t}")
    assert len(graphed._graphs) == 1


@cuda
@pytest.mark.parametrize("hooked", [False, True], ids=["peft adapter", "hooked adapter (fast path)"])
def test_graphed_lora_training_matches_eager(gpu_pipe, hooked: bool) -> None:
    image = make_test_image(64, 64)
    cfg = LoraConfig(steps=8, batch_size=2, rank=4)
    states = []
    # eager; graphed after one eager step; graphed again
    for graphs in (False, True, True):
        run = train_lora(
            gpu_pipe,
            image,
            "a cat",
            cfg,
            64,
            seed=3,
            share_encoding=hooked,
            cuda_graphs=graphs,
            hooked=hooked,
        )
        losses = []
        while True:
            try:
                losses.append(next(run).loss)
            except StopIteration as done:
                states.append((done.value, losses))
                break
    eager, eager_losses = states[0]
    assert any(v.abs().max() > 0 for k, v in eager.items() if "lora_B" in k)  # it trained
    for graphed, graphed_losses in states[1:]:
        assert len(graphed_losses) == len(eager_losses) == 8
        np.testing.assert_allclose(graphed_losses, eager_losses, rtol=1e-6)
        assert set(graphed) == set(eager)
        for key in eager:
            torch.testing.assert_close(graphed[key], eager[key], rtol=1e-6, atol=1e-8, msg=key)


def _trajectory(editor: DragEditor, image, ins: DragInstruction, cfg: EditConfig):
    run = editor.iter_edit(image, ins, cfg)
    tracked = [[p.as_tuple() for p in e.handles] for e in run if e.phase == "drag"]
    assert run.result is not None
    return run.result, np.array(tracked)


@cuda
@pytest.mark.parametrize(
    ("mask", "previews"),
    [(False, 0), (True, 0), (False, 3)],
    ids=["truncated (no mask)", "full forward (mask)", "previews every 3 (eager iterations between replays)"],
)
def test_graphed_edit_matches_eager(gpu_pipe, tmp_path, mask: bool, previews: int) -> None:
    image = make_test_image()
    m = np.zeros((44, 60), dtype=bool)
    m[6:40, 6:56] = True
    ins = DragInstruction.from_pairs([((21, 22), (44, 22))], mask=m if mask else None, prompt="a cat")
    on = CASE.override(**{"runtime.preview_every": previews})
    off = on.override(**{"runtime.cuda_graphs": False})
    eager, eager_track = _trajectory(DragEditor(gpu_pipe, lora_cache_dir=tmp_path / "a"), image, ins, off)
    editor = DragEditor(gpu_pipe, lora_cache_dir=tmp_path / "b")  # its own LoRA and inversion
    graphed, graphed_track = _trajectory(editor, image, ins, on)
    assert graphed_track.shape == eager_track.shape == (10, 1, 2)
    assert np.array_equal(graphed_track, eager_track)
    assert graphed.final_handles == eager.final_handles
    a = np.asarray(eager.image, dtype=np.float32)
    b = np.asarray(graphed.image, dtype=np.float32)
    assert np.abs(a - b).max() <= 1  # 8-bit levels
    assert len(graphed.frames) == len(eager.frames) == (3 if previews else 0)
    for x, y in zip(graphed.frames, eager.frames, strict=True):
        assert np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32)).max() <= 1


@cuda
def test_compiled_blocks_inside_the_graphs_match_the_graphed_edit(gpu_pipe, tmp_path) -> None:
    """``runtime.compile`` (Triton kernels for the convolution blocks) replayed in the same CUDA graphs."""
    image = make_test_image()
    m = np.zeros((44, 60), dtype=bool)
    m[6:40, 6:56] = True
    ins = DragInstruction.from_pairs([((21, 22), (44, 22))], mask=m, prompt="a cat")
    plain, plain_track = _trajectory(DragEditor(gpu_pipe, lora_cache_dir=tmp_path / "a"), image, ins, CASE)
    editor = DragEditor(gpu_pipe, lora_cache_dir=tmp_path / "b")
    on = CASE.override(**{"runtime.compile": True})
    compiled, compiled_track = _trajectory(editor, image, ins, on)
    assert compiled_track.shape == plain_track.shape == (10, 1, 2)
    # fused kernels round differently, and the tracker's argmax over feature cells (3.75 image px here) can
    # flip to the neighbouring cell at a near tie: on an H100 (2026-12-08) one iteration of ten did, the
    # track came back, the final handles were equal, and the picture (random weights: noise-like, chaotic
    # under a changed step) differed by 4.2 levels on average, 42 at most
    assert np.abs(compiled_track - plain_track).max() <= 3.75
    assert compiled.final_handles == plain.final_handles
    diff = np.abs(np.asarray(compiled.image, np.float32) - np.asarray(plain.image, np.float32))
    assert diff.mean() <= 6  # 8-bit levels
    again, again_track = _trajectory(editor, image, ins, on.override(**{"seed": 1}))  # compiled code reused
    assert again_track.shape == (10, 1, 2) and again.timings["total"] < compiled.timings["total"]


@cuda
def test_graphed_edit_of_a_generated_image_matches_eager(gpu_pipe, tmp_path) -> None:
    """Generated-image mode: classifier-free guidance doubles every batch; no LoRA, no inversion."""
    editor = DragEditor(gpu_pipe, lora_cache_dir=tmp_path)
    gen = editor.generate("a red circle", GenerateConfig(num_steps=10, seed=3))
    ins = DragInstruction.from_pairs([((20, 30), (40, 30))])
    eager, eager_track = _trajectory(editor, gen, ins, CASE.override(**{"runtime.cuda_graphs": False}))
    graphed, graphed_track = _trajectory(editor, gen, ins, CASE)
    assert eager.record["mode"] == graphed.record["mode"] == "generated"
    assert graphed_track.shape == eager_track.shape == (10, 1, 2)
    assert np.array_equal(graphed_track, eager_track)
    a = np.asarray(eager.image, dtype=np.float32)
    b = np.asarray(graphed.image, dtype=np.float32)
    assert np.abs(a - b).max() <= 1


def _run_loop(graphed: bool, z, handles, forward, config: EditConfig):
    """The latent-optimisation loop over ``z`` with Adam as the editor's on CUDA, graphed or eager."""
    opt = torch.optim.Adam([z], lr=0.1, fused=True, capturable=True)
    stop = threading.Event()
    device, iterations = torch.device("cuda"), config.drag.max_iterations
    if graphed:
        return _graphed_iterations(device, z, handles, opt, forward, False, iterations, 0, stop)
    return _eager_iterations(device, handles, opt, forward, False, config, stop)


@cuda
def test_graphed_loop_undoes_the_update_of_the_iteration_that_stops(gpu_pipe, tmp_path) -> None:
    """The stop rule fires inside a replayed iteration: ẑ_t and the count end as in the eager loop."""
    config = CASE
    results = []
    for graphed in (False, True):
        z = torch.linspace(-1, 1, 64, device="cuda").view(1, 1, 8, 8).clone().requires_grad_(True)
        target = torch.zeros_like(z)
        counter = torch.zeros((), device="cuda")
        handles = torch.tensor([[3.0, 4.0]], device="cuda")

        def forward(h, track, need_eps, z=z, target=target, counter=counter):
            counter.add_(1)  # done from the 6th call on (iteration 5)
            loss = ((z - target) ** 2).sum()
            done = (counter >= 6).float().view(1)
            return torch.cat([done, loss.detach().view(1), (h + 1).flatten()]), loss, None

        statuses = [(it, status) for it, _, _, status in _run_loop(graphed, z, handles, forward, config)]
        results.append((statuses, z.detach().clone()))
    (eager_status, eager_z), (graphed_status, graphed_z) = results
    assert eager_status == graphed_status == [(i, "step") for i in range(5)] + [(5, "converged")]
    torch.testing.assert_close(graphed_z, eager_z, rtol=1e-6, atol=1e-7)


@cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA device")
def test_graphed_edit_on_a_device_that_is_not_the_current_one(tmp_path) -> None:
    """An editor on cuda:1 in a process whose current device is cuda:0 captures its graphs on cuda:1."""
    torch.cuda.set_device(0)
    image = make_test_image()
    ins = DragInstruction.from_pairs([((21, 22), (44, 22))], prompt="a cat")
    off = CASE.override(**{"runtime.cuda_graphs": False})
    with deterministic_mode():
        pipe = build_tiny_pipeline().to("cuda:1")
        a, b = (DragEditor(pipe, lora_cache_dir=tmp_path / name) for name in "ab")
        eager, eager_track = _trajectory(a, image, ins, off)
        graphed, graphed_track = _trajectory(b, image, ins, CASE)
    assert torch.cuda.current_device() == 0
    assert np.array_equal(graphed_track, eager_track)
    assert np.abs(np.asarray(eager.image, np.float32) - np.asarray(graphed.image, np.float32)).max() <= 1


def _huge_while_capturing() -> None:
    """Ask for more memory than any GPU has, only while a graph is being captured: a real OOM from the real
    allocator, where an SDXL 1024² optimisation runs out (the graph's pool on top of the eager loop)."""
    if torch.cuda.is_current_stream_capturing():
        torch.empty(2**45, dtype=torch.uint8, device="cuda")  # 32 TiB


@cuda
@pytest.mark.parametrize("failures", [1, 2], ids=["fails once: captured on retry", "fails twice: eager"])
def test_a_capture_that_runs_out_of_memory(gpu_pipe, caplog, failures: int) -> None:
    """Out of memory once: the capture is tried again on an emptied allocator cache and replayed; twice: the
    forward goes on eagerly with one warning. Either way the results are the eager ones."""
    unet = gpu_pipe.unet
    gen = torch.Generator().manual_seed(0)
    length, dim = gpu_pipe.tokenizer.model_max_length, gpu_pipe.text_encoder.config.hidden_size
    cond = Conditioning(torch.randn((1, length, dim), generator=gen).cuda())
    failed = []

    def forward(z, t):
        if len(failed) < failures and torch.cuda.is_current_stream_capturing():
            failed.append(True)
            _huge_while_capturing()
        return unet_eps(unet, z, t, cond)

    caplog.set_level("INFO", logger="dragdiff.diffusion.graphs")
    graphed = GraphedForward(forward)
    for t in (901, 601, 301):  # warm-up, capture (one or two tries), replay or eager
        z = torch.randn((1, 4, 16, 16), generator=gen).cuda()
        with torch.no_grad():
            want = unet_eps(unet, z, t, cond)
        torch.testing.assert_close(graphed(z, t), want, rtol=1e-5, atol=1e-6)
    assert len(failed) == failures
    if failures == 1:
        assert graphed._graphs
        assert "after emptying the allocator's cache" in caplog.text
        assert "not enough GPU memory" not in caplog.text
    else:
        assert not graphed._graphs
        assert "not enough GPU memory to capture the UNet forward" in caplog.text


@cuda
def test_an_optimisation_whose_capture_runs_out_of_memory_matches_eager() -> None:
    results = []
    for graphed in (False, True):
        z = torch.linspace(-1, 1, 64, device="cuda").view(1, 1, 8, 8).clone().requires_grad_(True)
        handles = torch.tensor([[3.0, 4.0]], device="cuda")

        def forward(h, track, need_eps, z=z):
            _huge_while_capturing()
            loss = (z**2).sum()
            return torch.cat([torch.zeros(1, device="cuda"), loss.detach().view(1), h.flatten()]), loss, None

        six = CASE.override(**{"drag.max_iterations": 6})
        statuses = [status for *_, status in _run_loop(graphed, z, handles, forward, six)]
        results.append((statuses, z.detach().clone()))
    (eager_status, eager_z), (graphed_status, graphed_z) = results
    assert graphed_status == eager_status == ["step"] * 6
    torch.testing.assert_close(graphed_z, eager_z, rtol=1e-6, atol=1e-7)
