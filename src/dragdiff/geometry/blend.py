"""Keep what the user did not allow to change: the input's own pixels outside the editable mask."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

__all__ = ["keep_outside"]


def keep_outside(source: Image.Image, edited: Image.Image, mask: np.ndarray, feather_px: int) -> Image.Image:
    """``edited`` inside ``mask`` ((H, W) bool, True = may change), ``source`` bit for bit outside it.

    The weight of the edit rises from 0 at the mask's border to 1 at ``feather_px`` inside it (a distance
    ramp), so the seam is soft but never reaches outside the mask.
    """
    src = np.asarray(source.convert("RGB"))  # (H, W, 3) uint8
    out = np.asarray(edited.convert("RGB"))
    inside = mask.astype(np.uint8)
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5)  # (H, W) px to the nearest outside pixel
    weight = np.clip(depth / max(feather_px, 1), 0.0, 1.0)[..., None]  # (H, W, 1)
    blended = src.astype(np.float32) * (1 - weight) + out.astype(np.float32) * weight
    result = np.where(weight > 0, np.clip(np.rint(blended), 0, 255).astype(np.uint8), src)
    return Image.fromarray(result)
