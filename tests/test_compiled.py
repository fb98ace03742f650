"""``runtime.compile`` (issue #18): the UNet's convolution blocks under ``torch.compile``, the same edit.

On the tiny pipeline (fp32, CPU: Inductor's C++ backend; on CUDA it writes Triton kernels, measured in
``benchmarks/lora_step_gpu.py --compile``): the compiled forward and its gradient equal eager ones within fp32
rounding, the LoRA's hooks (in the eager attention blocks) still act, the blocks are eager again afterwards,
and a whole `dragdiffusion` edit with compile on tracks the same handles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build_tiny_pipeline, make_test_image
from dragdiff.config import ConfigError, EditConfig, LoraConfig, RuntimeConfig, preset
from dragdiff.diffusion.compiled import compiled_blocks
from dragdiff.diffusion.lora import hooked_lora
from dragdiff.diffusion.unet import Conditioning, unet_eps
from dragdiff.editor import DragEditor
from dragdiff.types import DragInstruction


def _inputs(pipe):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn((1, 4, 16, 16), generator=gen)
    length, dim = pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size
    return z, Conditioning(torch.randn((1, length, dim), generator=gen), None, 1.0)


@pytest.mark.slow  # ≈ 100 s of C++ compilation on the 2-core CPU
def test_compiled_blocks_compute_the_eager_forward_and_gradient_with_the_lora_hooks() -> None:
    import torch._dynamo

    pipe = build_tiny_pipeline()
    unet = pipe.unet.requires_grad_(False)
    z, cond = _inputs(pipe)
    limit = torch._dynamo.config.recompile_limit
    with hooked_lora(unet, LoraConfig(rank=4)) as params:
        for p in params.values():  # B = 0 would hide a dropped hook
            torch.nn.init.normal_(p, std=0.3)
        base = unet_eps(unet, z, 601, cond)
        z_eager = z.clone().requires_grad_(True)
        unet_eps(unet, z_eager, 601, cond).square().mean().backward()
        with compiled_blocks(unet) as count:
            kinds = {type(m).__name__ for m in unet.modules() if getattr(m, "_compiled_call_impl", None)}
            assert count > 0 and kinds == {"ResnetBlock2D", "Downsample2D", "Upsample2D"}
            z_comp = z.clone().requires_grad_(True)
            out = unet_eps(unet, z_comp, 601, cond)
            out.square().mean().backward()
            assert torch._dynamo.config.recompile_limit >= 256
    torch.testing.assert_close(out.detach(), base, rtol=1e-4, atol=1e-5)
    assert z_eager.grad is not None and z_comp.grad is not None
    torch.testing.assert_close(z_comp.grad, z_eager.grad, rtol=1e-3, atol=1e-6)
    without_lora = unet_eps(unet, z, 601, cond)
    assert (without_lora - base).abs().max() > 1e-3  # the hooks were acting inside the compiled run
    assert all(m._compiled_call_impl is None for m in unet.modules())  # eager again
    assert torch._dynamo.config.recompile_limit == limit


def test_compile_is_a_checked_runtime_switch() -> None:
    assert RuntimeConfig().compile is False
    assert preset("dragdiffusion").override(**{"runtime.compile": True}).runtime.compile
    with pytest.raises(ConfigError, match="runtime.compile"):
        EditConfig(runtime=RuntimeConfig(compile="yes"))  # type: ignore[arg-type]


def test_two_compiled_edits_in_one_process_take_turns_and_leave_dynamo_as_it_was() -> None:
    import threading

    import torch._dynamo

    unet = build_tiny_pipeline().unet
    cfg = torch._dynamo.config
    before = (cfg.recompile_limit, cfg.automatic_dynamic_shapes, cfg.suppress_errors)
    order: list[str] = []
    second_tried = threading.Event()

    def second() -> None:
        second_tried.set()
        with compiled_blocks(unet):
            order.append("second in")
        order.append("second out")

    with compiled_blocks(unet) as count:  # compiling is lazy: nothing runs until a block is called
        assert count > 0 and cfg.suppress_errors
        thread = threading.Thread(target=second)
        thread.start()
        second_tried.wait(5)
        thread.join(0.3)  # the second edit cannot enter while the first holds Dynamo's settings
        order.append("first out")
    thread.join(5)
    assert order == ["first out", "second in", "second out"]
    assert (cfg.recompile_limit, cfg.automatic_dynamic_shapes, cfg.suppress_errors) == before
    assert all(m._compiled_call_impl is None for m in unet.modules())


def test_inside_a_compiled_edit_every_graph_warms_up_again_before_its_capture() -> None:
    # on the GPU a plain edit first warmed the denoising graphs up, and a compiled edit after it captured at
    # its first call: the blocks compiled (and Inductor timed its kernels, a device synchronisation) inside
    # the capture, "operation not permitted when stream is capturing" (H100, 2026-12-07)
    from dragdiff.diffusion.graphs import is_warm, mark_warm

    tag = ("denoise", object())
    mark_warm(tag)
    with compiled_blocks(build_tiny_pipeline().unet):
        assert not is_warm(tag)
        mark_warm(tag)
        assert is_warm(tag)
    assert is_warm(tag)  # the process-wide mark stands
    with compiled_blocks(build_tiny_pipeline().unet):
        assert not is_warm(tag)  # and the next compiled edit warms up again


@pytest.mark.slow
def test_an_edit_with_compile_tracks_the_same_handles(tmp_path) -> None:
    editor = DragEditor(build_tiny_pipeline(), lora_cache_dir=tmp_path)
    m = np.zeros((44, 60), dtype=bool)
    m[6:40, 6:56] = True
    ins = DragInstruction.from_pairs([((21, 22), (44, 22))], mask=m, prompt="a cat")
    cfg = preset("dragdiffusion").override(
        **{
            "lora.steps": 3,
            "lora.batch_size": 2,
            "lora.rank": 4,
            "inversion.num_steps": 10,
            "drag.max_iterations": 5,
            "drag.stop_distance": 0.0,
        }  # fmt: skip
    )
    eager = editor.edit(make_test_image(), ins, cfg)
    compiled = editor.edit(make_test_image(), ins, cfg.override(**{"runtime.compile": True}))
    assert compiled.final_handles == eager.final_handles
    diff = np.abs(np.asarray(compiled.image, np.int16) - np.asarray(eager.image, np.int16))
    assert diff.max() <= 2
