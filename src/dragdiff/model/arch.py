"""The embedded model's architecture: a narrow Stable-Diffusion-1.x text-to-image model.

Same topology and file format as SD-1.5 (so every SD-1.x tool loads it), scaled down to fit the repository:
- UNet2DConditionModel: CrossAttnDownBlock2D ×3 + DownBlock2D, cross-attention mid block, UpBlock2D +
  CrossAttnUpBlock2D ×3, 2 layers per block (16 transformer blocks), 4 latent channels in and out.
- AutoencoderKL with 4 latent channels and 3 blocks, i.e. downsampling f = 4 (128 px images -> 32×32 latents).
- CLIPTextModel (small) + CLIPTokenizer from the real CLIP BPE truncated to its first K merges (tokenizer.py).
- The SD-1.5 noise schedule in a DDIMScheduler.
``ModelSpec()`` is the shipped model; tests build tiny ones with narrower widths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dragdiff.config import ConfigError

SD_SCALING_FACTOR = 0.18215  # SD-1.x latent scale; our VAE's latents are rescaled so it is exactly right


@dataclass(frozen=True)
class ModelSpec:
    """Sizes of the three networks. Defaults: the shipped model (fp16 ≈ 29 MB, see docs/model.md)."""

    image_size: int = 128  # training resolution; latents are image_size / 4
    unet_channels: tuple[int, ...] = (32, 64, 128, 128)  # per level, like SD-1.5's (320, 640, 1280, 1280)
    unet_heads: tuple[int, ...] = (1, 2, 4, 4)  # attention heads per level (head width 32 everywhere)
    unet_layers: int = 2  # SD-1.x: 2 resnets (+ transformer blocks) per down level, 3 per up level
    cross_attention_dim: int = 256  # = text_hidden
    vae_channels: tuple[int, ...] = (32, 64, 128)  # 3 blocks -> f = 4
    vae_layers: int = 2
    latent_channels: int = 4
    norm_groups: int = 32  # GroupNorm groups in UNet and VAE (SD uses 32); must divide every width
    text_hidden: int = 256
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 512
    vocab_size: int = 3514  # 512 byte symbols + 3000 CLIP merges + 2 special tokens (tokenizer.py)
    max_length: int = 77

    def __post_init__(self) -> None:
        if self.image_size % 8:
            raise ConfigError(f"image_size must be a multiple of 8, got {self.image_size}")
        if len(self.unet_channels) != 4 or len(self.unet_heads) != 4:
            raise ConfigError(f"unet_channels and unet_heads need 4 levels, got {self.unet_channels}")
        for width in (*self.unet_channels, *self.vae_channels):
            if width % self.norm_groups:
                raise ConfigError(f"width {width} is not divisible by norm_groups={self.norm_groups}")
        if self.cross_attention_dim != self.text_hidden:
            raise ConfigError(
                f"cross_attention_dim ({self.cross_attention_dim}) must equal "
                f"text_hidden ({self.text_hidden})"
            )

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TINY_SPEC = ModelSpec(
    image_size=32,
    unet_channels=(8, 16, 16, 16),
    unet_heads=(1, 2, 2, 2),
    cross_attention_dim=32,
    vae_channels=(8, 16, 16),
    vae_layers=1,
    norm_groups=4,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    text_intermediate=64,
)  # for tests and smoke runs: seconds on a CPU


def build_unet(spec: ModelSpec) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=spec.latent_size,
        in_channels=spec.latent_channels,
        out_channels=spec.latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=spec.unet_channels,
        layers_per_block=spec.unet_layers,
        attention_head_dim=spec.unet_heads,  # diffusers' legacy name for the number of heads (SD-1.5: 8)
        cross_attention_dim=spec.cross_attention_dim,
        norm_num_groups=spec.norm_groups,
    )


def build_vae(spec: ModelSpec) -> AutoencoderKL:
    n = len(spec.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=spec.vae_channels,
        layers_per_block=spec.vae_layers,
        latent_channels=spec.latent_channels,
        norm_num_groups=spec.norm_groups,
        sample_size=spec.image_size,
        scaling_factor=SD_SCALING_FACTOR,
    )


def build_text_encoder(spec: ModelSpec) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        max_position_embeddings=spec.max_length,
        projection_dim=spec.text_hidden,
        hidden_act="quick_gelu",  # as in CLIP ViT-L/14's text tower
        bos_token_id=spec.vocab_size - 2,  # <|startoftext|>
        eos_token_id=spec.vocab_size - 1,  # <|endoftext|> (also the padding token, as in CLIP)
        pad_token_id=spec.vocab_size - 1,
    )
    return CLIPTextModel(config)


def build_scheduler() -> DDIMScheduler:
    """The SD-1.5 noise schedule (scaled_linear 0.00085-0.012, 1000 steps, epsilon) as a DDIMScheduler."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
