"""A dense displacement field from handle → target pairs: moving-least-squares similarity deformation.

Each pixel v of a moved part gets its own similarity transform (rotation + uniform scale + translation) fitted
to that part's handles p_i → targets q_i with weights w_i(v) = 1 / |p_i − v|^(2α) (Schaefer, McPhail & Warren,
"Image deformation using moving least squares", SIGGRAPH 2006, §2.2):

    p* = Σ w_i p_i / Σ w_i,  q* likewise,  p̂_i = p_i − p*,  q̂_i = q_i − q*,  μ = Σ w_i |p̂_i|²
    f(v) = R(v) (v − p*) + q*,   R = [[a, −b], [b, a]],  a = Σ w_i p̂_i·q̂_i / μ,  b = Σ w_i p̂_i × q̂_i / μ

One handle: a translation. Two: one affine map exact at both pairs, a 1-D stretch along their line or a
similarity (``stretches`` decides). Three or more: MLS, smooth and as-similar-as-possible between them;
every handle lands exactly on its target. The assignment is explicit:
a pixel is moved only by the handles of its own part (``support.segment_support`` labels), so drags on two
objects never average each other away, and the field is zero on everything that stays. The backward map
(target pixel → source pixel) is the same deformation with the roles of handles and targets swapped: exact for
one or two handles, a close approximation for more, and free of cracks either way.
"""

from __future__ import annotations

import cv2
import numpy as np

from dragdiff.types import InputError

ALPHA = 1.0  # MLS weight exponent (the paper's α = 1)
_EPS = 1e-6
STRETCH_AXIS_DEG = 15.0  # two handles pulled along a part's own axis (± this) stretch it along that axis
ELONGATED = 1.5  # second-moment eigenvalue ratio above which a part has an axis of its own
FOLD_JACOBIAN = 0.05  # below this local area ratio (det of the map's Jacobian) the field folds over itself


def mls_similarity(points: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Map ``points`` (M, 2) by the MLS similarity deformation taking ``src`` (N, 2) to ``dst`` (N, 2)."""
    pts = points.astype(np.float64)
    if len(src) == 1:
        return pts + (dst[0] - src[0])
    d2 = ((pts[:, None, :] - src[None, :, :]) ** 2).sum(-1)  # (M, N)
    w = 1.0 / (d2**ALPHA + _EPS)
    ws = w.sum(1, keepdims=True)  # (M, 1)
    p_star = (w @ src) / ws  # (M, 2)
    q_star = (w @ dst) / ws
    ph = src[None] - p_star[:, None]  # (M, N, 2)
    qh = dst[None] - q_star[:, None]
    mu = (w * (ph**2).sum(-1)).sum(1)  # (M,)
    a = (w * (ph * qh).sum(-1)).sum(1)
    b = (w * (ph[..., 0] * qh[..., 1] - ph[..., 1] * qh[..., 0])).sum(1)
    degenerate = mu < _EPS  # all handles at one point: a translation
    a = np.where(degenerate, 1.0, a / np.maximum(mu, _EPS))
    b = np.where(degenerate, 0.0, b / np.maximum(mu, _EPS))
    v = pts - p_star  # (M, 2)
    out = np.stack([a * v[:, 0] - b * v[:, 1], b * v[:, 0] + a * v[:, 1]], axis=1)
    return out + q_star


def two_point_affine(src: np.ndarray, dst: np.ndarray, stretch: bool) -> np.ndarray:
    """(2, 3) affine taking the two ``src`` points to the two ``dst`` points.

    ``stretch=False``: the similarity (rotation θ + uniform scale s). ``stretch=True``: the same rotation, but
    the scale s only along the handles' axis u, none across it — a pull that lengthens, as a user stretching
    an object along one of its axes means. Both are exact at the two points.
    """
    dp, dq = src[1] - src[0], dst[1] - dst[0]
    lp = max(float(np.hypot(*dp)), _EPS)
    s = float(np.hypot(*dq)) / lp
    theta = float(np.arctan2(dq[1], dq[0]) - np.arctan2(dp[1], dp[0]))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if stretch:
        u = dp / lp
        scale = np.eye(2) + (s - 1) * np.outer(u, u)  # s along u, 1 across
    else:
        scale = s * np.eye(2)
    a = rot @ scale
    b = (dst[0] + dst[1]) / 2 - a @ ((src[0] + src[1]) / 2)
    return np.concatenate([a, b[:, None]], axis=1)


def stretches(part: np.ndarray, src: np.ndarray, tolerance_deg: float = STRETCH_AXIS_DEG) -> bool:
    """Whether two handles pulled apart (or together) stretch the part along their line, or scale it.

    The convention of an editor's transform box: a pull along one of the part's axes (± ``tolerance_deg``)
    is an edge handle and stretches along that axis; a pull across them is a corner handle and scales
    uniformly. The axes are the part's own where it is elongated (second moments, eigenvalue ratio >
    ``ELONGATED``), else the picture's (a disc or a square has no axis its outline shows). Measured on
    120-case stretch/resize suites (seeds 7, 8, `docs/methods.md`): +1.2 / +0.4 dB PSNR_in over stretching
    every part without an axis of its own.
    """
    ys, xs = np.nonzero(part)
    if len(xs) < 5:
        return True
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    evals, evecs = np.linalg.eigh(cov)  # ascending
    if evals[1] < ELONGATED * max(evals[0], _EPS):
        major = 0.0  # no axis of its own: the picture's
    else:
        major = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1]))
    d = src[1] - src[0]
    off = abs((np.degrees(np.arctan2(d[1], d[0])) - major) % 90.0)
    return min(off, 90.0 - off) <= tolerance_deg


class PartMap:
    """The deformation of one moved part: forward (source -> output) and backward (output -> source) maps."""

    def __init__(self, part: np.ndarray, src: np.ndarray, dst: np.ndarray, two_point: str = "auto") -> None:
        self.src, self.dst = src, dst
        self.affine: np.ndarray | None = None
        if len(src) == 2:
            stretch = two_point == "stretch" or (two_point == "auto" and stretches(part, src))
            self.affine = two_point_affine(src, dst, stretch)
        self.kind = "affine" if self.affine is not None else ("translation" if len(src) == 1 else "mls")

    def forward(self, pts: np.ndarray) -> np.ndarray:
        if self.affine is not None:
            return pts @ self.affine[:, :2].T + self.affine[:, 2]
        return mls_similarity(pts, self.src, self.dst)

    def backward(self, pts: np.ndarray) -> np.ndarray:
        if self.affine is not None:
            inv = cv2.invertAffineTransform(self.affine)
            return pts @ inv[:, :2].T + inv[:, 2]
        return mls_similarity(pts, self.dst, self.src)  # the inverse: targets -> handles


def part_maps(
    labels: np.ndarray, handles: np.ndarray, targets: np.ndarray, groups: np.ndarray, two_point: str = "auto"
) -> dict[int, PartMap]:
    """One PartMap per label that holds a handle, fitted to that part's handles only."""
    return {
        int(k): PartMap(labels == k, handles[groups == k], targets[groups == k], two_point)
        for k in np.unique(groups[groups > 0])
    }


