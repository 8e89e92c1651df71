"""Benchmark ``marionette ingest`` on the vendored real clip (4 cameras x 100 frames, 60 fps).

Prints, for the detector road (MediaPipe BlazePose on the crops) and the --keypoints road
(the vendored OpenPose BODY_25B files):
* wall time and views per second of each stage (probe, finding people, crop + detect,
  triangulate, masks, write) and in total;
* agreement in 3D between the detector's triangulated joints and the vendored OpenPose-based
  triangulation of the same trial (``marionette triangulate``), median and 90th percentile in
  mm over the joints both sets share exactly (same canonical name);
* the median reprojection error (crop pixels and the equivalent full-frame pixels);
* mask quality per view (skeleton coverage, area variation, flagged frames).

    python scripts/bench_ingest.py [--resolution 256] [--workers 2] [--frames 0-99]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def shared_joints(a, b) -> list[tuple[int, int, str]]:
    """(index in a, index in b, canonical name) for joints with the same canonical name."""
    return [(i, b.canonical.index(c), c) for i, c in enumerate(a.canonical) if c in b.canonical]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", default=None, help="frame range, e.g. 0-99:2 (default all 100)")
    args = ap.parse_args()

    from engine.capture.ingest.pipeline import IngestOptions, ingest
    from engine.capture.reconstruct import reconstruct
    from engine.data import DATA_DIR

    clip = DATA_DIR / "pose2sim_demo"
    videos, calib, pose = clip / "videos", clip / "Calib.qca.txt", clip / "pose"
    print(f"machine: {os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.2f}")
    ref = reconstruct(pose, calib, fps=60.0).skeleton  # the vendored OpenPose triangulation
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for road, kp in (("detector (BlazePose)", None), ("--keypoints (OpenPose)", pose)):
            t0 = time.perf_counter()
            res = ingest(IngestOptions(videos=videos, calib=calib, keypoints=kp, frames=args.frames,
                                       resolution=args.resolution, out=Path(tmp) / road.split()[0].strip("-"),
                                       workers=args.workers, progress=False))
            total = time.perf_counter() - t0
            results[road] = (res, total)
    for road, (res, total) in results.items():
        T = res.skeleton.joints.shape[0]
        views = 4 * T
        print(f"\n== {road}: {T} frames x 4 cameras, {args.resolution}² crops, {args.workers} workers")
        for k, v in res.timings.items():
            rate = f"{views / v:8.1f} views/s" if v > 0 and not k.startswith("  ") else ""
            print(f"  {k:<34s} {v:7.2f} s {rate}")
        print(f"  {'total':<34s} {total:7.2f} s {views / total:8.1f} views/s  (target: 400 views in <= 120 s)")
        for line in res.lines:
            if line.startswith("skeleton:") or line.startswith("masks "):
                print("  " + line)
    det = results["detector (BlazePose)"][0].skeleton
    frames = np.asarray(det.extras.get("frame_indices", np.arange(det.joints.shape[0])))
    pairs = shared_joints(det.joint_set, ref.joint_set)
    a = det.joints[:, [p[0] for p in pairs]]
    b = ref.joints[frames][:, [p[1] for p in pairs]]
    d = np.linalg.norm(a - b, axis=-1) * 1000.0
    ok = np.isfinite(d)
    print(f"\n== 3D agreement, detector vs vendored OpenPose triangulation ({len(pairs)} shared joints, "
          f"{int(ok.sum())} samples)")
    print(f"  median {np.median(d[ok]):.1f} mm, 90th percentile {np.percentile(d[ok], 90):.1f} mm")
    per = sorted(((np.nanmedian(d[:, k]), pairs[k][2]) for k in range(len(pairs))), reverse=True)
    print("  per joint (median mm): " + ", ".join(f"{n} {m:.0f}" for m, n in per))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
