"""Which pixels belong to the dragged content: the *support* of each drag (METHODS.md, "the mask question").

A DragBench mask (and ours) marks the area that **may change** — object, path and target together — not the
object. A warp must know which pixels move, so the support is segmented, seeded at the handles:

    foreground seeds   a small disc at every handle (the user clicked on the thing to move)
    background seeds   outside the editable mask, plus a thin band inside its border (a painted mask is
                       looser than the object); without a mask, outside the boxes grown around the
                       colour-similar region at each handle (one box per handle), each box grown again
                       while a textured object (fine detail, or one colour in separate patches) still
                       fills it to a side, then GrabCut once more started
                       from its own answer (a stripe of the object no longer decides the colour models)
    segmentation       OpenCV's GrabCut (colour GMMs + graph cut; Rother et al. 2004) between the two: it
                       keeps multi-coloured objects whole (a face with its sunglasses) where a colour flood
                       fill would tear them, and follows edges on textured backgrounds
    clean-up           keep only the connected parts that hold a handle; fill their holes
    split              a part holding several handles is cut along strong colour edges between them (two
                       touching objects, one handle each), by a watershed seeded at the handles, or where
                       their watershed regions never meet and each is walled in by the background's flood

The support is one label image: 0 = stays, k = moved with handle group k (the component that holds it), so
drags on different objects never mix. Pure numpy + OpenCV; image arrays are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

from dragdiff.types import InputError

SEED_RADIUS = 0.02  # foreground seed disc at each handle, as a fraction of the image's short side (≥ 1 px)
BORDER_BAND = 0.03  # band inside the mask's border taken as background, fraction of the short side
FLOOD_TOLERANCE = 28  # colour tolerance (per channel, 0–255) of the no-mask region estimate
GROW = 0.6  # the no-mask box: the colour region's box grown by this fraction of its size on each side
GROW_ROUNDS = 3  # ... and grown again at most this many times where the object still reaches its side
REFINE_MARGIN = 0.3  # the second GrabCut's probable background: this share of the object's size around it
COLLAPSED = 3  # ... and on every side when GrabCut kept no more than this many times the handle's seed disc
TOUCH = 0.1  # the object reaches a side of its box when it covers this share of the side's length
GRABCUT_ITERATIONS = 4  # 4 and 5 tie on the ground-truth suites (docs/methods.md); 4 is 20 % faster
GRABCUT_RING = 0.3  # the sure background GrabCut sees around the undecided area, × the short side
SPLIT_EDGE = 0.5  # a watershed line between two handles this strong (× the outline's edge) splits objects
COLOURS = 5  # colour clusters a part is cut into to find the objects it merged (k-means, Lab)
SHARED_COLOURS = 0.3  # ... but stays if this share of its colours is the held object's (a texture's patches)
PATTERN_PIECES = 3  # a part with one colour in this many separate pieces is patterned and never cut
TEXTURE_MIN_PX = 4 * COLOURS * 16  # a part smaller than this is too small to tell whether it is patterned
FINE_DETAIL = 30.0  # ... and textured where its median |Laplacian| (grey, 3×3) is above this: smooth
# gradients and flat colour measure 0–10; at 128 px the photo suite's backgrounds 10–18, its striped objects
# 110–145
DETAIL_MIN_PX = 32  # ... measured on at least this many pixels inside the part (a median needs no more)
WALLED = 0.8  # two handles' regions that never meet, each this much bordered by the outside's flood: split
SURROUND_SHARE = 0.2  # a part's colour covering this share of the picture outside it is the surroundings
CRUMB = 0.05  # a piece cut off from a part by dropping its neighbours, below this share of it, is dropped too
OPEN_SIDE = 0.3  # a region of a part with at least this share of its outline on the background is an object
SEGMENT_MAX_SIDE = 128  # longest side GrabCut runs at (the embedded model: its images at their own size)


def segment_support(image: np.ndarray, handles: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int32 labels: 0 = background, k ≥ 1 = the connected object part that handle group k holds.

    ``image`` (H, W, 3) uint8 RGB; ``handles`` (N, 2) float (x, y) pixels; ``mask`` (H, W) bool editable area
    or None. Handles in the same connected part share its label; ``handle_labels`` says which is whose.
    Images longer than ``SEGMENT_MAX_SIDE`` are segmented at that size (GrabCut's cost grows with the pixel
    count: 1.7 s at 512² against ≈ 20 ms at 128²) and the labels upsampled with smooth edges.
    """
    h, w = image.shape[:2]
    scale = SEGMENT_MAX_SIDE / max(h, w)
    if scale >= 1:
        return _segment(image, handles, mask)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    small_mask = None
    if mask is not None:
        small_mask = cv2.resize(mask.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0
    xy = (handles + 0.5) * np.array([sw / w, sh / h]) - 0.5
    labels = _segment(small, np.clip(xy, 0, [sw - 1, sh - 1]), small_mask)
    return _upsample_labels(labels, (h, w))


def _upsample_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Labels at a larger size: each part's indicator resized bilinearly, the strongest wins."""
    k = int(labels.max())
    stack = np.stack([(labels == i).astype(np.float32) for i in range(k + 1)])  # (K+1, h, w)
    big = np.stack([cv2.resize(s, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR) for s in stack])
    return big.argmax(axis=0).astype(np.int32)


def _segment(image: np.ndarray, handles: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``segment_support`` at the image's own size."""
    h, w = image.shape[:2]
    short = min(h, w)
    seeds = _disc_mask((h, w), handles, max(1.0, SEED_RADIUS * short))
    gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    if mask is not None:
        inside = mask.astype(bool)
        band = max(1, round(BORDER_BAND * short))
        core = cv2.erode(inside.astype(np.uint8), disc(band)) > 0
        gc[core] = cv2.GC_PR_FGD
        gc[~inside] = cv2.GC_BGD
    else:
        return _finish(image, handles, _free_foreground(image, handles, seeds))
    gc[seeds] = cv2.GC_FGD
    return _finish(image, handles, _grabcut(image, gc) | seeds)


def _finish(image: np.ndarray, handles: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """The foreground as held objects: its parts by handle, touching objects split, the unheld dropped."""
    return _drop_neighbours(image, _split_objects(image, _label_parts(fg, handles), handles), handles)


def _grabcut(image: np.ndarray, gc: np.ndarray) -> np.ndarray:
    """GrabCut from an initial label map; (H, W) bool foreground."""
    if not (gc == cv2.GC_BGD).any() and not (gc == cv2.GC_PR_BGD).any():
        return np.ones(gc.shape, bool)  # nothing is background: everything moves
    if not ((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD)).sum() >= 8:
        return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    # only the undecided pixels and a ring of sure background around them (its colours: the background model)
    ys, xs = np.nonzero(gc != cv2.GC_BGD)
    m = max(4, round(GRABCUT_RING * min(gc.shape)))
    y0, y1 = max(0, ys.min() - m), min(gc.shape[0], ys.max() + m + 1)
    x0, x1 = max(0, xs.min() - m), min(gc.shape[1], xs.max() + m + 1)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    labels = gc[y0:y1, x0:x1].copy()
    bgr = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation draws from OpenCV's global RNG: make it reproducible
    cv2.grabCut(bgr, labels, (0, 0, 0, 0), bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    out = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    out[y0:y1, x0:x1] = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out


def _free_foreground(image: np.ndarray, handles: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Without a mask: GrabCut inside the boxes grown around each handle's colour region, each box grown
    again (up to ``GROW_ROUNDS`` times) on every side its object still fills to the edge.

    A textured object's colour region at the handle is one stripe or patch of it, so the first box can be
    smaller than the object; GrabCut never labels foreground outside its box, and the object would come
    out cut along the box's straight sides.
    """
    h, w = image.shape[:2]
    boxes = _grown_boxes(image, handles, max(1.0, SEED_RADIUS * min(h, w)))
    seed_px = max(1, int(seeds.sum()) // len(boxes))
    collapsed = False  # GrabCut's first answer kept little more than the seed at some handle
    for round_ in range(GROW_ROUNDS + 1):
        gc = np.full((h, w), cv2.GC_BGD, np.uint8)
        for x0, y0, x1, y1 in boxes:
            gc[y0:y1, x0:x1] = cv2.GC_PR_FGD
        gc[seeds] = cv2.GC_FGD
        fg = _grabcut(image, gc) | seeds
        if round_ == 0:
            first = fg
        if round_ == GROW_ROUNDS:
            break
        _, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        held = handle_labels(comp, handles)
        parts = [comp == c for c in held]
        if round_ == 0:
            # the first box lay inside the object or along its edge (a handle on an anti-aliased outline
            # floods a one-pixel line): what the grown boxes find is the object, not background let in
            collapsed = any(
                c == 0 or p.sum() <= COLLAPSED * seed_px for c, p in zip(held, parts, strict=True)
            )
        grown = [_reach(image, box, part, seed_px) for box, part in zip(boxes, parts, strict=True)]
        if grown == boxes or any(_whole_picture(box, (h, w)) for box in grown):
            break  # a box over the whole picture leaves GrabCut no background: the texture is the picture's
        boxes = grown
    if fg is not first and not collapsed and not _textured(image, fg & ~first):
        fg = first  # what the bigger boxes added is plain: background let in (a smooth gradient), not object
    return _refine(image, fg, seeds)


def _whole_picture(box: tuple[int, int, int, int], hw: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = box
    return x0 == 0 and y0 == 0 and x1 == hw[1] and y1 == hw[0]


def _refine(image: np.ndarray, fg: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """GrabCut again, started from its own answer: the first run's colour models start from the whole box,
    mostly background, so the object's darker colours can go to the background model (an object cut in half
    along a stripe); started from the found object, probably-foreground there and probably-background in a
    margin of ``REFINE_MARGIN`` × its size around it, the models start right."""
    ys, xs = np.nonzero(fg)
    h, w = fg.shape
    side = max(np.ptp(ys), np.ptp(xs))
    m = max(2, round(REFINE_MARGIN * side))
    # square around the found part: a part that is one stripe of the object is thin across the stripes
    my, mx = m + (side - np.ptp(ys)) // 2, m + (side - np.ptp(xs)) // 2
    gc = np.full((h, w), cv2.GC_BGD, np.uint8)
    gc[max(0, ys.min() - my) : ys.max() + my + 1, max(0, xs.min() - mx) : xs.max() + mx + 1] = cv2.GC_PR_BGD
    gc[fg] = cv2.GC_PR_FGD
    gc[seeds] = cv2.GC_FGD
    return _grabcut(image, gc) | seeds


def _reach(
    image: np.ndarray, box: tuple[int, int, int, int], part: np.ndarray, seed_px: int
) -> tuple[int, int, int, int]:
    """``box`` grown by ``GROW`` of its size on each side (not the image's edge) that ``part`` fills for at
    least ``TOUCH`` of its length; on every side if ``part`` is no more than ``COLLAPSED`` × the seed (the
    box lay inside the object, so its ring of "background" was the object and GrabCut kept only the seed)."""
    x0, y0, x1, y1 = box
    h, w = part.shape
    gx, gy = max(2, round(GROW * (x1 - x0))), max(2, round(GROW * (y1 - y0)))
    side_x, side_y = TOUCH * (y1 - y0), TOUCH * (x1 - x0)
    if part.sum() <= COLLAPSED * seed_px:
        side_x = side_y = 0  # every side
    elif part.sum() >= TEXTURE_MIN_PX and not _textured(image, part):
        return box  # a plain part reaching its box's side is another object beside it, not more of it
    # (a part too small to judge is grown: ``_free_foreground`` keeps what that adds only if it is textured)
    if x0 > 0 and part[y0:y1, x0].sum() >= side_x:
        x0 = max(0, x0 - gx)
    if x1 < w and part[y0:y1, x1 - 1].sum() >= side_x:
        x1 = min(w, x1 + gx)
    if y0 > 0 and part[y0, x0:x1].sum() >= side_y:
        y0 = max(0, y0 - gy)
    if y1 < h and part[y1 - 1, x0:x1].sum() >= side_y:
        y1 = min(h, y1 + gy)
    return (x0, y0, x1, y1)


def _textured(image: np.ndarray, part: np.ndarray) -> bool:
    """Whether ``part`` is textured: fine detail inside it (median |Laplacian| above ``FINE_DETAIL``: stripes
    or grain too thin to be colour regions at the size segmentation runs at) or patterned (``_patterned``:
    one colour in several separate pieces)."""
    inner = cv2.erode(part.astype(np.uint8), disc(1)) > 0  # not the outline: its edge is no texture
    if inner.sum() >= DETAIL_MIN_PX:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
        if float(np.median(np.abs(cv2.Laplacian(grey, cv2.CV_32F, ksize=3))[inner])) > FINE_DETAIL:
            return True
    if part.sum() < TEXTURE_MIN_PX:
        return False
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    markers, cluster = _colour_regions(lab, part)
    n = int(markers.max())
    return n >= 2 and _patterned(markers, cluster, n)


def _grown_boxes(image: np.ndarray, handles: np.ndarray, radius: float) -> list[tuple[int, int, int, int]]:
    """Without a mask: per handle, the box of the colour-similar region it sits in, grown on each side.

    One box per handle, not one around all of them: handles on objects far apart would otherwise make one
    box over most of the picture, and GrabCut would call all of it foreground.
    """
    h, w = image.shape[:2]
    tol = (FLOOD_TOLERANCE,) * 3
    boxes = []
    for x, y in np.round(handles).astype(int):
        seed = _disc_mask((h, w), np.array([[x, y]], np.float64), radius)
        ff = np.zeros((h + 2, w + 2), np.uint8)
        flags = 4 | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE | (255 << 8)
        cv2.floodFill(np.array(image), ff, (int(x), int(y)), (0, 0, 0), tol, tol, flags)
        region = (ff[1:-1, 1:-1] > 0) | seed
        if region.mean() > 0.5:  # the flood leaked into the background: fall back to the seed's box
            region = seed
        ys, xs = np.nonzero(region)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gx, gy = max(2, round(GROW * (x1 - x0))), max(2, round(GROW * (y1 - y0)))
        boxes.append((max(0, x0 - gx), max(0, y0 - gy), min(w, x1 + gx), min(h, y1 + gy)))
    return boxes


def _label_parts(fg: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Connected parts of ``fg`` that hold a handle, holes filled, relabelled 1..K."""
    n, comp = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
    keep: dict[int, int] = {}
    for c in handle_labels(comp, handles).tolist():
        if c > 0 and c not in keep:
            keep[c] = len(keep) + 1
    labels = np.zeros(fg.shape, np.int32)
    for c, k in keep.items():
        labels[_fill_holes(comp == c)] = k
    return labels


def _split_objects(image: np.ndarray, labels: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Parts that hold several handles, split where the handles sit on different objects that touch.

    GrabCut separates foreground from background, not one object from the next: two touching objects with a
    handle each come out as one part, and one deformation fitted to both handles tears or balloons them. Each
    handle's disc seeds a watershed over the part (OpenCV, on the image's own colour edges); two handles stay
    together if the line between their regions runs through the part's smooth inside (``_line_strength``
    below ``SPLIT_EDGE`` of the outline's mean gradient), and are split if it follows an edge as strong as the
    outline (the border between two objects). Where the regions never meet (the basin flooding in from
    outside the part came between them) the handles stay together, unless both regions are walled in by that
    basin (at least ``WALLED`` of their rims lie on it, not on other handles' regions): two objects that
    GrabCut joined where they touch, each bordered by background only. Pixels keep their part otherwise.
    """
    out = labels.copy()
    grad = _gradient(image)
    for k in range(1, int(labels.max()) + 1):
        part = labels == k
        idx = [i for i, g in enumerate(handle_labels(labels, handles)) if g == k]
        if len(idx) < 2:
            continue
        markers, edge = _handle_watershed(image, grad, part, handles[idx])
        parent = list(range(len(idx)))  # union-find over the part's handles
        ridge = (markers == -1) & part
        flood = markers == len(idx) + 1  # outside the part, and what the outside's basin took of it
        near = [cv2.dilate((markers == n + 1).astype(np.uint8), disc(1)) > 0 for n in range(len(idx))]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                line = ridge & near[a] & near[b]
                if not line.any():
                    # no ridge: the outside's basin came between the two regions. One object (a face's parts
                    # around its sunglasses) unless both are walled in by it (two objects GrabCut joined)
                    walls = (_walled(markers == n + 1, flood, markers == -1) for n in (a, b))
                    if min(walls) < WALLED:
                        parent[_root(parent, b)] = _root(parent, a)
                elif _line_strength(grad, line) < SPLIT_EDGE * edge:
                    parent[_root(parent, b)] = _root(parent, a)
        groups = sorted({_root(parent, a) for a in range(len(idx))})
        if len(groups) < 2:
            continue
        for n in range(len(idx)):  # each handle's region (with the ridge beside it) under its group's root
            region = (markers == n + 1) | (ridge & near[n])
            out[region & part & (out == k)] = -1 - _root(parent, n)
        for r, g in enumerate(groups):
            out[out == -1 - g] = k if r == 0 else out.max() + 1
        out[(out < 0)] = k
    return _relabel(out, handles)


def _handle_watershed(
    image: np.ndarray, grad: np.ndarray, part: np.ndarray, handles: np.ndarray
) -> tuple[np.ndarray, float]:
    """A watershed of ``part`` seeded at each of its ``handles`` (markers 1..N, the outside N + 1, ridges
    −1) and the mean gradient along the part's outline (what a line between two handles is compared with)."""
    markers = np.zeros(part.shape, np.int32)
    markers[~part] = len(handles) + 1  # outside the part: its own basin, so the watershed stays inside
    for n in range(len(handles)):
        markers[_disc_mask(part.shape, handles[n : n + 1], 1.0) & part] = n + 1
    cv2.watershed(np.ascontiguousarray(image[..., ::-1]), markers)
    outline = cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_GRADIENT, disc(1)) > 0
    return markers, float(grad[outline].mean()) if outline.any() else 0.0


def _line_strength(grad: np.ndarray, line: np.ndarray) -> float:
    """How strong an edge a watershed line follows: the lower quartile of the gradient along it.

    The border between two touching objects is an edge along nearly all of the line; a line through one
    object's inside crosses its inner edges (a ring's hole, which the part fills, a pattern's stripes) only in
    places, and those few strong pixels would dominate a mean (GT suites: lines inside one object ≤ 0.2 of
    the outline's gradient by this measure, borders between two objects ≥ 0.57; docs/methods.md).
    """
    return float(np.percentile(grad[line], 25))


def _drop_neighbours(image: np.ndarray, labels: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Each part without the objects it merged that no handle holds: a drag moves what the handle is on.

    GrabCut calls everything that is not background foreground, so an object touching the dragged one comes
    along (a drag across or out from behind another object). The part is cut into colour regions (k-means in
    Lab, then a watershed on the image from the clusters' connected pieces); regions whose shared border is
    no stronger than ``SPLIT_EDGE`` × the part's outline are one object (shading, soft highlights). Of the
    objects no handle is on, those with at least ``OPEN_SIDE`` of their outline on the background are
    neighbours and stay where they are; enclosed ones (a logo, an eye, an inner ring) move with the part. A
    textured object's patches share its colour clusters (photographs: held-out regions share 0.4–0.9 of the
    held one's, another object of the project's scenes under 0.1), so a region that shares ``SHARED_COLOURS``
    is the same object and stays in the part. Last, what the outside's basin flooded at the part's rim where
    no edge divides it from the outside (``_spill``) and the specks all this cut off from the part
    (``_crumbs``) are dropped.
    """
    out = labels.copy()
    grad = _gradient(image)
    seeds = _disc_mask(labels.shape, handles, max(1.0, SEED_RADIUS * min(labels.shape)))  # always held
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    for k in range(1, int(labels.max()) + 1):
        part = labels == k
        if part.sum() < TEXTURE_MIN_PX:
            continue
        markers, cluster = _colour_regions(lab, part)
        n = int(markers.max())
        if n < 2:
            continue
        if _patterned(markers, cluster, n) and _patterned(
            markers, cluster, n, _surrounding_colours(lab, part, cluster)
        ):
            continue
        markers[~part] = n + 1  # outside the part: one basin of its own
        cv2.watershed(np.ascontiguousarray(image[..., ::-1]), markers)
        outline = cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_GRADIENT, disc(1)) > 0
        edge = float(grad[outline].mean()) if outline.any() else 0.0
        near = [cv2.dilate((markers == r + 1).astype(np.uint8), disc(1)) > 0 for r in range(n + 1)]
        ridge = markers == -1
        parent = list(range(n))
        for a in range(n):
            for b in range(a + 1, n):
                line = ridge & near[a] & near[b] & part
                if line.sum() >= 2 and float(grad[line].mean()) < SPLIT_EDGE * edge:
                    parent[_root(parent, b)] = _root(parent, a)
        held = set()
        for x, y in np.round(handles).astype(int):
            y, x = min(max(y, 0), part.shape[0] - 1), min(max(x, 0), part.shape[1] - 1)
            if part[y, x]:
                r = int(markers[y, x])
                if r < 1 or r > n:  # on the ridge: the region beside it that the pixel's colour is closest to
                    r = _nearest_region(lab, markers, near, n, (y, x))
                if r:
                    held.add(_root(parent, r - 1))
        if not held:
            continue
        kept = np.zeros(part.shape, bool)  # the held objects' regions, grown over the ridge beside them
        for r in range(n):
            if _root(parent, r) in held:
                kept |= near[r]
        palette = _palette(cluster[kept & part])
        # an unheld object open to the background is a neighbour; so is one that becomes open once the
        # neighbours around it are gone (a block of a background's checks); one the held object encloses stays
        others = {}  # the unheld objects with colours of their own: (region, rim)
        for g in sorted({_root(parent, r) for r in range(n)} - held):
            region = np.isin(markers, [r + 1 for r in range(n) if _root(parent, r) == g])
            # a texture's patches share the held object's colours; another object has its own
            if float(np.minimum(_palette(cluster[region & part]), palette).sum()) < SHARED_COLOURS:
                others[g] = (region, _rim(region, ridge))
        inside, dropping = part.copy(), True
        while dropping:
            dropping = False
            for g, (region, rim) in list(others.items()):
                if rim.any() and float((rim & ~inside).sum()) >= OPEN_SIDE * float(rim.sum()):
                    beside = cv2.dilate(region.astype(np.uint8), disc(1)) > 0
                    drop = (region | (ridge & beside)) & ~kept
                    out[drop] = 0
                    inside &= ~drop
                    del others[g]
                    dropping = True
        out[_spill(markers, part, kept | seeds, ridge, n, grad, outline, SPLIT_EDGE * edge)] = 0
        out[_crumbs(out == k, handles)] = 0
    return _relabel(out, handles)


def _crumbs(part: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Specks a part's dropped neighbours left cut off from it: pieces without a handle smaller than
    ``CRUMB`` of the part (the anti-aliased corners of a background's checks). A larger cut-off piece stays:
    the far side of the object seen past a narrow thing in front of it."""
    n, comp = cv2.connectedComponents(part.astype(np.uint8), connectivity=8)
    if n <= 2:
        return np.zeros(part.shape, bool)
    held = set(handle_labels(comp, handles).tolist())
    sizes = np.bincount(comp.ravel(), minlength=n)
    small = [i for i in range(1, n) if i not in held and sizes[i] < CRUMB * part.sum()]
    return np.isin(comp, small)


def _nearest_region(
    lab: np.ndarray, markers: np.ndarray, near: list[np.ndarray], n: int, yx: tuple[int, int]
) -> int:
    """The region (1..n) beside ridge pixel ``yx`` whose mean colour is closest to the pixel's, 0 if none: a
    handle on the anti-aliased outline between two objects is on the one that covers most of its pixel."""
    beside = [q for q in range(n) if near[q][yx]]
    if not beside:
        return 0
    dist = [float(np.linalg.norm(lab[markers == q + 1].mean(axis=0) - lab[yx])) for q in beside]
    return beside[int(np.argmin(dist))] + 1


def _spill(
    markers: np.ndarray,
    part: np.ndarray,
    kept: np.ndarray,
    ridge: np.ndarray,
    n: int,
    grad: np.ndarray,
    outline: np.ndarray,
    weak: float,
) -> np.ndarray:
    """The part's pixels the outside's basin (watershed marker ``n + 1``) flooded, where they make a piece
    thicker than an outline that meets the outside without an edge (the part's outline beside it weaker than
    ``weak``): background GrabCut took along, or a corner of the object in front (a star's arm over the
    dragged square) too small for a colour region of its own. Thin strips along the outline (its
    anti-aliased edge), pieces behind an edge (a highlight on the object's rim), pieces the part encloses and
    what ``kept`` holds (the held regions, the handles' discs) stay."""
    flooded = (markers == n + 1) & part & ~kept
    core = cv2.morphologyEx(flooded.astype(np.uint8), cv2.MORPH_OPEN, disc(1))
    if not core.any():
        return np.zeros(part.shape, bool)
    pieces, comp = cv2.connectedComponents(core, connectivity=8)
    out = np.zeros(part.shape, bool)
    for i in range(1, pieces):
        grown = cv2.dilate((comp == i).astype(np.uint8), disc(1)) > 0
        border = cv2.dilate(grown.astype(np.uint8), disc(1)).astype(bool) & outline & ~part
        if border.any() and float(grad[border].mean()) < weak:
            out |= grown & (flooded | ridge) & part & ~kept
    return out


def _colour_regions(lab: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) int32 watershed markers 1..M: the connected pieces of the part's colour clusters (k-means),
    each shrunk by a pixel, that are large enough to seed a region, 0 elsewhere; and each pixel's cluster
    (-1 outside the part)."""
    pixels = lab[part]
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    cv2.setRNGSeed(0)
    k = min(COLOURS, len(pixels))
    _, assign, _ = cv2.kmeans(pixels, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    cluster = np.full(part.shape, -1, np.int32)
    cluster[part] = assign.ravel()
    markers = np.zeros(part.shape, np.int32)
    least = max(6, int(0.01 * part.sum()))
    for c in range(k):
        core = cv2.erode((cluster == c).astype(np.uint8), disc(1))
        m, comp = cv2.connectedComponents(core, connectivity=4)
        for i in range(1, m):
            piece = comp == i
            if piece.sum() >= least:
                markers[piece] = markers.max() + 1
    return markers, cluster


def _patterned(
    markers: np.ndarray, cluster: np.ndarray, n: int, ignore: frozenset[int] = frozenset()
) -> bool:
    """Whether one colour of the part lies in ``PATTERN_PIECES`` or more separate pieces (a texture, a print,
    fur): its colour regions are then patches of one object, not objects. Colours in ``ignore`` (the
    surroundings', ``_surrounding_colours``) do not count: their pieces may be background taken along."""
    first = np.zeros(n + 1, np.int64)
    ids = markers.ravel()
    first[ids] = cluster.ravel()  # each marker's cluster (all its pixels share it)
    counts = np.bincount(first[1:], minlength=COLOURS)
    counts[list(ignore)] = 0
    return int(counts.max()) >= PATTERN_PIECES


def _surrounding_colours(lab: np.ndarray, part: np.ndarray, cluster: np.ndarray) -> frozenset[int]:
    """The part's colour clusters that also cover ``SURROUND_SHARE`` of the picture outside it: a pattern of
    those colours continues outside the part (a checkerboard, waves), so it is the background's.

    An outside pixel belongs to its nearest cluster centre when it lies as close to it as 90 % of that
    cluster's own pixels do."""
    if part.all():
        return frozenset()
    ids = [c for c in range(COLOURS) if (cluster == c).any()]
    members = [lab[cluster == c] for c in ids]  # (P_c, 3) each
    centres = np.stack([m.mean(axis=0) for m in members])  # (K, 3)
    reach = [float(np.percentile(np.linalg.norm(m - centres[i], axis=1), 90)) for i, m in enumerate(members)]
    around = lab[~part]  # (B, 3)
    d = np.linalg.norm(around[:, None, :] - centres[None], axis=2)  # (B, K)
    nearest = d.argmin(axis=1)
    close = d[np.arange(len(around)), nearest] <= np.maximum(np.array(reach)[nearest], 3.0)
    share = np.bincount(nearest[close], minlength=len(ids)) / len(around)
    return frozenset(c for i, c in enumerate(ids) if share[i] >= SURROUND_SHARE)


def _palette(clusters: np.ndarray) -> np.ndarray:
    """The share of each colour cluster among ``clusters`` (ids 0..COLOURS-1; -1 ignored)."""
    counts = np.bincount(clusters[clusters >= 0], minlength=COLOURS).astype(np.float64)
    return counts / max(1.0, counts.sum())


def _rim(region: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """A watershed region's 2-px rim, its ridge pixels left out."""
    return (cv2.dilate(region.astype(np.uint8), disc(2)) > 0) & ~region & ~ridge


def _walled(region: np.ndarray, flood: np.ndarray, ridge: np.ndarray) -> float:
    """Share of a watershed region's rim (``_rim``) that ``flood`` holds."""
    rim = _rim(region, ridge)
    return float((rim & flood).sum()) / max(1, int(rim.sum()))


def _root(parent: list[int], a: int) -> int:
    while parent[a] != a:
        a = parent[a]
    return a


def _gradient(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 colour gradient magnitude (Sobel, the largest over the channels)."""
    f = image.astype(np.float32)
    gx, gy = cv2.Sobel(f, cv2.CV_32F, 1, 0), cv2.Sobel(f, cv2.CV_32F, 0, 1)
    return np.sqrt(gx**2 + gy**2).max(axis=2)


def _relabel(labels: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..K in the order of the first handle on each (0 stays 0)."""
    out = np.zeros_like(labels)
    seen: dict[int, int] = {}
    for g in handle_labels(labels, handles):
        if g > 0 and int(g) not in seen:
            seen[int(g)] = len(seen) + 1
    for old, new in seen.items():
        out[labels == old] = new
    return out


def _fill_holes(part: np.ndarray) -> np.ndarray:
    """A part with its enclosed holes filled (a ring stays a ring only if its hole touches the border)."""
    h, w = part.shape
    ff = np.zeros((h + 4, w + 4), np.uint8)
    padded = np.pad((~part).astype(np.uint8), 1, constant_values=1)
    cv2.floodFill(padded, ff, (0, 0), 2)
    return padded[1:-1, 1:-1] != 2


def handle_labels(labels: np.ndarray, handles: np.ndarray) -> np.ndarray:
    """(N,) label of the part under each handle (0 = none)."""
    h, w = labels.shape
    xy = np.round(handles).astype(int)
    return labels[np.clip(xy[:, 1], 0, h - 1), np.clip(xy[:, 0], 0, w - 1)]


def check_handles_editable(handles: np.ndarray, mask: np.ndarray | None) -> None:
    """A handle outside the editable mask can move nothing: a one-line InputError naming it."""
    if mask is None:
        return
    h, w = mask.shape
    for i, (x, y) in enumerate(np.round(handles).astype(int)):
        if not mask[min(max(y, 0), h - 1), min(max(x, 0), w - 1)]:
            raise InputError(
                f"handle {i + 1} at ({handles[i, 0]:g}, {handles[i, 1]:g}) is outside the editable mask: "
                "the content there may not change, so it cannot be dragged (paint the mask over it)"
            )


def nearest_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N,) the Euclidean distance from each of ``points`` (N, C) to the nearest of ``others`` (M, C)."""
    return np.sqrt(((points[:, None, :] - others[None, :, :]) ** 2).sum(-1)).min(axis=1)


def disc(radius: int) -> np.ndarray:
    """An elliptic structuring element of ``radius`` px (OpenCV), for dilating and eroding masks."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _disc_mask(hw: tuple[int, int], points: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    out = np.zeros(hw, bool)
    for x, y in points:
        out |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return out
