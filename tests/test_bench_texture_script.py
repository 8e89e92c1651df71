"""scripts/bench_texture.py on the shipped demo actor at a tiny size: both tables the docs quote (the
bone-texture lookup, and the raycast with one-hot bone channels vs primitive groups) keep running."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_texture_runs_on_the_demo_actor():
    from engine.neural.render import kernels

    if not (kernels.available("cpu") and kernels.texture_available("cpu")):
        pytest.skip(kernels.unavailable_reason() or "no bone-texture kernel")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_texture.py"), "--configs", "2x32",
                           "--reps", "1", "--threads", "1"], capture_output=True, text=True, timeout=300,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("2x32 ")]
    assert len(rows) == 2, proc.stdout  # one per table
    lookup, weights = rows
    ratio = r"([0-9.]+)x"  # in the columns after the configuration's own "2x32"
    assert len(re.findall(ratio, lookup.split("|", 1)[1])) == 4, lookup
    ratios = [float(x) for x in re.findall(ratio, weights.split("|", 1)[1])]
    assert len(ratios) == 2 and all(r > 0 for r in ratios), weights
    # the grouped weights are the one-hot channels: the same numbers
    assert float(weights.split("|")[-1]) < 1e-5, weights
