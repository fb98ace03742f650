"""Pure tensor maths of DragDiffusion, importing torch only.

Points, patches, bilinear resize, motion loss, tracking, masks and DDIM steps; see each module for the paper
notation.
"""

from dragdiff.ops.ddim import ddim_transfer, predict_x0_eps
from dragdiff.ops.masks import mask_term, resize_mask
from dragdiff.ops.motion import motion_loss, reached
from dragdiff.ops.patches import sample_patches
from dragdiff.ops.points import grid_to_image, image_to_grid, work_size
from dragdiff.ops.resize import bilinear_matrix, resize_bilinear
from dragdiff.ops.tracking import features_at, track_points

__all__ = [
    "bilinear_matrix",
    "ddim_transfer",
    "features_at",
    "grid_to_image",
    "image_to_grid",
    "mask_term",
    "motion_loss",
    "predict_x0_eps",
    "reached",
    "resize_bilinear",
    "resize_mask",
    "sample_patches",
    "track_points",
    "work_size",
]
