"""Loading a Stable Diffusion pipeline (SD-1.x, SD-2.x or SDXL) from wherever the user keeps it.

``load_pipeline(model)`` accepts:
- ``None``: the embedded default model shipped in ``dragdiff/assets/model/`` (a diffusers folder);
- a local diffusers folder (with ``model_index.json``);
- a single ``.safetensors`` / ``.ckpt`` checkpoint in the original (LDM / SGM) layout; its configs come from
  ``config=`` (a diffusers folder of the same architecture) or else from the local Hugging Face cache;
- a Hugging Face hub id (``owner/name``): the local cache is tried first, then the hub, but only after a short
  connectivity check, so an unreachable hub fails in seconds with a message saying how to use a local copy.

The model family (``diffusion.family``: sd1, sd2, sdxl) is read from the configs before any weights load and
picks the pipeline class (``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``); other families (SD3,
FLUX, …) fail with one line naming the supported ones. The scheduler is always replaced by DDIM with SPEC §3's
settings (``inversion.ddim_scheduler``), keeping the model's betas and ``prediction_type``. Problems raise
``ModelLoadError`` (a ``ValueError``) naming the path and the reason.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from dragdiff.diffusion.family import (
    SD1,
    SDXL,
    Family,
    ModelLoadError,
    UnsupportedModelError,
    family_from_index,
    family_of,
    family_of_file_keys,
    family_of_folder,
)
from dragdiff.diffusion.inversion import ddim_scheduler

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
FAMILIES_DEFAULT = SD1  # a checkpoint whose tensor names do not say (no text encoder inside) and no config
_REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer")
_SDXL_COMPONENTS = ("text_encoder_2", "tokenizer_2")
_HUB_CHECK_TIMEOUT_S = 3.0

__all__ = [
    "ModelLoadError",
    "UnsupportedModelError",
    "family_of",
    "load_pipeline",
    "native_size",
    "size_multiple",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA if present else CPU; otherwise the given device (checked to exist)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available here")
    return dev


_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> fp16 on CUDA, fp32 elsewhere; strings like ``"fp16"``/``"bf16"`` are accepted."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}") from None


def native_size(pipe: Any) -> int:
    """The model's native image side in pixels: ``unet.config.sample_size * vae_scale_factor``."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def size_multiple(pipe: Any) -> int:
    """Image sides must be multiples of this: the VAE factor times the UNet's total downsampling."""
    return int(pipe.vae_scale_factor) * 2 ** (len(pipe.unet.config.block_out_channels) - 1)


def weights_fingerprint(pipe: Any) -> str:
    """16 hex digits hashing a few weight tensors: changes when the weights at a path change."""
    import hashlib

    h = hashlib.sha256()
    for tensor in (pipe.unet.conv_in.weight, pipe.unet.conv_out.weight, pipe.vae.decoder.conv_out.weight):
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(pipe: Any) -> str:
    """A short string naming the loaded model: its path or hub id, else ``in-memory:<fingerprint>``."""
    name = str(getattr(pipe, "_dragdiff_model_id", "") or pipe.config.get("_name_or_path", "") or "")
    return name or "in-memory:" + weights_fingerprint(pipe)


def pipeline_class(family: Family) -> Any:
    """The diffusers pipeline class that loads ``family``."""
    import diffusers

    return getattr(diffusers, family.pipeline_class)


