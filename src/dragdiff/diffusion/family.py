"""The model families dragdiff edits with (issue #19), told apart from their files; what differs per family.

    family  pipeline class             UNet text conditioning                          native  features
    sd1     StableDiffusionPipeline    CLIP ViT-L/14 last hidden state (768)           512     up[2], ½ grid
    sd2     StableDiffusionPipeline    OpenCLIP ViT-H/14 last hidden state (1024)      512/768 up[2], 256 grid
    sdxl    StableDiffusionXLPipeline  CLIP ViT-L ‖ OpenCLIP bigG penultimate (2048)   1024    up[1], 256 grid
                                       + pooled bigG embedding (1280) + 6 size "time ids"

Every family may be ε- or v-prediction (the scheduler config's ``prediction_type``; SD-2.x 768 is v): the
engine reads it wherever it turns a UNet output into x̂_0 or ε (``ops.ddim``, the scheduler's ``step``, the
LoRA target). Detection reads only configs, never weights:
- a diffusers folder: ``model_index.json``'s ``_class_name`` (``StableDiffusionXLPipeline`` → sdxl), and the
  UNet config: ``addition_embed_type == "text_time"`` → sdxl; ``cross_attention_dim == 1024`` or
  ``use_linear_projection`` (SD-2.x's linear attention projections; SD-1.x's are 1x1 convolutions) → sd2;
- a single-file checkpoint: its tensor names (``conditioner.embedders`` / ``label_emb`` → sdxl,
  ``cond_stage_model.model`` (OpenCLIP) → sd2, ``cond_stage_model.transformer`` → sd1; SD3, FLUX → error);
- SD3 (``SD3Transformer2DModel``), FLUX (``FluxTransformer2DModel``), Kandinsky, PixArt, the SDXL refiner and
  the rest are refused with one line naming what is supported (``UNSUPPORTED``).

Feature layer and supervision grid (paper §3.3; docs/engine.md): the reference reads SD-1.5's
``up_blocks[2]`` (640 channels, at latent resolution after its upsampler: the second-to-last decoder level) on
a grid of half the image (256 px at 512). SD-2.x has SD-1.5's UNet topology, so the same block. SDXL's decoder
has three levels (1280, 640, 320 channels); the analogous block is ``up_blocks[1]``: 640 channels, latent
resolution, second-to-last level. The grid is 256 px on the native side for SD-2.x and SDXL, as the
reference's at 512: the point radii (r_m, r_p), the stop distance and the 80-iteration budget are in grid
pixels, so they keep the share of the picture they were tuned for (SD-2.x 512: ½, as SD-1.x; 768: ⅓; SDXL
1024: ¼). SD-1.x keeps the reference's rule (half the work size) at any size, the embedded model included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED = "SD-1.x, SD-2.x (ε or v-prediction, 512/768 px) and SDXL base (1024 px)"


@dataclass(frozen=True)
class Family:
    """What dragdiff needs to know about one model family."""

    name: str  # "sd1", "sd2", "sdxl"
    title: str  # for messages and records
    pipeline_class: str  # the diffusers pipeline class that loads it
    feature_up_block: int  # ``drag.feature_up_block`` when the config leaves it to the family
    supervision_px: int | None  # grid side at the native size; None: half the work size (the reference)

    def supervision_scale(self, native: int) -> float:
        """``drag.supervision_scale`` when the config leaves it to the family (see the module docstring)."""
        if self.supervision_px is None:
            return 0.5
        return min(1.0, self.supervision_px / native)

    @property
    def pooled(self) -> bool:
        """Whether the UNet takes a pooled text embedding and size "time ids" (``added_cond_kwargs``)."""
        return self.name == "sdxl"


SD1 = Family("sd1", "SD-1.x", "StableDiffusionPipeline", feature_up_block=2, supervision_px=None)
SD2 = Family("sd2", "SD-2.x", "StableDiffusionPipeline", feature_up_block=2, supervision_px=256)
SDXL = Family("sdxl", "SDXL", "StableDiffusionXLPipeline", feature_up_block=1, supervision_px=256)
FAMILIES: dict[str, Family] = {f.name: f for f in (SD1, SD2, SDXL)}

# pipeline or denoiser class names -> what to call them in the one-line refusal
UNSUPPORTED: dict[str, str] = {
    "StableDiffusion3Pipeline": "SD3",
    "SD3Transformer2DModel": "SD3",
    "FluxPipeline": "FLUX",
    "FluxTransformer2DModel": "FLUX",
    "KandinskyPipeline": "Kandinsky",
    "KandinskyV22Pipeline": "Kandinsky",
    "Kandinsky3Pipeline": "Kandinsky",
    "PixArtAlphaPipeline": "PixArt",
    "PixArtSigmaPipeline": "PixArt",
    "StableCascadeCombinedPipeline": "Stable Cascade",
    "StableCascadeDecoderPipeline": "Stable Cascade",
    "IFPipeline": "DeepFloyd IF",
    "LatentConsistencyModelPipeline": "LCM",
    "StableDiffusionUpscalePipeline": "the SD upscaler",
}
_SD_PIPELINES = {
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
}
# an SDXL img2img folder is the refiner when it has no first text encoder or asks for aesthetic scores
_SDXL_PIPELINES = {
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
}


class ModelLoadError(ValueError):
    """The model could not be loaded; the message names the path or id and the reason."""


class UnsupportedModelError(ModelLoadError):
    """A model of a family dragdiff does not edit with; the message is one line naming the supported ones."""


def refuse(source: str, what: str) -> UnsupportedModelError:
    """The one-line refusal of ``what`` (e.g. "SD3") loaded from ``source``."""
    return UnsupportedModelError(
        f"{source}: {what} models are not supported; dragdiff edits with {SUPPORTED}"
    )


def family_from_unet_config(unet_config: Any) -> Family:
    """sdxl / sd2 / sd1 from a UNet config (a dict or a diffusers FrozenDict)."""
    get = unet_config.get
    if get("addition_embed_type") == "text_time":
        return SDXL
    if get("cross_attention_dim") == 1024 or get("use_linear_projection"):
        return SD2
    return SD1


def family_from_index(spec: dict[str, Any], unet_config: dict[str, Any] | None, source: str) -> Family:
    """The family of a diffusers folder from its ``model_index.json`` (``spec``) and UNet config.

    Raises ``UnsupportedModelError`` (one line) for a pipeline dragdiff does not edit with.
    """
    name = str(spec.get("_class_name", ""))
    denoiser = spec.get("transformer")
    denoiser_class = denoiser[1] if isinstance(denoiser, list) and len(denoiser) == 2 else None
    for key in (name, denoiser_class):
        if key in UNSUPPORTED:
            raise refuse(source, UNSUPPORTED[key])
    no_text_encoder = spec.get("text_encoder") in (None, [None, None])
    if name.startswith("StableDiffusionXL") and (no_text_encoder or spec.get("requires_aesthetics_score")):
        raise refuse(source, "the SDXL refiner")
    if denoiser_class is not None or not spec.get("unet") or spec.get("unet") == [None, None]:
        raise refuse(source, f"{name or 'unknown'} ({denoiser_class or 'no UNet'})")
    if name not in _SD_PIPELINES | _SDXL_PIPELINES:
        raise refuse(source, name or "unknown")
    family = family_from_unet_config(unet_config or {})
    if name in _SDXL_PIPELINES and family is not SDXL:
        raise refuse(source, f"{name} without SDXL's UNet (no text_time embedding)")
    if name in _SD_PIPELINES and family is SDXL:
        raise refuse(source, f"{name} with an SDXL UNet")
    return family


def family_of_folder(path: Path) -> Family:
    """The family of a diffusers pipeline folder (``model_index.json`` + ``unet/config.json``)."""
    spec = json.loads((path / "model_index.json").read_text())
    unet_file = path / "unet" / "config.json"
    unet_config = json.loads(unet_file.read_text()) if unet_file.is_file() else None
    return family_from_index(spec, unet_config, str(path))


def family_of(pipe: Any) -> Family:
    """The family of a pipeline: the one ``load_pipeline`` detected, else read from the pipeline itself."""
    family = getattr(pipe, "_dragdiff_family", None)
    return family if isinstance(family, Family) else family_of_pipeline(pipe)


def family_of_pipeline(pipe: Any) -> Family:
    """The family of a loaded pipeline (an SDXL pipeline, or the UNet config otherwise)."""
    if type(pipe).__name__ in UNSUPPORTED:
        raise refuse(type(pipe).__name__, UNSUPPORTED[type(pipe).__name__])
    return family_from_unet_config(pipe.unet.config)


# tensor-name markers of the original (LDM / SGM) single-file layouts
_FILE_MARKERS: tuple[tuple[str, str], ...] = (
    ("model.diffusion_model.joint_blocks.", "SD3"),
    ("joint_blocks.", "SD3"),
    ("model.diffusion_model.double_blocks.", "FLUX"),
    ("double_blocks.", "FLUX"),
    ("conditioner.embedders.", "sdxl"),
    ("model.diffusion_model.label_emb.", "sdxl"),
    ("cond_stage_model.model.", "sd2"),
    ("cond_stage_model.transformer.", "sd1"),
)


def family_of_file_keys(keys: Any, source: str) -> Family | None:
    """The family a single-file checkpoint's tensor names say, None if they do not say (no text encoder
    in the file: SD-1.x and SD-2.x UNets have the same names). SD3/FLUX checkpoints are refused."""
    found = set()
    for key in keys:
        for prefix, family in _FILE_MARKERS:
            if key.startswith(prefix):
                found.add(family)
    for name in ("SD3", "FLUX"):
        if name in found:
            raise refuse(source, name)
    for name in ("sdxl", "sd2", "sd1"):
        if name in found:
            return FAMILIES[name]
    return None
