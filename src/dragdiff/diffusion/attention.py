"""Reference-latent control ("latent-MasaCtrl", paper §3.4; SPEC §5) as diffusers attention processors.

Batch layout: the UNet batch is a sequence of (source, edited) pairs, ``[src, edit]`` without classifier-free
guidance and ``[uncond_src, uncond_edit, cond_src, cond_edit]`` with it. In each selected self-attention layer
the source rows run plain self-attention and the edited rows' queries attend to the keys and values of their
pair's source row only. Cross-attention and all other layers are untouched.

Layers are selected by module name: the ``attn1`` (self-attention) processors of the decoder levels
``up_blocks.i`` that have attention, the ``levels`` highest-resolution ones (SD-1.5, levels = 2:
``up_blocks.2`` and ``up_blocks.3``, transformer blocks 10–15 of 16).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.nn.functional as F
from torch import Tensor


class ControlSwitch:
    """Turns the control of all installed processors on or off (e.g. before ``denoise.control_from_step``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled


class ReferenceAttnProcessor:
    """Self-attention where each edited row uses its source row's keys and values (SDPA)."""

    def __init__(self, name: str, switch: ControlSwitch) -> None:
        self.name = name
        self.switch = switch

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{self.name}: reference control applies to unmasked self-attention only")
        b, n, _ = hidden_states.shape  # (B, N, C), B = 2 x pairs
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k, v = (x.view(b, n, attn.heads, -1).transpose(1, 2) for x in (q, k, v))  # (B, heads, N, d)
        if self.switch.enabled:
            if b % 2:
                raise ValueError(
                    f"{self.name}: reference control needs [source, edited] pairs, got batch {b}"
                )
            k, v = (_source_rows(x) for x in (k, v))  # (B, heads, N, d), rows 2i and 2i+1 = source 2i
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(b, n, -1).to(q.dtype)  # (B, N, heads*d)
        out = attn.to_out[1](attn.to_out[0](out))  # projection, dropout
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _source_rows(x: Tensor) -> Tensor:
    """(2P, ...) -> (2P, ...) with both rows of each pair replaced by the pair's first (source) row."""
    pairs = x.view(x.shape[0] // 2, 2, *x.shape[1:])  # (P, 2, heads, N, d)
    return pairs[:, :1].expand_as(pairs).reshape(x.shape)


def controlled_layers(unet: Any, levels: int) -> list[str]:
    """Names (keys of ``unet.attn_processors``) of the self-attention layers under control."""
    with_attn = [i for i, block in enumerate(unet.up_blocks) if getattr(block, "attentions", None)]
    if not 1 <= levels <= len(with_attn):
        raise ValueError(
            f"denoise.control_levels must be in [1, {len(with_attn)}] for this UNet "
            f"(decoder levels with attention: {with_attn}), got {levels}"
        )
    prefixes = tuple(f"up_blocks.{i}." for i in with_attn[-levels:])
    return [name for name in unet.attn_processors if name.startswith(prefixes) and ".attn1." in name]


@contextmanager
def reference_control(unet: Any, levels: int, enabled: bool = True) -> Iterator[ControlSwitch]:
    """Install reference-control processors on the selected layers; restore the previous ones on exit."""
    original = dict(unet.attn_processors)
    switch = ControlSwitch(enabled)
    processors: dict[str, Any] = dict(original)
    for name in controlled_layers(unet, levels):
        processors[name] = ReferenceAttnProcessor(name, switch)
    unet.set_attn_processor(processors)
    try:
        yield switch
    finally:
        unet.set_attn_processor(original)
