#!/usr/bin/env python3
"""Benchmark: Marionette's triangulation vs aniposelib on the bundled real capture.

Both get the same input: the vendored Pose2Sim capture (4 cameras, 100 frames, BODY_25B),
the same subject selection, detections with confidence <= 0.3 removed, and the same
calibration (aniposelib's CameraGroup is loaded from a Pose2Sim/anipose TOML written
from our cameras). Timed: the triangulation call itself, including undistortion
(best of --repeat runs after one warm-up call each, which also absorbs aniposelib's and
numba's JIT compilation; ours run before aniposelib because JAX's worker threads keep
spinning after its calls and slow whatever runs next in the process).

Prints frames per second of both, the ratio, the median reprojection error of both,
and the standard deviation over time of thigh and shin lengths.

    python scripts/bench_triangulation.py [--repeat 15] [--tile 10]

--tile repeats the 100-frame capture in time to get a longer, more stable measurement.
aniposelib 0.8 needs jax; with numpy 1.26 use  pip install --no-deps jax==0.4.30 jaxlib==0.4.30.
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

from engine.io.calibration import load_calibration, write_pose2sim_toml  # noqa: E402
from engine.data import demo_capture_paths  # noqa: E402
from engine.capture.association import select_subject# noqa: E402
from engine.io.keypoints import match_cameras, read_keypoints# noqa: E402
from engine.capture.triangulation import _numba_kernel, triangulate  # noqa: E402


def limb_stats(points, js):
    rows = []
    for name, a, b in (("left thigh", "left_hip", "left_knee"), ("right thigh", "right_hip", "right_knee"),
                       ("left shin", "left_knee", "left_ankle"), ("right shin", "right_knee", "right_ankle")):
        L = np.linalg.norm(points[:, js.index(a)] - points[:, js.index(b)], axis=-1)
        L = L[np.isfinite(L)]
        rows.append((name, L.mean() * 1000, L.std() * 1000))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--tile", type=int, default=10, help="repeat the capture this many times in time")
    ap.add_argument("--min-confidence", type=float, default=0.3)
    ap.add_argument("--threshold", type=float, default=25.0, help="view-rejection threshold in px (default 25)")
    args = ap.parse_args()

    try:
        import jax  # noqa: F401  (aniposelib imports it inside triangulate)
        from aniposelib.cameras import CameraGroup
    except Exception as exc:  # report the exact fix instead of a traceback
        print(f"aniposelib cannot be imported/run here ({type(exc).__name__}: {exc}).\n"
              "Install:  bash scripts/install_bench.sh  (or pip install --no-deps aniposelib==0.8.0 jax==0.4.30 jaxlib==0.4.30 && "
              "pip install 'pandas==2.2.3' toml numba", file=sys.stderr)
        return 1

    demo = demo_capture_paths()
    cams_all = load_calibration(demo.calibration)
    kp = read_keypoints(demo.pose_dir, joint_set=demo.joint_set)
    mapping, _ = match_cameras(kp.camera_names, [c.name for c in cams_all])
    cams = [cams_all[m] for m in mapping]
    kp = select_subject(kp, cams)
    data = np.tile(kp.data, (1, args.tile, 1, 1))  # [C, T, J, 3]
    C, T, J, _ = data.shape
    ok = np.isfinite(data).all(-1) & (data[..., 2] > args.min_confidence)
    p2d = np.where(ok[..., None], data[..., :2], np.nan).reshape(C, T * J, 2)

    with tempfile.TemporaryDirectory() as tmp:
        toml_path = Path(tmp) / "calib.toml"
        write_pose2sim_toml(toml_path, cams)
        group = CameraGroup.load(str(toml_path))

    # Best of --repeat runs for each method after a warm-up call (JIT compilation, caches).
    have_numba = _numba_kernel() is not None
    methods = {
        "anipose": lambda: group.triangulate(p2d, undistort=True),
        "plain": lambda: triangulate(data, cams, min_confidence=args.min_confidence, reproj_threshold=None,
                                     backend="numpy"),
        "default": lambda: triangulate(data, cams, min_confidence=args.min_confidence,
                                       reproj_threshold=args.threshold, backend="numpy"),
        "p2s": lambda: triangulate(data, cams, min_confidence=args.min_confidence, reproj_threshold=15.0,
                                   backend="numpy"),
    }
    if have_numba:
        import numba

        methods["numba"] = lambda: triangulate(data, cams, min_confidence=args.min_confidence,
                                               reproj_threshold=args.threshold, backend="numba")
        nb_threads = max(1, min(numba.get_num_threads(), T * J // 250_000))
    outputs, best = {}, {}
    order = [k for k in methods if k != "anipose"] + ["anipose"]
    for k in order:  # ours first: JAX's worker threads keep spinning after its calls and slow what follows
        outputs[k] = methods[k]()
        best[k] = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            methods[k]()
            best[k] = min(best[k], time.perf_counter() - t0)
    t_anipose, p3_anipose = best["anipose"], outputs["anipose"]
    t_plain, res_plain = best["plain"], outputs["plain"]
    t_ours, res = best["default"], outputs["default"]
    t_p2s, res_p2s = best["p2s"], outputs["p2s"]
    if have_numba:
        t_nb, res_nb = best["numba"], outputs["numba"]

    js = kp.joint_set

    def anipose_error(p3):
        err = np.linalg.norm(group.reprojection_error(p3, p2d), axis=-1)  # [C, N]
        return err

    e_anipose_all = anipose_error(p3_anipose)

    def ours_errors(r):
        e_all = anipose_error(r.points.reshape(-1, 3))
        return med(e_all), med(np.where(r.used.reshape(C, -1), e_all, np.nan))

    def med(e):
        return float(np.nanmedian(e))

    print(f"capture: Pose2Sim S01_Demo_SingleTrial, {C} cameras, {T} frames ({kp.data.shape[1]} x {args.tile}), "
          f"{J} joints, {int(ok.sum())} 2D detections")
    print("median reprojection error: aniposelib's own CameraGroup.reprojection_error (distorted pixels) over every "
          "2D detection, for both")
    print(f"{'method':44s} {'time s':>8s} {'frames/s':>10s} {'median px':>10s} {'(views used)':>13s}")
    fps_a = T / t_anipose
    print(f"{'aniposelib 0.8 CameraGroup.triangulate':44s} {t_anipose:8.4f} {fps_a:10.0f} {med(e_anipose_all):10.2f}")
    rows = [("marionette numpy, no view rejection", t_plain, res_plain),
            (f"marionette numpy, rejection {args.threshold:g} px (default)", t_ours, res),
            ("marionette numpy, rejection 15 px (Pose2Sim)", t_p2s, res_p2s)]
    if have_numba:
        rows.append((f"marionette numba ({nb_threads} thr), rejection {args.threshold:g} px", t_nb, res_nb))
    for name, t, r in rows:
        ea, eu = ours_errors(r)
        print(f"{name:44s} {t:8.4f} {T / t:10.0f} {ea:10.2f} {eu:13.2f}")
    print(f"throughput ratio marionette/aniposelib: numpy {t_anipose / t_ours:.1f}x (default settings), "
          f"{t_anipose / t_plain:.1f}x without rejection, {t_anipose / t_p2s:.1f}x with 15 px rejection"
          + (f"; numba kernel {t_anipose / t_nb:.1f}x" if have_numba else "; numba not installed"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (timings scale with it)")
    print(f"3D points: aniposelib {int(np.isfinite(p3_anipose).all(-1).sum())}, marionette default "
          f"{int(np.isfinite(res.points).all(-1).sum())} of {T * J}")
    print("limb length over time (first 100 frames, no filtering), mean / std in mm:")
    n0 = kp.data.shape[1]
    tables = [limb_stats(p3_anipose.reshape(T, J, 3)[:n0], js)]
    tables += [limb_stats(r.points[:n0], js) for _, _, r in rows[:3]]
    print(f"  {'bone':12s} {'aniposelib':>15s} {'ours, none':>15s} {'ours, default':>15s} {'ours, 15 px':>15s}")
    for i in range(4):
        cells = "".join(f"{tab[i][1]:8.1f} /{tab[i][2]:5.1f}" for tab in tables)
        print(f"  {tables[0][i][0]:12s} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
