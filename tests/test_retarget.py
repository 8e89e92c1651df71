"""engine.body.bone_maps (bone maps, detection) and engine.motion.retarget (direction matching, root, feet, FK round trips)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine import MarionetteError
from engine.cli import main as cli_main
from engine.body.kinematics import Rig
from engine.motion.retarget import (CanonicalMotion, RigMotion, direction_errors, foot_sliding, retarget,
                             up_vector)
from engine.body.bone_maps import detect_rig, list_rigs, load_rig
from engine.io.skeleton_file import SkeletonSequence, load_skeleton
from engine.body.joint_sets import JOINT_SETS, get_joint_set

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "engine" / "data" / "pose2sim_demo"
SMPL = get_joint_set("SMPL_24")
REST = load_rig("smpl_24").rest_joints


def smpl_rest(leg_scale=1.0, arm_angle=0.0):
    """The shipped SMPL template; optionally longer/shorter legs and arms lowered by arm_angle (A-pose)."""
    X = np.array([REST[n] for n in SMPL.names], float)
    idx = {n: i for i, n in enumerate(SMPL.names)}
    for s, sign in (("left", 1), ("right", -1)):
        hip = X[idx[f"{s}_hip"]].copy()
        for j in ("knee", "ankle", "foot"):
            X[idx[f"{s}_{j}"]] = hip + leg_scale * (X[idx[f"{s}_{j}"]] - hip)
        sh = X[idx[f"{s}_shoulder"]].copy()
        for j in ("elbow", "wrist", "hand"):
            d = np.linalg.norm(X[idx[f"{s}_{j}"]] - sh)
            X[idx[f"{s}_{j}"]] = sh + d * np.array([sign * np.cos(arm_angle), 0, -np.sin(arm_angle)])
    X[:, 2] -= X[:, 2].min() - 0.02
    return X


def squat(T=120, fps=60.0):
    """Feet planted (exactly static ankles and toes), knees bend forward, the body drops, arms swing."""
    R = smpl_rest()
    idx = {n: i for i, n in enumerate(SMPL.names)}
    t = np.arange(T) / fps
    depth = 0.5 * (1 - np.cos(np.pi * t))
    out = np.zeros((T, 24, 3))
    upper = [n for n in SMPL.names if not any(k in n for k in ("hip", "knee", "ankle", "foot"))]
    for k in range(T):
        X = R.copy()
        ang = 1.0 * depth[k]
        for s in ("left", "right"):
            h, kn, a = (idx[f"{s}_{x}"] for x in ("hip", "knee", "ankle"))
            l1, l2 = np.linalg.norm(R[kn] - R[h]), np.linalg.norm(R[a] - R[kn])
            ankle_to_knee = R[kn] - R[a]
            # rotate shin forward about x, thigh back by the same angle: the hip stays above the ankle
            X[kn] = R[a] + l2 * np.array([ankle_to_knee[0] / l2, -np.sin(ang), np.cos(ang) * ankle_to_knee[2] / l2])
            X[kn] = R[a] + l2 * (X[kn] - R[a]) / np.linalg.norm(X[kn] - R[a])
            d = np.array([0, np.sin(ang), np.cos(ang)])
            X[h] = X[kn] + l1 * d
        shift = X[idx["left_hip"]] - R[idx["left_hip"]]
        for n in upper:
            X[idx[n]] = R[idx[n]] + shift
        sw = 0.5 * np.sin(2 * np.pi * t[k])
        sh = X[idx["left_shoulder"]]
        for j in ("elbow", "wrist", "hand"):
            v = X[idx[f"left_{j}"]] - sh
            X[idx[f"left_{j}"]] = sh + np.array([v[0] * np.cos(sw), 0, v[0] * np.sin(sw)])
        out[k] = X
    return out


def canonical_array(res, js):
    pos = res.canonical()
    return np.stack([pos[c] for c in js.canonical], 1)


# ----------------------------------------------------------------------------- rig maps

def test_rig_maps_load_and_detect_their_rigs():
    rigs = {r.name: r for r in list_rigs()}
    assert {"smpl_24", "body_25", "body_25b", "coco_17", "h36m_17", "panoptic_19", "mixamo", "rigify_metarig",
            "rigify_def"} <= set(rigs)
    for js in JOINT_SETS.values():
        det = detect_rig(js.names)
        assert det.rig is not None and det.rig.joint_set == js.name and det.score == 1.0
    mix = ["mixamorig1:" + b for b in rigs["mixamo"].joints.values()] + ["mixamorig1:LeftHandIndex1"]
    det = detect_rig(mix)
    assert det.rig.name == "mixamo" and det.mapping["left_knee"] == "mixamorig1:LeftLeg"
    det = detect_rig(list(rigs["rigify_def"].joints.values()) + ["DEF-thigh.L.001", "ORG-spine", "root"])
    assert det.rig.name == "rigify_def" and det.mapping["pelvis"] == "DEF-spine"
    det = detect_rig(list(rigs["rigify_metarig"].joints.values()) + ["heel.02.L"])
    assert det.rig.name == "rigify_metarig"
    assert detect_rig(["Bone", "Bone.001", "Head"]).rig is None


def test_bad_rig_map_file(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"name": "mine", "kind": "armature", "joints": {"pelvis": "a", "left_knee": "a"}}))
    with pytest.raises(MarionetteError, match="same bone"):
        load_rig(p)
    p.write_text("{not json")
    with pytest.raises(MarionetteError, match="not a readable"):
        load_rig(p)
    with pytest.raises(MarionetteError, match="unknown rig"):
        load_rig("no_such_rig")
    with pytest.raises(MarionetteError, match="no default rest skeleton"):
        Rig.from_rig_map(load_rig("mixamo"))


# ----------------------------------------------------------------------------- retargeting

def test_same_skeleton_reproduces_source():
    src = SkeletonSequence(squat(), SMPL, 60.0)
    res = retarget(src, Rig.from_joint_set(SMPL, smpl_rest()), feet=False)
    assert abs(res.scale - 1) < 1e-6
    assert np.abs(canonical_array(res, SMPL) - src.joints).max() < 1e-5


def test_a_pose_target_with_other_proportions_follows_directions_and_pins_feet():
    src = SkeletonSequence(squat(), SMPL, 60.0)
    rig = Rig.from_joint_set(SMPL, smpl_rest(leg_scale=0.8, arm_angle=0.7))
    pairs = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("smpl_left_hip", "left_knee"),
             ("left_knee", "left_ankle"), ("spine3", "neck_base"), ("left_ankle", "left_foot")]
    src_pos = {c: src.joints[:, j].astype(float) for j, c in enumerate(SMPL.canonical)}
    free = retarget(src, rig, feet=False)
    assert max(direction_errors(src_pos, free.canonical(), pairs).values()) < 1e-3  # T vs A pose aligned
    pinned = retarget(src, rig, feet=True)
    assert pinned.contacts["left_ankle"].all() and pinned.contacts["left_foot"].all()
    ankle = pinned.canonical()["left_ankle"]
    assert foot_sliding(ankle, np.ones(len(ankle), bool), "Z") < 1e-6  # metres per frame
    assert np.ptp(ankle[:, 2]) < 1e-3
    # bone lengths are the target's, exactly
    out = canonical_array(pinned, SMPL)
    for j, p in enumerate(SMPL.parents):
        if p >= 0:
            L = np.linalg.norm(out[:, j] - out[:, p], axis=-1)
            assert np.ptp(L) < 1e-9 and abs(L[0] - np.linalg.norm(rig.canonical_rest[SMPL.canonical[j]]
                                                                  - rig.canonical_rest[SMPL.canonical[p]])) < 1e-9


def test_root_motion_scaled_by_leg_length_and_in_place():
    X = squat(T=60)
    X[:, :, 1] -= np.linspace(0, 0.6, 60)[:, None]  # travel 0.6 m forward (-Y)
    src = SkeletonSequence(X, SMPL, 60.0)
    rig = Rig.from_joint_set(SMPL, smpl_rest(leg_scale=1.3))
    res = retarget(src, rig, feet=False)
    pelvis = res.canonical()["pelvis"]
    assert res.scale > 1.15
    travel = X[0, 0, 1] - X[-1, 0, 1]
    assert travel > 0.6 and abs((pelvis[0, 1] - pelvis[-1, 1]) - travel * res.scale) < 1e-6
    res = retarget(src, rig, feet=False, root="in_place")
    p = res.canonical()["pelvis"]
    assert np.ptp(p[:, :2], axis=0).max() < 1e-9
    with pytest.raises(MarionetteError, match="root"):
        retarget(src, rig, root="fly")


def test_up_axis_conversion():
    X = squat(T=30)
    yup = X[..., [0, 2, 1]] * np.array([1, 1, -1])  # Z-up -> Y-up (x, z, -y)
    rig = Rig.from_joint_set(SMPL, smpl_rest())
    a = retarget(SkeletonSequence(X, SMPL, 60.0, up_axis="Z"), rig, feet=False)
    b = retarget(SkeletonSequence(yup, SMPL, 60.0, up_axis="Y"), rig, feet=False)
    assert np.abs(canonical_array(a, SMPL) - canonical_array(b, SMPL)).max() < 1e-6
    assert np.allclose(up_vector("-Y"), [0, -1, 0])


def mixamo_template_rig(arm_angle=0.6, rolls=None):
    """Mixamo-named bones on the SMPL template (joints at bone heads, bones pointing to a child)."""
    mix = load_rig("mixamo")
    rest = smpl_rest(arm_angle=arm_angle)
    heads, names, parents = [], [], []
    for j, c in enumerate(SMPL.canonical):
        key = {"smpl_left_hip": "left_hip", "smpl_right_hip": "right_hip", "neck_base": "neck_base"}.get(c, c)
        if key not in mix.joints:
            continue
        names.append(mix.joints[key])
        heads.append(rest[j])
    canon_of = {b: c for c, b in mix.joints.items()}
    smpl_key = {"left_hip": "smpl_left_hip", "right_hip": "smpl_right_hip"}
    for b in names:
        c = smpl_key.get(canon_of[b], canon_of[b])
        p = SMPL.parents[SMPL.index(c)]
        while p >= 0 and {"smpl_left_hip": "left_hip", "smpl_right_hip": "right_hip"}.get(
                SMPL.canonical[p], SMPL.canonical[p]) not in {canon_of[n] for n in names}:
            p = SMPL.parents[p]
        pc = {"smpl_left_hip": "left_hip", "smpl_right_hip": "right_hip"}.get(SMPL.canonical[p], SMPL.canonical[p]) \
            if p >= 0 else None
        parents.append(names.index(mix.joints[pc]) if pc else -1)
    heads = np.array(heads)
    kids = {p: i for i, p in enumerate(parents) if p >= 0 and not names[i].endswith(("UpLeg", "Shoulder"))}
    tails = np.array([heads[kids[i]] if i in kids else heads[i] + [0.0, 0.0, 0.1] for i in range(len(names))])
    return Rig.from_bones(names, parents, heads, tails,
                          rolls=np.linspace(0, 1, len(names)) if rolls is None else np.full(len(names), rolls))


def test_rig_motion_round_trip_and_canonical_source():
    """Rotations baked for an armature (rest orientations, joints at heads) reproduce the posed joints."""
    src = SkeletonSequence(squat(T=40), SMPL, 60.0)
    rig = mixamo_template_rig()
    res = retarget(src, rig, feet=True)
    world, posed = RigMotion(rig, res.rotations, res.fps, location=res.location, root_bone=res.root_bone).world()
    assert np.abs(posed - res.heads).max() < 1e-9
    # the same motion handed over as canonical positions gives the same result
    pos = {c: src.joints[:, j].astype(float) for j, c in enumerate(SMPL.canonical)}
    res2 = retarget(CanonicalMotion(pos, 60.0, up="Z"), rig, feet=True)
    assert np.abs(res2.rotations - res.rotations).max() < 1e-9


def test_bad_sources_and_targets():
    rig = Rig.from_joint_set(SMPL, smpl_rest())
    with pytest.raises(MarionetteError, match="single frame"):
        retarget(SkeletonSequence(squat(T=1), SMPL, 60.0), rig)
    with pytest.raises(MarionetteError, match="pelvis"):
        retarget(CanonicalMotion({"left_knee": np.zeros((5, 3)), "left_ankle": np.ones((5, 3))}, 30.0), rig)
    no_pelvis = Rig(bone_names=["a", "b"], parents=[-1, 0], heads=np.zeros((2, 3)) + [[0, 0, 1], [0, 0, 0]],
                    mapping={"left_knee": "a", "left_ankle": "b"})
    with pytest.raises(MarionetteError, match="pelvis"):
        retarget(SkeletonSequence(squat(T=5), SMPL, 60.0), no_pelvis)
    with pytest.raises(MarionetteError, match="does not have"):
        Rig(bone_names=["a"], parents=[-1], heads=np.zeros((1, 3)), mapping={"pelvis": "zz"})
    with pytest.raises(MarionetteError, match="cycle"):
        Rig(bone_names=["a", "b"], parents=[1, 0], heads=np.zeros((2, 3)), mapping={})


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("cap") / "capture.npz"
    assert cli_main(["triangulate", str(DEMO / "pose"), "--calib", str(DEMO / "Calib.qca.txt"), "--fps", "60",
                     "-o", str(out)]) == 0
    return out


def test_real_capture_onto_smpl_and_motion_transfer_cli(capture, tmp_path):
    """The bundled Pose2Sim capture (BODY_25B): feet stay put in contact, limbs keep their directions."""
    seq = load_skeleton(capture)
    res = retarget(seq, Rig.from_rig_map(load_rig("smpl_24")), feet=True)
    tgt = res.canonical()
    slides = [foot_sliding(tgt[j], m, res.rig.up) for j, m in res.contacts.items() if m.sum() > 1]
    assert len(slides) >= 2 and np.nanmean(slides) < 0.002  # metres per frame of contact
    pairs = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
             ("right_elbow", "right_wrist")]
    assert max(direction_errors(res.source, tgt, pairs).values()) < 1.0  # degrees; arms are untouched by IK
    # motion transfer: the capture onto "another actor" with 10% longer bones, via the CLI
    other = SkeletonSequence(seq.joints * 1.1, seq.joint_set, seq.fps, up_axis=seq.up_axis)
    from engine.io.skeleton_file import save_skeleton

    save_skeleton(tmp_path / "other.npz", other)
    assert cli_main(["retarget", str(capture), "--onto", str(tmp_path / "other.npz"), "-o",
                     str(tmp_path / "moved.npz")]) == 0
    moved = load_skeleton(tmp_path / "moved.npz")
    assert moved.joint_set.name == "BODY_25B" and moved.num_frames == seq.num_frames
    js = moved.joint_set
    from engine.motion.resample import bone_lengths

    bones = np.asarray(js.parents) >= 0
    ratio = bone_lengths(moved.joints, js.parents)[bones] / bone_lengths(seq.joints, js.parents)[bones]
    assert np.allclose(ratio, 1.1, atol=0.02)
    assert cli_main(["retarget", str(capture), "--target", "mixamo", "-o", str(tmp_path / "x.npz")]) == 1


@pytest.mark.parametrize("name", ["BODY_25", "BODY_25B", "COCO_17", "H36M_17", "PANOPTIC_19"])
def test_every_joint_set_as_source_and_target(name):
    """Motion in any shipped joint set drives SMPL, and SMPL motion drives a skeleton of that set."""
    from engine.body.joint_sets import map_joints

    js = get_joint_set(name)
    X = squat(T=40)
    pos = map_joints(X, SMPL, js)  # the same motion seen as this joint set's keypoints
    seq = SkeletonSequence(pos, js, 60.0)
    pinned = retarget(seq, Rig.from_rig_map(load_rig("smpl_24")), feet=True)
    assert np.isfinite(pinned.rotations).all() and np.isfinite(pinned.heads).all()
    res = retarget(seq, Rig.from_rig_map(load_rig("smpl_24")), feet=False)
    limbs = [("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_knee", "right_ankle")]
    src_pos = {c: pos[:, j] for j, c in enumerate(js.canonical)}
    assert max(direction_errors(src_pos, res.canonical(), limbs).values()) < 2.0
    # and the other way round: SMPL motion onto this joint set's skeleton (rest from the mapped template)
    rest = map_joints(smpl_rest()[None], SMPL, js)[0]
    if np.isfinite(rest).all():
        out = retarget(SkeletonSequence(X, SMPL, 60.0), Rig.from_joint_set(js, rest), feet=False).to_skeleton()
        assert out.joint_set is js and not out.missing.any()
        got = {c: out.joints[:, j].astype(float) for j, c in enumerate(js.canonical)}
        src = {c: X[:, j] for j, c in enumerate(SMPL.canonical)}
        assert max(direction_errors(src, got, limbs).values()) < 2.0


def test_twist_from_rotation_sources_is_carried_over():
    """A forearm rolling about its own axis moves no joint; from a rotation source it still reaches the target."""
    from engine.geometry.rotations import quat_exp, quat_log

    src_rig = mixamo_template_rig(arm_angle=0.0, rolls=0.0)  # T-pose
    tgt_rig = mixamo_template_rig(arm_angle=0.7)  # A-pose, other rolls
    T = 30
    theta = 1.2 * np.sin(np.linspace(0, np.pi, T))
    rot = np.tile([1.0, 0.0, 0.0, 0.0], (T, len(src_rig.bone_names), 1))
    fore = src_rig.bone_names.index("LeftForeArm")
    rot[:, fore] = quat_exp(theta[:, None] * np.array([0.0, 1.0, 0.0]))  # about the bone's own Y axis
    motion = RigMotion(src_rig, rot, 30.0)
    res = retarget(motion, tgt_rig, feet=False)
    tb = tgt_rig.bone_names.index("LeftForeArm")
    local = quat_log(res.rotations[:, tb])
    # the target forearm rolls by the same angle about its own (Y) axis
    assert np.allclose(np.abs(local[:, 1]), np.abs(theta), atol=1e-6)
    assert np.abs(local[:, [0, 2]]).max() < 1e-6
    # joint positions alone carry no roll
    _, heads = motion.world()
    pos = {c: heads[:, src_rig.bone_names.index(b)] for c, b in src_rig.mapping.items()}
    flat = retarget(CanonicalMotion(pos, 30.0), tgt_rig, feet=False)
    assert np.abs(quat_log(flat.rotations[:, tb])).max() < 1e-6


# ----------------------------------------------------------------------------- one Rig type, retarget stages

def test_kinematics_skeleton_rig_is_a_retarget_target():
    """engine.body.kinematics.build_skeleton_rig gives the same Rig type retargeting drives."""
    from engine.body.kinematics import build_skeleton_rig

    src = SkeletonSequence(squat(), SMPL, 60.0)
    rig = build_skeleton_rig(src.joints.astype(float), SMPL)
    assert rig.joint_set is SMPL and rig.tail_mapping["left_knee"] == "left_knee"
    res = retarget(src, rig, feet=False)
    assert abs(res.scale - 1) < 1e-6
    # the same motion, up to one offset (this rest pose stands at the median root height)
    diff = canonical_array(res, SMPL) - src.joints
    assert np.ptp(diff.reshape(-1, 3), axis=0).max() < 1e-5


def test_retarget_stages_alone():
    from engine.motion import retarget as rt

    rig = Rig.from_joint_set(SMPL, smpl_rest(leg_scale=1.3))
    X = squat(T=20)
    yup = X[..., [0, 2, 1]] * np.array([1, 1, -1])
    job = rt._prepare_source(SkeletonSequence(yup, SMPL, 60.0, up_axis="Y"), rig, "keep", None)
    assert job.T == 20 and np.allclose(job.sget("left_knee"), X[:, SMPL.canonical.index("left_knee")], atol=1e-5)
    rt._check_drivable(job)
    assert rt._root_scale(job, 2.0) == 2.0 and 1.1 < rt._root_scale(job, None) < 1.3
    world, driven, aims = rt._solve_rotations(job)
    assert world.shape == (20, rig.num_bones, 4) and driven.any() and aims
    rot = rt._pose_rotations(rig, np.tile([1.0, 0, 0, 0], (3, rig.num_bones, 1)))
    assert np.allclose(rot, [1, 0, 0, 0])
    with pytest.raises(MarionetteError, match="root"):
        rt._prepare_source(SkeletonSequence(X, SMPL, 60.0), rig, "fly", None)
