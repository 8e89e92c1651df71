#!/usr/bin/env python
"""Benchmark SMPL fitting on synthetic ground truth.

Random plausible motion and shape of a synthetic SMPL-format model (engine.body.smpl.model; not SMPL
data) are mapped through the joint correspondence to a keypoint set, optionally with Gaussian
noise and randomly dropped joints, then fitted with engine.body.smpl.fit. Reports the mean per-joint
position error (MPJPE) of the fitted keypoints to the noise-free true ones, of the fitted SMPL
joints (22 body joints, hands excluded: their rotation is unobservable) to the true ones, and
frames per second.

    python scripts/bench_smpl_fit.py                      # 300 frames, BODY_25, CPU
    python scripts/bench_smpl_fit.py --frames 300 --joint-set COCO_17 --threads 2
    python scripts/bench_smpl_fit.py --write-demo out/demo  # model + skeleton for the CLI
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def write_demo(folder: Path, frames: int, joint_set: str, seed: int):
    from engine.io.skeleton_file import SkeletonSequence, save_skeleton
    from engine.body.joint_sets import get_joint_set
    from engine.synthetic.smpl import make_synthetic_motion, synthetic_observations
    from engine.body.smpl.model import save_smpl_npz
    from engine.synthetic.smpl import make_synthetic_smpl_model

    folder.mkdir(parents=True, exist_ok=True)
    model = make_synthetic_smpl_model(seed)
    js = get_joint_set(joint_set)
    poses, trans, betas = make_synthetic_motion(frames, fps=30.0, seed=seed)
    kp, _ = synthetic_observations(model, js, poses, trans, betas, noise=0.005, drop=0.02, seed=seed)
    save_smpl_npz(folder / "synthetic_smpl.npz", model)
    save_skeleton(folder / "skeleton.npz", SkeletonSequence(kp, js, 30.0, up_axis="Z"))
    np.savez(folder / "ground_truth.npz", poses=poses, trans=trans, betas=betas)
    print(f"wrote {folder}/synthetic_smpl.npz, skeleton.npz, ground_truth.npz; try:\n"
          f"  marionette fit-smpl {folder}/skeleton.npz --model {folder}/synthetic_smpl.npz -o {folder}/fit.npz")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--joint-set", default="BODY_25")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine more threads thrash)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="runs per case; the fastest is reported (shared machine)")
    ap.add_argument("--write-demo", metavar="DIR", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.write_demo:
        write_demo(Path(args.write_demo), args.frames, args.joint_set, args.seed)
        return 0

    from engine.body.joint_sets import get_joint_set
    from engine.body.smpl.fit import FitOptions, fit_smpl
    from engine.synthetic.smpl import make_synthetic_motion, synthetic_observations
    from engine.synthetic.smpl import make_synthetic_smpl_model

    model = make_synthetic_smpl_model(0)
    js = get_joint_set(args.joint_set)
    poses, trans, betas = make_synthetic_motion(args.frames, fps=30.0, seed=args.seed)
    clean, true_joints = synthetic_observations(model, js, poses, trans, betas)
    # (name, noise per coordinate in m, fraction of joints dropped, keypoint smoothing weight)
    cases = [("noise-free", 0.0, 0.0, 0.05), ("noise-free, --smooth 0", 0.0, 0.0, 0.0),
             ("noise 5 mm", 0.005, 0.0, 0.05), ("noise 10 mm + 10% dropped", 0.010, 0.10, 0.05),
             ("noise 10 mm + 10% dropped, --smooth 0", 0.010, 0.10, 0.0)]
    print("noise is per coordinate; MPJPE is to the noise-free truth; smoothing weight 0.05 unless noted")
    print(f"SMPL fit benchmark: {args.frames} frames of {js.name}, synthetic model ({model.num_vertices} vertices), "
          f"{args.iters} iterations, device {args.device}, torch threads {args.threads}, best of {args.repeat}")
    header = f"{'case':<42} {'MPJPE keypoints':>16} {'MPJPE SMPL-22':>14} {'failed':>7} {'time s':>7} {'frames/s':>9}"
    print(header)
    print("-" * len(header))
    for name, noise, drop, smooth in cases:
        obs, _ = synthetic_observations(model, js, poses, trans, betas, noise=noise, drop=drop, seed=args.seed + 1)
        opts = FitOptions(iters=args.iters, device=args.device, w_smooth=smooth, cpu_threads=args.threads)
        dt = float("inf")
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            res = fit_smpl(obs, js, model, options=opts)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = min(dt, time.perf_counter() - t0)
        valid = np.isfinite(clean).all(-1)
        mpjpe_kp = np.linalg.norm(res.keypoints - clean, axis=-1)[valid].mean() * 1000
        mpjpe_smpl = np.linalg.norm(res.joints[:, :22] - true_joints[:, :22], axis=-1).mean() * 1000
        print(f"{name:<42} {mpjpe_kp:>13.2f} mm {mpjpe_smpl:>11.2f} mm {int(res.failed.sum()):>7} {dt:>7.2f} "
              f"{args.frames / dt:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
