"""The drag loss's differentiable ops avoid every op that has no deterministic CUDA backward."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dragdiff.ops import motion_loss, resize_bilinear

# ops that torch.use_deterministic_algorithms lists as raising on CUDA (when differentiated)
NONDETERMINISTIC_ON_CUDA = ("grid_sampler", "upsample_bilinear", "upsample_bicubic", "index_put", "cumsum")


class _OpLog(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_resize_and_motion_loss_backward_use_no_nondeterministic_op(gen) -> None:
    raw = torch.randn(1, 6, 8, 12, generator=gen, requires_grad=True)
    handles = torch.tensor([[0.0, 1.0], [10.0, 20.0], [15.0, 23.0]])
    targets = torch.tensor([[5.0, 9.0], [10.0, 30.0], [2.0, 2.0]])
    log = _OpLog()
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with log:
            feats = resize_bilinear(raw, (16, 24))  # (1, 6, 16, 24)
            motion_loss(feats, handles, targets, r_m=1).backward()
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    assert {"aten.gather", "aten.mm"} <= log.names  # the corners' gather, the resize's matmuls
    assert not {n for n in log.names if any(bad in n for bad in NONDETERMINISTIC_ON_CUDA)}