def load_pipeline(
    model: str | os.PathLike[str] | None = None,
    *,
    vae: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Any:
    """Load an SD-1.x/2.x ``StableDiffusionPipeline`` or an ``StableDiffusionXLPipeline`` (DDIM scheduler, no
    safety checker) on ``device`` in ``dtype``; ``family_of(pipe)`` names its family.

    ``config`` is only used for single-file checkpoints: a diffusers folder holding the matching configs.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    kwargs: dict[str, Any] = dict(dtype=dt)
    if model is None:
        if not (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
            raise ModelLoadError(
                f"embedded model not found at {EMBEDDED_MODEL_DIR}; pass a model with --model "
                "(a diffusers folder, a .safetensors/.ckpt file or a hub id)"
            )
        model = EMBEDDED_MODEL_DIR
    source = str(model)
    path = Path(source).expanduser()
    if path.is_dir():
        family = _check_pipeline_folder(path)
        cls = pipeline_class(family)
        extra = _extra(family, kwargs)
        pipe = _wrap(source, lambda: cls.from_pretrained(path, local_files_only=True, **extra))
    elif path.is_file():
        family, pipe = _load_single_file(path, config, kwargs)
    elif path.suffix in SINGLE_FILE_SUFFIXES or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ModelLoadError(f"model {source!r}: no such file or folder")
    else:
        family, pipe = _load_from_hub(source, kwargs)
    _check_pipeline(pipe, source, family)
    if vae is not None:
        pipe.vae = _load_vae(Path(vae).expanduser(), dt)
    upcast_vae(pipe, family)
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    pipe._dragdiff_model_id = source
    pipe._dragdiff_family = family
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def upcast_vae(pipe: Any, family: Family) -> None:
    """SDXL's VAE overflows in fp16: with ``force_upcast`` in its config, keep it in fp32 (as
    ``StableDiffusionXLPipeline`` upcasts it for decoding); the latents code reads ``vae.dtype``."""
    if family is SDXL and pipe.vae.dtype == torch.float16 and pipe.vae.config.get("force_upcast", False):
        pipe.vae.to(torch.float32)


def _extra(family: Family, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` plus what the family's pipeline class takes besides (SD's safety-checker switches)."""
    if family is SDXL:
        return dict(kwargs)
    return dict(kwargs, safety_checker=None, requires_safety_checker=False)


def _wrap(source: str, load: Any) -> Any:
    """Run a diffusers load and turn its errors into one ModelLoadError naming the source."""
    try:
        return load()
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load model {source!r}: {reason}") from exc


def _read_index(index: Path, what: str) -> dict[str, Any]:
    try:
        spec = json.loads(index.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{what} is not a Stable Diffusion pipeline: unreadable model_index.json ({exc})"
        ) from None
    if not isinstance(spec, dict):
        raise ModelLoadError(f"{what} is not a Stable Diffusion pipeline: model_index.json is not an object")
    return spec


def _check_pipeline_folder(path: Path) -> Family:
    """The family of a diffusers folder, after checking it names the components that family needs."""
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"{path} is not a Stable Diffusion pipeline: no model_index.json in the folder")
    spec = _read_index(index, str(path))
    family = family_of_folder(path)  # refuses SD3, FLUX, … in one line
    _check_components(spec, family, str(path))
    return family


def _check_components(spec: dict[str, Any], family: Family, what: str) -> None:
    wanted = _REQUIRED_COMPONENTS + (_SDXL_COMPONENTS if family is SDXL else ())
    missing = [c for c in wanted if not spec.get(c) or spec.get(c) == [None, None]]
    if missing:
        raise ModelLoadError(
            f"{what} is not a {family.title} pipeline: model_index.json has no {', '.join(missing)} "
            f"(class {spec.get('_class_name', '?')})"
        )


def _check_pipeline(pipe: Any, source: str, family: Family) -> None:
    from diffusers import UNet2DConditionModel

    if not isinstance(getattr(pipe, "unet", None), UNet2DConditionModel):
        raise ModelLoadError(f"{source} is not a Stable Diffusion pipeline: its denoiser is not a UNet")
    if not any(getattr(b, "attentions", None) for b in pipe.unet.up_blocks):
        raise ModelLoadError(
            f"{source} is not a Stable Diffusion pipeline: the UNet decoder has no attention"
        )
    if int(pipe.vae.config.latent_channels) != int(pipe.unet.config.in_channels):
        raise ModelLoadError(
            f"{source}: the VAE has {pipe.vae.config.latent_channels} latent channels but the UNet takes "
            f"{pipe.unet.config.in_channels}"
        )
    if family_of(pipe) is not family:  # the loaded UNet must be what the configs said
        found = family_of(pipe).title
        raise ModelLoadError(f"{source}: the configs say {family.title} but the UNet is {found}")


