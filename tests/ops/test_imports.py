from __future__ import annotations

import subprocess
import sys


def test_ops_imports_torch_but_not_diffusers_or_gradio():
    code = (
        "import sys, dragdiff.ops; "
        "bad = [m for m in ('diffusers', 'gradio', 'transformers', 'PIL') if m in sys.modules]; "
        "print(*bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
