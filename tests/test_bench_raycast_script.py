"""scripts/bench_raycast.py --actor on the shipped demo actor at a tiny size: the benchmark the docs
quote for the kernel-vs-reference ratio must keep running (a few seconds: two worker processes)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_raycast_runs_on_the_demo_actor():
    from engine.neural.render import kernels

    if not kernels.available("cpu"):
        pytest.skip(kernels.unavailable_reason())
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_raycast.py"), "--actor",
                           str(ROOT / "engine" / "data" / "demo_actor"), "--sizes", "48", "--reps", "1",
                           "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # one row: size, the actor's 26 bones x 4 primitives, its 16 latent channels, then two speed-ups
    row = next((ln for ln in proc.stdout.splitlines() if ln.strip().startswith("48 ")), None)
    assert row is not None and "error" not in row, proc.stdout
    assert re.match(r"\s*48\s+104\s+16\s+\|", row), row
    speedups = [float(x) for x in re.findall(r"([0-9.]+)x", row)]
    assert len(speedups) == 2 and all(s > 0 for s in speedups), row
