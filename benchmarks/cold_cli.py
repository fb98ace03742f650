"""Cold-process timings of ``dragdiff edit`` and of the embedded model (issue #18), for the GPU machine.

    python benchmarks/cold_cli.py save DIR                 # the random SD-1.5-architecture pipeline, fp16
    python benchmarks/cold_cli.py cli OUT.json -- ARGS...  # one `dragdiff edit ARGS` in a fresh process
    python benchmarks/cold_cli.py embedded OUT.json        # in-process edits with the embedded model

``cli`` starts ``python -m dragdiff edit ARGS`` as a new process (under ``-X importtime`` unless
``IMPORTTIME=0``) and records its wall time (interpreter
start, imports, model load and the edit) with the edit's own JSON record (phase timings, load seconds).
``embedded`` loads the embedded model once and times the demo's edit (``scripts/demo.sh``, preset
``dragdiffusion``) three times in one process: first, warm with an empty LoRA cache, and a repeat drag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_DRAGS = [
    ((47, 39), (67, 39)),
    ((24, 56), (44, 56)),
    ((71, 56), (91, 56)),
    ((33, 84), (53, 84)),
    ((62, 84), (82, 84)),
]
DEMO_PROMPT = "a red star on a white background"


def save(directory: str) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from edit_sd15 import build_pipeline

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    pipe = build_pipeline(False, device, torch.float16 if device.type == "cuda" else torch.float32)
    pipe.save_pretrained(directory, safe_serialization=True)
    print(f"saved {directory} in {time.perf_counter() - start:.1f} s")


def cli(out: str, args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        edited = Path(tmp) / "edited.png"
        trace = ["-X", "importtime"] if os.environ.get("IMPORTTIME", "1") == "1" else []
        cmd = [sys.executable, *trace, "-m", "dragdiff", "edit", *args, "-o", str(edited)]
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        end = time.time()
        record: dict[str, Any] = {
            "cmd": cmd[2 + len(trace) :],  # from `dragdiff`
            "importtime": bool(trace),
            "wall_s": end - start,
            "returncode": proc.returncode,
        }
        imports = [line.split("|") for line in proc.stderr.splitlines() if line.startswith("import time:")]
        top = [(int(cum), name.rstrip()) for _, cum, name in (i for i in imports if len(i) == 3)
               if cum.strip().isdigit() and not name.startswith("  ")]  # fmt: skip
        record["imports_s"] = sum(c for c, _ in top) / 1e6  # top-level imports, cumulative
        record["slowest_imports"] = [(n.strip(), c / 1e6) for c, n in sorted(top, reverse=True)[:12]]
        record["stderr_tail"] = "\n".join(
            line for line in proc.stderr.splitlines() if not line.startswith("import time:")
        )[-2000:]
        if proc.returncode == 0:
            edit = json.loads(edited.with_suffix(".json").read_text())
            record.update(timings=edit["timings"], load_s=edit["load_seconds"], device=edit["device"])
            # from the record written to the process's end: saving the outputs, interpreter shutdown
            record["after_record_s"] = end - edited.with_suffix(".json").stat().st_mtime
    Path(out).write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "stderr_tail"}))
    if proc.returncode:
        print(proc.stderr[-2000:])


def embedded(out: str) -> None:
    import numpy as np
    from PIL import Image

    from dragdiff.config import preset
    from dragdiff.diffusion.lora import LoraCache
    from dragdiff.editor import DragEditor
    from dragdiff.types import DragInstruction

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        editor = DragEditor(lora_cache_dir=Path(tmp) / "a")
        load = time.perf_counter() - start
        image = Image.open(ROOT / "examples" / "sample.png").convert("RGB")
        mask = np.asarray(Image.open(ROOT / "examples" / "sample_mask.png").convert("L")) > 127
        ins = DragInstruction.from_pairs(DEMO_DRAGS, mask=mask, prompt=DEMO_PROMPT)
        other = DragInstruction.from_pairs(
            [(h, (g[0], g[1] + 6)) for h, g in DEMO_DRAGS], mask=mask, prompt=DEMO_PROMPT
        )
        config = preset("dragdiffusion")
        rows: dict[str, Any] = {"load_s": load, "device": str(editor.device), "dtype": str(editor.dtype)}
        for name, instruction in (("first", ins), ("warm", ins), ("repeat", other)):
            if name == "warm":
                editor.lora_cache = LoraCache(Path(tmp) / "b")
                editor._inverted.clear()
            t0 = time.perf_counter()
            result = editor.edit(image, instruction, config)
            rows[name] = {
                "wall_s": time.perf_counter() - t0,
                **result.timings,
                "iterations": result.iterations,
            }
            print(name, rows[name], flush=True)
    Path(out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    verb, *rest = sys.argv[1:]
    if verb == "save":
        save(rest[0])
    elif verb == "cli":
        cli(rest[0], rest[2:] if rest[1:2] == ["--"] else rest[1:])
    elif verb == "embedded":
        embedded(rest[0])
    else:
        raise SystemExit(__doc__)