def _file_family(path: Path) -> Family | None:
    """The family a checkpoint's tensor names say (``.safetensors`` only: a ``.ckpt`` is not opened twice)."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"could not read {path} as a .safetensors checkpoint: {exc}") from None
    return family_of_file_keys(keys, str(path))


def _load_single_file(
    path: Path, config: str | os.PathLike[str] | None, kwargs: dict[str, Any]
) -> tuple[Family, Any]:
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise ModelLoadError(
            f"{path} is not a Stable Diffusion checkpoint: expected a folder, a .safetensors or a .ckpt file"
        )
    said = _file_family(path)  # SD3/FLUX files are refused here
    extra: dict[str, Any] = {"local_files_only": True}
    family = said
    if config is not None:
        cfg = Path(config).expanduser()
        family = _check_pipeline_folder(cfg)
        if said is not None and said is not family:
            raise ModelLoadError(
                f"{path} is a {said.title} checkpoint but --model-config {cfg} is a {family.title} pipeline"
            )
        extra["config"] = str(cfg)
    family = family or FAMILIES_DEFAULT
    cls = pipeline_class(family)
    try:
        return family, cls.from_single_file(str(path), **extra, **_extra(family, kwargs))
    except Exception as exc:  # diffusers raises many kinds here (hub lookups, key errors, shape mismatches)
        if config is None:
            raise ModelLoadError(
                f"could not load {path}: a single-file {family.title} checkpoint needs its model configs, "
                "which are not in the local Hugging Face cache; pass a diffusers folder of the same "
                "architecture (--model-config DIR), or pass a diffusers folder as --model"
            ) from exc
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {path} as a {family.title} checkpoint: {reason}") from exc


def _hub_reachable(timeout: float = _HUB_CHECK_TIMEOUT_S) -> bool:
    """True if a TCP connection to the hub endpoint opens within ``timeout`` (DNS included)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    ok = threading.Event()

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return ok.is_set()


def _hub_file(repo_id: str, filename: str, offline: bool) -> Path | None:
    """A file of a hub repository, from the local cache (``offline``) or downloaded; None if not there."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
    except Exception as exc:  # not cached / not in the repository (several huggingface_hub error kinds)
        logger.debug("hub id %s: no %s (%s)", repo_id, filename, exc)
        return None


def _hub_family(repo_id: str, offline: bool) -> Family | None:
    """The family of a hub repository from its model_index.json and UNet config, None if not available."""
    index = _hub_file(repo_id, "model_index.json", offline)
    if index is None:
        return None
    unet = _hub_file(repo_id, "unet/config.json", offline)
    unet_config = json.loads(unet.read_text()) if unet is not None else None
    spec = _read_index(index, repo_id)
    family = family_from_index(spec, unet_config, repo_id)
    _check_components(spec, family, repo_id)
    return family


def _load_from_hub(repo_id: str, kwargs: dict[str, Any]) -> tuple[Family, Any]:
    family = _hub_family(repo_id, offline=True)
    if family is not None:
        try:  # a copy in the local Hugging Face cache needs no network
            cls = pipeline_class(family)
            return family, cls.from_pretrained(repo_id, local_files_only=True, **_extra(family, kwargs))
        except Exception as exc:  # partly cached (diffusers raises OSError/EnvironmentError or ValueError)
            logger.debug("hub id %s not fully in the local cache: %s", repo_id, exc)
    if not _hub_reachable():
        raise ModelLoadError(
            f"model {repo_id!r} is not a local path and the Hugging Face hub cannot be reached; download the "
            "model elsewhere and pass its folder (--model /path/to/folder) or a .safetensors file"
        )
    family = _wrap(repo_id, lambda: _hub_family(repo_id, offline=False))
    if family is None:
        raise ModelLoadError(f"model {repo_id!r}: no model_index.json on the hub (not a diffusers pipeline)")
    cls = pipeline_class(family)
    return family, _wrap(repo_id, lambda: cls.from_pretrained(repo_id, **_extra(family, kwargs)))


def _load_vae(path: Path, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKL

    if path.is_dir():
        sub = path / "vae" if (path / "vae" / "config.json").is_file() else path
        if not (sub / "config.json").is_file():
            raise ModelLoadError(f"VAE {path}: no config.json (expected a diffusers AutoencoderKL folder)")
        return _wrap(str(path), lambda: AutoencoderKL.from_pretrained(sub, dtype=dtype))
    if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
        return _wrap(str(path), lambda: AutoencoderKL.from_single_file(str(path), dtype=dtype))
    raise ModelLoadError(f"VAE {path}: no such folder or .safetensors/.ckpt file")
