"""Blender operators: retarget (active -> selected armature) and resample_motion, installed from the extension zip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")

from blender_sandbox import MODULE, data_counts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REST = json.loads((ROOT / "engine" / "body" / "bone_maps" / "smpl_24.json").read_text())["rest_joints"]
SMPL_PARENT = {"left_hip": "pelvis", "right_hip": "pelvis", "spine1": "pelvis", "left_knee": "left_hip",
               "right_knee": "right_hip", "spine2": "spine1", "left_ankle": "left_knee", "right_ankle": "right_knee",
               "spine3": "spine2", "left_foot": "left_ankle", "right_foot": "right_ankle", "neck": "spine3",
               "left_collar": "spine3", "right_collar": "spine3", "head": "neck", "left_shoulder": "left_collar",
               "right_shoulder": "right_collar", "left_elbow": "left_shoulder", "right_elbow": "right_shoulder",
               "left_wrist": "left_elbow", "right_wrist": "right_elbow"}
# SMPL joint -> (Mixamo bone, Rigify meta-rig bone) whose head sits at that joint
BONES = {"pelvis": ("Hips", "spine"), "spine1": ("Spine", "spine.001"), "spine2": ("Spine1", "spine.002"),
         "spine3": ("Spine2", "spine.003"), "neck": ("Neck", "spine.004"), "head": ("Head", "spine.006")}
for _s, _S, _R in (("left", "Left", "L"), ("right", "Right", "R")):
    BONES.update({f"{_s}_hip": (f"{_S}UpLeg", f"thigh.{_R}"), f"{_s}_knee": (f"{_S}Leg", f"shin.{_R}"),
                  f"{_s}_ankle": (f"{_S}Foot", f"foot.{_R}"), f"{_s}_foot": (f"{_S}ToeBase", f"toe.{_R}"),
                  f"{_s}_collar": (f"{_S}Shoulder", f"shoulder.{_R}"), f"{_s}_shoulder": (f"{_S}Arm", f"upper_arm.{_R}"),
                  f"{_s}_elbow": (f"{_S}ForeArm", f"forearm.{_R}"), f"{_s}_wrist": (f"{_S}Hand", f"hand.{_R}")})


def make_armature(bpy, name, style, leg_scale=1.0, a_pose=False, prefix="", fbx_like=False):
    """An armature with Mixamo (style 0) or Rigify meta-rig (style 1) bone names on the SMPL template.

    fbx_like: bones in centimetres, Y up, the object rotated 90 degrees about X and scaled 0.01
    (how Mixamo FBX files usually arrive)."""
    rest = {k: np.array(v, float) for k, v in REST.items()}
    if leg_scale != 1.0:
        for s in ("left", "right"):
            for j in ("knee", "ankle", "foot"):
                rest[f"{s}_{j}"] = rest[f"{s}_hip"] + leg_scale * (rest[f"{s}_{j}"] - rest[f"{s}_hip"])
        lift = 0.02 - min(rest[f"{s}_foot"][2] for s in ("left", "right"))
        for k in rest:
            rest[k][2] += lift
    if a_pose:  # arms 45 degrees down
        for s, sign in (("left", 1), ("right", -1)):
            sh = rest[f"{s}_shoulder"]
            for j in ("elbow", "wrist"):
                d = np.linalg.norm(rest[f"{s}_{j}"] - sh)
                rest[f"{s}_{j}"] = sh + d * np.array([sign * math.cos(0.8), 0, -math.sin(0.8)])
    if fbx_like:
        rest = {k: 100.0 * np.array([v[0], v[2], -v[1]]) for k, v in rest.items()}
    arm = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, arm)
    bpy.context.collection.objects.link(obj)
    if fbx_like:
        obj.rotation_euler = (math.pi / 2, 0.0, 0.0)
        obj.scale = (0.01, 0.01, 0.01)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    children = {}
    for c, p in SMPL_PARENT.items():
        children.setdefault(p, []).append(c)
    ebs = {}
    for j in ["pelvis"] + list(SMPL_PARENT):
        if j not in BONES:
            continue
        eb = arm.edit_bones.new(prefix + BONES[j][style])
        eb.head = rest[j].tolist()
        kids = [k for k in children.get(j, []) if k in BONES]
        pref = {"pelvis": "spine1", "spine3": "neck"}.get(j)
        tail_j = pref if pref else (kids[0] if kids else None)
        leaf = np.array([0, -0.08 if "foot" in j else 0, 0.08 if "foot" not in j else 0])
        if fbx_like:
            leaf = 100.0 * np.array([leaf[0], leaf[2], -leaf[1]])
        eb.tail = (rest[tail_j] if tail_j else rest[j] + leaf).tolist()
        if j in SMPL_PARENT and SMPL_PARENT[j] in ebs:
            eb.parent = ebs[SMPL_PARENT[j]]
        ebs[j] = eb
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def animate(bpy, obj, frames=24):
    """Kick the left leg and bend the knee, arms wave, hips travel forward."""
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    from mathutils import Quaternion

    names = {b.name: b for b in obj.pose.bones}
    thigh = next(n for n in names if n.endswith(("LeftUpLeg", "thigh.L")))
    shin = next(n for n in names if n.endswith(("LeftLeg", "shin.L")))
    arm_ = next(n for n in names if n.endswith(("RightArm", "upper_arm.R")))
    hips = next(n for n in names if n.endswith(("Hips",)) or n == "spine")
    for f in range(1, frames + 1):
        a = math.sin(2 * math.pi * (f - 1) / frames)
        names[thigh].rotation_quaternion = Quaternion((1, 0, 0), 0.6 * a)
        names[thigh].keyframe_insert("rotation_quaternion", frame=f)
        names[shin].rotation_quaternion = Quaternion((1, 0, 0), -0.5 * abs(a))
        names[shin].keyframe_insert("rotation_quaternion", frame=f)
        names[arm_].rotation_quaternion = Quaternion((0, 0, 1), 0.4 * a)
        names[arm_].keyframe_insert("rotation_quaternion", frame=f)
        names[hips].location = (0, 0.02 * f, 0)
        names[hips].keyframe_insert("location", frame=f)


def fails(op, match, **kw):
    """Operators that report an error raise RuntimeError in background Blender; check the message."""
    with pytest.raises(RuntimeError, match=match):
        op(**kw)


def select(bpy, source, target):
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    target.select_set(True)
    source.select_set(True)
    bpy.context.view_layer.objects.active = source


def world_dir(bpy, obj, bone):
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    pb = ev.pose.bones[bone]
    M = np.array(ev.matrix_world)
    h = M[:3, :3] @ np.array(pb.head) + M[:3, 3]
    t = M[:3, :3] @ np.array(pb.tail) + M[:3, 3]
    d = t - h
    return d / np.linalg.norm(d)


def test_retarget_mixamo_onto_rigify(blender):
    bpy = blender
    src = make_armature(bpy, "Src", 0, prefix="mixamorig:")
    animate(bpy, src)
    tgt = make_armature(bpy, "Tgt", 1, leg_scale=1.2, a_pose=True)
    tgt.location = (1.0, 0.0, 0.0)
    select(bpy, src, tgt)
    assert "UNDO" in bpy.ops.marionette.retarget.bl_options
    assert bpy.ops.marionette.retarget(pin_feet=False) == {"FINISHED"}
    act = tgt.animation_data.action
    assert act is not None and act.name.endswith("on Tgt")
    angles = []
    for f in (3, 7, 12, 19):
        bpy.context.scene.frame_set(f)
        for s, t in (("mixamorig:LeftUpLeg", "thigh.L"), ("mixamorig:LeftLeg", "shin.L"),
                     ("mixamorig:RightArm", "upper_arm.R")):
            cos = float(np.clip(world_dir(bpy, src, s) @ world_dir(bpy, tgt, t), -1, 1))
            angles.append(math.degrees(math.acos(cos)))
    assert max(angles) < 1.0, angles  # bone directions follow the source despite A- vs T-pose and leg scale
    # feet pinned variant also bakes
    assert bpy.ops.marionette.retarget(pin_feet=True, root_motion="IN_PLACE") == {"FINISHED"}


def test_retarget_onto_rotated_centimetre_rig(blender):
    """A Rigify-named target in centimetres, Y-up armature space, rotated and scaled like an FBX import."""
    bpy = blender
    src = make_armature(bpy, "Src", 0, prefix="mixamorig:")
    animate(bpy, src)
    tgt = make_armature(bpy, "Tgt", 1, leg_scale=0.9, fbx_like=True)
    select(bpy, src, tgt)
    assert bpy.ops.marionette.retarget(pin_feet=False) == {"FINISHED"}
    for f in (4, 13):
        bpy.context.scene.frame_set(f)
        for s, t in (("mixamorig:LeftUpLeg", "thigh.L"), ("mixamorig:RightArm", "upper_arm.R")):
            assert world_dir(bpy, src, s) @ world_dir(bpy, tgt, t) > math.cos(math.radians(1.0))
    # the hips move like the source's, scaled by the leg ratio, in world metres
    def hips(obj, bone, f):
        bpy.context.scene.frame_set(f)
        ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        return np.array(ev.matrix_world @ ev.pose.bones[bone].head)

    s = tgt["marionette_retarget_scale"]
    assert 0.8 < s < 0.95
    d_src = hips(src, "mixamorig:Hips", 21) - hips(src, "mixamorig:Hips", 1)
    d_tgt = hips(tgt, "spine", 21) - hips(tgt, "spine", 1)
    assert np.linalg.norm(d_src) > 0.3 and np.allclose(d_tgt, s * d_src, atol=1e-3)
    # a hips bone whose location is read in armature axes ("Local Location" off) moves the same way
    tgt.data.bones["spine"].use_local_location = False
    select(bpy, src, tgt)
    assert bpy.ops.marionette.retarget(pin_feet=False) == {"FINISHED"}
    d_tgt = hips(tgt, "spine", 21) - hips(tgt, "spine", 1)
    assert np.allclose(d_tgt, s * d_src, atol=1e-3)
    assert bpy.ops.marionette.retarget(pin_feet=True) == {"FINISHED"}


def test_retarget_bad_input_changes_nothing(blender):
    bpy = blender
    src = make_armature(bpy, "Src", 0)
    tgt = make_armature(bpy, "Tgt", 1)
    select(bpy, src, tgt)
    before = data_counts(bpy)
    # source without animation
    fails(bpy.ops.marionette.retarget, "no animation")
    assert data_counts(bpy) == before and tgt.animation_data is None
    animate(bpy, src)
    before = data_counts(bpy)
    # mismatched frame range
    fails(bpy.ops.marionette.retarget, "does not lie within", use_action_range=False, frame_start=1, frame_end=500)
    # non-uniform scale
    tgt.scale = (1.0, 2.0, 1.0)
    fails(bpy.ops.marionette.retarget, "non-uniform scale")
    tgt.scale = (1.0, 1.0, 1.0)
    # constraints on the target
    c = tgt.pose.bones["thigh.L"].constraints.new("COPY_ROTATION")
    fails(bpy.ops.marionette.retarget, "bone constraints on thigh.L")
    tgt.pose.bones["thigh.L"].constraints.remove(c)
    assert data_counts(bpy) == before and tgt.animation_data is None
    assert all(pb.rotation_mode == "QUATERNION" for pb in tgt.pose.bones)  # the default, untouched
    # hips connected to a parent bone: their location cannot be keyed
    bpy.context.view_layer.objects.active = tgt
    bpy.ops.object.mode_set(mode="EDIT")
    eb = tgt.data.edit_bones
    root = eb.new("root")
    root.head, root.tail = (0.0, 0.0, 0.0), tuple(eb["spine"].head)
    eb["spine"].parent = root
    eb["spine"].use_connect = True
    bpy.ops.object.mode_set(mode="OBJECT")
    select(bpy, src, tgt)
    before = data_counts(bpy)
    fails(bpy.ops.marionette.retarget, "connected to its parent")
    assert data_counts(bpy) == before and tgt.animation_data is None
    # no mapping: bones with meaningless names
    arm = bpy.data.armatures.new("Plain")
    plain = bpy.data.objects.new("Plain", arm)
    bpy.context.collection.objects.link(plain)
    bpy.context.view_layer.objects.active = plain
    bpy.ops.object.mode_set(mode="EDIT")
    for i in range(3):
        eb = arm.edit_bones.new("Bone")
        eb.head, eb.tail = (0, 0, i), (0, 0, i + 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    select(bpy, src, plain)
    before = data_counts(bpy)
    fails(bpy.ops.marionette.retarget, "no bone map matches")
    assert data_counts(bpy) == before and plain.animation_data is None


def test_detect_mapping_fills_panel_map(blender):
    bpy = blender
    src = make_armature(bpy, "Src", 0, prefix="mixamorig:")
    tgt = make_armature(bpy, "Tgt", 1)
    select(bpy, src, tgt)
    assert hasattr(bpy.types, "MARIONETTE_PT_retarget") and hasattr(bpy.types, "MARIONETTE_UL_bone_map")
    assert bpy.ops.marionette.retarget_detect() == {"FINISHED"}
    assert tgt["marionette_rig_name"].startswith("Rigify") and src["marionette_rig_name"].startswith("Mixamo")
    m = {it.canonical: it.bone for it in tgt.marionette_bone_map}
    assert m["left_knee"] == "shin.L" and m["pelvis"] == "spine"
    assert {it.canonical: it.bone for it in src.marionette_bone_map}["left_hip"] == "mixamorig:LeftUpLeg"
    # a user's edit is used: swap the legs -> the right shin now follows the source's left leg
    items = {it.canonical: it for it in tgt.marionette_bone_map}
    for j in ("hip", "knee", "ankle", "foot"):
        items[f"left_{j}"].bone, items[f"right_{j}"].bone = items[f"right_{j}"].bone, items[f"left_{j}"].bone
    animate(bpy, src)
    select(bpy, src, tgt)
    assert bpy.ops.marionette.retarget(pin_feet=False) == {"FINISHED"}
    bpy.context.scene.frame_set(7)
    assert world_dir(bpy, src, "mixamorig:LeftLeg") @ world_dir(bpy, tgt, "shin.R") > math.cos(math.radians(1.0))
    tgt.animation_data_clear()
    # point a bone at one that does not exist -> clear error, nothing changed
    items["left_knee"].bone = "nope"
    select(bpy, src, tgt)
    fails(bpy.ops.marionette.retarget, "names bones it does not have: nope")
    assert tgt.animation_data is None


def test_resample_motion_doubles_rate_and_keeps_keys(blender):
    bpy = blender
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    src = make_armature(bpy, "Src", 0)
    animate(bpy, src)
    bpy.context.view_layer.objects.active = src
    scene.frame_set(7)
    q_before = np.array(src.pose.bones["LeftUpLeg"].rotation_quaternion)
    loc_before = np.array(src.pose.bones["Hips"].location)
    assert bpy.ops.marionette.resample_motion(fps=48) == {"FINISHED"}
    assert scene.render.fps == 48 and scene.frame_end == 1 + 2 * 23
    scene.frame_set(1 + 2 * 6)  # old frame 7 at the new rate
    q_after = np.array(src.pose.bones["LeftUpLeg"].rotation_quaternion)
    assert abs(abs(q_before @ q_after) - 1) < 1e-5
    assert np.allclose(np.array(src.pose.bones["Hips"].location), loc_before, atol=1e-5)


def test_resample_without_animation_is_reported(blender):
    bpy = blender
    src = make_armature(bpy, "Src", 0)
    bpy.context.view_layer.objects.active = src
    fails(bpy.ops.marionette.resample_motion, "no animation", fps=30)


def test_motion_transfer_between_imported_skeletons(blender, tmp_path):
    """Actor A's motion onto actor B's imported armature (joints at bone tails): B keeps its bone lengths,
    limbs take A's directions, read back through the add-on's own pose reader."""
    import importlib

    from engine.io.skeleton_file import SkeletonSequence, save_skeleton
    from engine.body.joint_sets import get_joint_set

    bpy = blender
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    js = get_joint_set("SMPL_24")
    rest = np.array([REST[n] for n in js.names], float)
    T = 30
    t = np.arange(T) / 30.0
    A = np.repeat(rest[None], T, axis=0)
    idx = {n: i for i, n in enumerate(js.names)}
    for k in range(T):  # A lifts its left arm and walks forward
        sh = A[k, idx["left_shoulder"]]
        ang = 0.8 * np.sin(np.pi * t[k])
        for j in ("left_elbow", "left_wrist", "left_hand"):
            v = rest[idx[j]] - rest[idx["left_shoulder"]]
            A[k, idx[j]] = sh + np.array([v[0] * np.cos(ang), 0, v[0] * np.sin(ang)])
    A[:, :, 1] -= 0.3 * t[:, None]
    Bj = rest * np.array([1.0, 1.0, 1.15])  # a taller actor
    Bj[:, 2] -= Bj[:, 2].min() - 0.02
    save_skeleton(tmp_path / "a.npz", SkeletonSequence(A, js, 30.0))
    save_skeleton(tmp_path / "b.npz", SkeletonSequence(np.repeat(Bj[None], 3, axis=0), js, 30.0))
    assert bpy.ops.marionette.import_skeleton(filepath=str(tmp_path / "a.npz"), object_name="A") == {"FINISHED"}
    assert bpy.ops.marionette.import_skeleton(filepath=str(tmp_path / "b.npz"), object_name="B") == {"FINISHED"}
    a, b = bpy.data.objects["A"], bpy.data.objects["B"]
    select(bpy, a, b)
    assert bpy.ops.marionette.retarget(pin_feet=True) == {"FINISHED"}
    pose_read = importlib.import_module(MODULE + ".pose_read")
    for f in (1, 10, 20, 30):
        scene.frame_set(f)
        ja = pose_read.evaluated_joints(a)
        jb = pose_read.evaluated_joints(b)
        for j, p in enumerate(js.parents):
            if p < 0:
                continue
            lb = np.linalg.norm(jb[j] - jb[p])
            assert abs(lb - np.linalg.norm(Bj[j] - Bj[p])) < 1e-4  # B's own bone lengths
        for c, p in (("left_wrist", "left_elbow"), ("left_elbow", "left_shoulder")):
            da, db = ja[idx[c]] - ja[idx[p]], jb[idx[c]] - jb[idx[p]]
            cos = da @ db / np.linalg.norm(da) / np.linalg.norm(db)
            assert cos > np.cos(np.radians(1.0))


@pytest.mark.slow
def test_real_capture_onto_mixamo_armature_in_blender(blender, tmp_path):
    """The bundled capture, triangulated, imported and retargeted onto a Mixamo-named armature in Blender:
    where the source's feet are planted, the target's stay put."""
    from engine.cli import main as cli_main
    from engine.motion.retarget import detect_contacts
    from engine.io.skeleton_file import load_skeleton

    bpy = blender
    demo = ROOT / "engine" / "data" / "pose2sim_demo"
    cap = tmp_path / "cap.npz"
    assert cli_main(["triangulate", str(demo / "pose"), "--calib", str(demo / "Calib.qca.txt"), "--fps", "60",
                     "-o", str(cap)]) == 0
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 60, 1.0
    assert bpy.ops.marionette.import_skeleton(filepath=str(cap), object_name="Capture") == {"FINISHED"}
    src = bpy.data.objects["Capture"]
    tgt = make_armature(bpy, "Mixamo", 0, prefix="mixamorig:", a_pose=True)
    select(bpy, src, tgt)
    assert bpy.ops.marionette.retarget() == {"FINISHED"}
    import importlib

    from engine.motion.retarget import _floor_height

    pose_read = importlib.import_module(MODULE + ".pose_read")
    js = load_skeleton(cap).joint_set
    lo, hi = (int(v) for v in src.animation_data.action.frame_range)
    ankle, joints = [], []
    for f in range(lo, hi + 1):
        scene.frame_set(f)
        ev = tgt.evaluated_get(bpy.context.evaluated_depsgraph_get())
        ankle.append(np.array(ev.matrix_world @ ev.pose.bones["mixamorig:LeftFoot"].head))
        joints.append(pose_read.evaluated_joints(src))
    ankle, joints = np.array(ankle), np.array(joints)
    # contacts as the operator detected them: on the source armature's evaluated joints
    up = np.array([0.0, 0.0, 1.0])
    floor = _floor_height({c: joints[:, j] for j, c in enumerate(js.canonical)}, up)
    planted = detect_contacts(joints[:, js.index("LAnkle")], up, 60.0, floor)
    both = planted[1:] & planted[:-1]
    assert both.sum() > 10
    step = np.linalg.norm(np.diff(ankle[:, :2], axis=0), axis=-1)[both]
    assert np.mean(step) < 0.0005 and np.max(step) < 0.003  # metres per frame


def test_resample_object_euler_and_location_by_time(blender):
    bpy = blender
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    obj = bpy.data.objects.new("Empty", None)
    bpy.context.collection.objects.link(obj)
    for f in range(1, 25):
        t = (f - 1) / 24.0
        obj.location = (np.sin(2 * t), t * t, 0.0)
        obj.rotation_euler = (0.5 * t, 0.0, np.cos(t))
        obj.keyframe_insert("location", frame=f)
        obj.keyframe_insert("rotation_euler", frame=f)
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.marionette.resample_motion(fps=30) == {"FINISHED"}
    assert scene.render.fps == 30 and scene.frame_end == 1 + int(23 / 24 * 30)  # keys on the grid within the span
    for f30 in (1, 6, 11, 21):  # times k/30 s: compare with the analytic motion
        t = (f30 - 1) / 30.0
        scene.frame_set(f30)
        assert np.allclose(obj.location[:], (np.sin(2 * t), t * t, 0.0), atol=2e-3)
        assert np.allclose(obj.rotation_euler[:], (0.5 * t, 0.0, np.cos(t)), atol=2e-3)


def test_retarget_carries_forearm_roll(blender):
    """A roll of the source forearm about its own axis moves no joint, yet reaches the target's forearm."""
    from mathutils import Quaternion

    bpy = blender
    src = make_armature(bpy, "Src", 0, prefix="mixamorig:")
    tgt = make_armature(bpy, "Tgt", 1, a_pose=True)
    fore = src.pose.bones["mixamorig:LeftForeArm"]
    fore.rotation_mode = "QUATERNION"
    for f in range(1, 11):
        fore.rotation_quaternion = Quaternion((0.0, 1.0, 0.0), 0.1 * f)  # about the bone's own Y axis
        fore.keyframe_insert("rotation_quaternion", frame=f)
    select(bpy, src, tgt)
    assert bpy.ops.marionette.retarget(pin_feet=False) == {"FINISHED"}
    for f in (3, 8):
        bpy.context.scene.frame_set(f)
        q = tgt.pose.bones["forearm.L"].rotation_quaternion
        axis, angle = q.to_axis_angle()
        assert abs(angle - 0.1 * f) < 1e-3 and abs(abs(axis[1]) - 1) < 1e-3
