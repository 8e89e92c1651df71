"""Frame-rate upsampling benchmark on the bundled real capture (Pose2Sim demo, 60 fps).

Triangulates the capture with ``marionette triangulate`` (default settings), keeps
every Nth frame, upsamples back to 60 fps and compares the in-between frames with
the dropped ones:

* linear interpolation of joint positions (the in-betweening papers' baseline),
* a cubic spline on joint positions (per joint, same Hermite/Bessel cubic as ours),
* ours (``engine.motion.resample.resample_skeleton``): quaternion splines on bone
  directions, cubic spline on the root, fixed bone lengths.

Prints mean / median / 95th-percentile joint error (mm) on the dropped frames,
and bone-length drift: mean absolute deviation (mm) of every bone's length over
the output frames from that bone's median length.

    python scripts/bench_upsample.py                # every 8th frame
    python scripts/bench_upsample.py --step 4 --skeleton my_capture.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.motion.resample import bone_length_drift, resample_positions, resample_skeleton  # noqa: E402
from engine.io.skeleton_file import SkeletonSequence, load_skeleton  # noqa: E402

DEMO = ROOT / "engine" / "data" / "pose2sim_demo"


def triangulate_demo(out: Path, fps: float = 60.0) -> Path:
    from engine.cli import main

    rc = main(["triangulate", str(DEMO / "pose"), "--calib", str(DEMO / "Calib.qca.txt"), "--fps", str(fps),
               "-o", str(out)])
    if rc != 0:
        raise SystemExit(f"triangulation failed (exit {rc})")
    return out


def errors_mm(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    e = np.linalg.norm(pred - truth, axis=-1) * 1000.0
    return e[np.isfinite(e)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skeleton", help="use this skeleton .npz instead of triangulating the bundled capture")
    ap.add_argument("--step", type=int, default=8, help="keep every STEP-th frame (default 8)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.skeleton) if args.skeleton else triangulate_demo(Path(tmp) / "capture.npz")
        seq = load_skeleton(path)
    js, fps, T = seq.joint_set, seq.fps, seq.num_frames
    full = seq.joints.astype(np.float64)
    keys = np.arange(0, T, args.step)
    last = keys[-1]
    dropped = np.setdiff1d(np.arange(last + 1), keys)
    sub = SkeletonSequence(joints=full[keys], joint_set=js, fps=fps, confidence=seq.confidence[keys],
                           up_axis=seq.up_axis, extras={"frame_indices": keys})
    t_keys, t_all = keys / fps, np.arange(last + 1) / fps
    print(f"capture: {path.name if args.skeleton else 'Pose2Sim demo (triangulated)'}, {T} frames, "
          f"{js.name}, {fps:g} fps; keep every {args.step}th frame ({len(keys)} keys, "
          f"{fps / args.step:g} fps) -> upsample to {fps:g} fps, score {len(dropped)} dropped frames")

    rows = []
    t0 = time.perf_counter()
    lin = np.full((last + 1, js.num_joints, 3), np.nan)
    for j in range(js.num_joints):
        for k in range(3):
            ok = np.isfinite(full[keys, j, k])
            if ok.sum() >= 2:
                lin[:, j, k] = np.interp(t_all, t_keys[ok], full[keys, j, k][ok])
    rows.append(("linear positions (baseline)", lin, time.perf_counter() - t0))
    t0 = time.perf_counter()
    cub = resample_positions(full[keys], t_keys, t_all)
    rows.append(("cubic spline on positions", cub, time.perf_counter() - t0))
    for mode, label in (("keys", "ours: quat splines, key lengths"), ("median", "ours: quat splines, median lengths")):
        t0 = time.perf_counter()
        ours_seq = resample_skeleton(sub, fps, max_gap=None, lengths=mode)
        ours = np.full_like(lin, np.nan)
        ours[np.asarray(ours_seq.extras["frame_indices"])] = ours_seq.joints.astype(np.float64)
        rows.append((label, ours, time.perf_counter() - t0))

    # drift 1: how far each bone's length strays, between two keys, from the straight line joining
    # its lengths at those keys (what interpolation itself does to bones; 0 = no shrinking/stretching)
    key_len = np.stack([np.linalg.norm(full[keys][:, j] - full[keys][:, p], axis=-1) if p >= 0 else
                        np.zeros(len(keys)) for j, p in enumerate(js.parents)], 1)
    interp_len = np.stack([np.interp(t_all, t_keys, key_len[:, j]) for j in range(js.num_joints)], 1)
    bones = [j for j, p in enumerate(js.parents) if p >= 0]

    def interp_drift(pred):
        L = np.stack([np.linalg.norm(pred[:, j] - pred[:, js.parents[j]], axis=-1) for j in bones], 1)
        d = np.abs(L - interp_len[:, bones])[dropped] * 1000
        return float(np.nanmean(d)), float(np.nanmax(d))

    print(f"{'method':38s} {'mean mm':>8s} {'median':>7s} {'p95':>7s} {'drift':>7s} {'max':>7s} "
          f"{'vs med':>7s} {'ms':>6s}")
    for name, pred, dt in rows:
        e = errors_mm(pred[dropped], full[dropped])
        d_mean, d_max = interp_drift(pred)
        d_med = bone_length_drift(pred, js.parents) * 1000
        print(f"{name:38s} {e.mean():8.1f} {np.median(e):7.1f} {np.percentile(e, 95):7.1f} {d_mean:7.3f} "
              f"{d_max:7.3f} {d_med:7.2f} {dt * 1000:6.1f}")
    truth_drift = bone_length_drift(full[: last + 1], js.parents) * 1000
    print("errors: joint position error (mm) on the dropped frames.")
    print("drift/max: bone-length change (mm) caused by interpolation, i.e. the deviation from the line joining\n"
          "           the bone's lengths at the two surrounding keys (mean / max over bones and dropped frames).")
    print(f"vs med:    mean deviation (mm) of bone lengths from each bone's median over the output; the\n"
          f"           triangulated capture itself varies by {truth_drift:.2f} mm (its own noise).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
