"""scripts/gpu_check.sh on the CPU (its shortened --device cpu path), so the GPU script cannot rot
between sessions that have a GPU. Slow: ingest + 1 minute of training + evaluation (~2.5 min)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--device", "cpu"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    for stage in ("== timings at 512x512", "== train for 1 minute(s) at 64px", "== evaluate", "== done"):
        assert stage in log, f"stage {stage!r} missing from the log"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"novel_view", "novel_pose", "novel_both"}
    for split, m in metrics["splits"].items():
        # a trained actor beats the flat-colour silhouette on held-out views; NaN or a blank render would not
        assert math.isfinite(m["psnr_person"]) and m["psnr_person"] > m["psnr_flat"], (split, m)
        assert 0.3 < m["mask_iou"] <= 1.0, (split, m)
    assert (tmp_path / "grid.png").stat().st_size > 0
