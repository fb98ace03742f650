"""The fast path alone, about 90 s on an H100: first edit, warm edit, repeat drag (device call 7, session 2).

    python benchmarks/speed_quick.py            # prints one line per edit: seconds, phase timings, peak GiB

The 512² SD-1.5-architecture random-weight pipeline of ``edit_sd15.py``, the ``dragdiffusion`` preset (fast
path) with the stop rule off; "repeat" drags the same image to another target (LoRA and z_t cached). The full
faithful-vs-fast comparison is ``speed.py``; this is what fitted in the device time that was left.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_sd15 import build_pipeline, sync, test_picture  # noqa: E402

from dragdiff.config import preset  # noqa: E402
from dragdiff.editor import DragEditor  # noqa: E402
from dragdiff.types import DragInstruction  # noqa: E402


def main() -> None:
    dev = torch.device("cuda")
    pipe = build_pipeline(False, dev, torch.float16)
    image, ins = test_picture(512)
    pairs = [((p.x, p.y), (t.x, t.y + 20)) for p, t in zip(ins.handles, ins.targets, strict=True)]
    other = DragInstruction.from_pairs(pairs, mask=ins.mask, prompt=ins.prompt)
    editor = DragEditor(pipe, lora_cache_dir=tempfile.mkdtemp())
    cfg = preset("dragdiffusion").override(**{"drag.stop_distance": 0.0})
    for name, instruction, seed in (("first", ins, 1), ("fast-warm", ins, 3), ("repeat", other, 3)):
        torch.cuda.reset_peak_memory_stats()
        sync(dev)
        t = time.perf_counter()
        r = editor.edit(image, instruction, cfg.override(seed=seed))
        sync(dev)
        timings = {k: round(v, 2) for k, v in r.timings.items()}
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(name, round(time.perf_counter() - t, 2), timings, r.iterations, "peak GiB", peak, flush=True)


if __name__ == "__main__":
    main()