def backward_maps(labels: np.ndarray, maps: dict[int, PartMap]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every output pixel q: (map_x, map_y) (H, W) float32 = the source pixel f⁻¹(q) and (H, W) int32 the
    label of the part that lands on q (0 = none). Parts are drawn in label order (a later one on top)."""
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx.copy(), yy.copy()
    landed = np.zeros((h, w), np.int32)
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)  # (H·W, 2) (x, y)
    for k, part in maps.items():
        src = part.backward(grid)
        sx, sy = src[:, 0].reshape(h, w), src[:, 1].reshape(h, w)
        ix, iy = np.round(sx).astype(int), np.round(sy).astype(int)
        inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
        hit = np.zeros((h, w), bool)
        hit[inside] = labels[iy[inside], ix[inside]] == k
        map_x[hit], map_y[hit] = sx[hit].astype(np.float32), sy[hit].astype(np.float32)
        landed[hit] = k
    return map_x, map_y, landed


def check_no_fold(labels: np.ndarray, maps: dict[int, PartMap], groups: np.ndarray) -> None:
    """An InputError if the forward field folds a part over itself (handles that cross or collapse)."""
    for k, part in maps.items():
        if part.kind == "translation":
            continue
        ys, xs = np.nonzero(labels == k)
        step = max(1, len(xs) // 4000)  # a sample of the part's pixels is enough to see a fold
        pts = np.stack([xs[::step], ys[::step]], axis=1).astype(np.float64)
        f = part.forward(pts)
        fx = part.forward(pts + [1.0, 0.0]) - f  # ∂f/∂x
        fy = part.forward(pts + [0.0, 1.0]) - f  # ∂f/∂y
        det = fx[:, 0] * fy[:, 1] - fx[:, 1] * fy[:, 0]
        if det.min() < FOLD_JACOBIAN:
            idx = np.nonzero(groups == k)[0] + 1
            raise InputError(
                f"the drags of handles {', '.join(map(str, idx))} fold the content over itself "
                f"(the moved shape would turn inside out, local area ratio {det.min():.2f}): "
                "keep handles in the same order as their targets, or drag them in separate edits"
            )
