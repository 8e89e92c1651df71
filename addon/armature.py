"""Armatures (and skinned meshes) from ``engine.body.kinematics.Rig`` arrays.

The math lives in ``engine``; this module only turns arrays into datablocks. Every
datablock is registered with the caller's ``compat.Transaction`` so a failure
anywhere removes everything again.

Custom properties written on the armature object (read by ``pose_read`` and by
later tools):

* ``obj["marionette_joint_set"]``   joint set name (``engine.body.joint_sets``); absent on a generic
  skeleton (joint names of no known set), whose joints are its bones
* ``obj["marionette_joint_bones"]`` bone name holding each joint, in joint order
* ``obj["marionette_joint_at_tail"]`` 1 if the joint is the bone's tail, 0 for its head
* ``obj["marionette_source"]``, ``obj["marionette_fps"]`` the file and the keyed frame rate
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from engine.body.joint_sets import JOINT_SETS
from engine.body.kinematics import Rig

from . import fcurves

JOINT_SET_PROP = "marionette_joint_set"
JOINT_BONES_PROP = "marionette_joint_bones"
JOINT_AT_TAIL_PROP = "marionette_joint_at_tail"


def create_armature(context, tx, name: str, rig: Rig) -> "bpy.types.Object":
    """Link a new armature object with the rig's rest bones; returns the object.

    ``rig.heads``/``rest_rotations`` are updated in place with the values Blender
    actually stored (float32, its own roll handling), so keyed rotations computed
    afterwards match the armature exactly.
    """
    arm = tx.add(bpy.data.armatures.new(name))
    obj = tx.add(bpy.data.objects.new(name, arm))
    context.collection.objects.link(obj)
    for o in context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    arm.display_type = "OCTAHEDRAL"
    obj.show_in_front = True

    bpy.ops.object.mode_set(mode="EDIT")
    try:
        ebs = []
        for b, bname in enumerate(rig.bone_names):
            eb = arm.edit_bones.new(bname)
            if eb.name != bname:
                raise RuntimeError(f"bone name {bname!r} is not unique or too long")
            L = float(np.linalg.norm(rig.tails[b] - rig.heads[b]))
            eb.head = rig.heads[b].tolist()
            eb.tail = (rig.heads[b] + np.array([0.0, L, 0.0])).tolist()
            M = np.eye(4)
            M[:3, :3] = rig.rest_rotations[b]
            M[:3, 3] = rig.heads[b]
            eb.matrix = Matrix(M.tolist())
            eb.use_deform = True
            ebs.append(eb)
        for b, eb in enumerate(ebs):
            p = int(rig.parents[b])
            if p >= 0:
                eb.parent = ebs[p]
                eb.use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")

    # read back what Blender stored
    B = rig.num_bones
    buf = np.empty(16 * B, dtype=np.float32)
    names = [bone.name for bone in arm.bones]
    arm.bones.foreach_get("matrix_local", buf)
    mats = buf.reshape(B, 4, 4).transpose(0, 2, 1).astype(np.float64)
    lengths = np.empty(B, dtype=np.float32)
    arm.bones.foreach_get("length", lengths)
    order = [names.index(n) for n in rig.bone_names]
    mats, lengths = mats[order], lengths[order].astype(np.float64)
    rig.rest_rotations = mats[:, :3, :3]
    rig.heads = mats[:, :3, 3]
    rig.tails = rig.heads + rig.rest_rotations[:, :, 1] * lengths[:, None]

    js_name = rig.joint_set.name if rig.joint_set is not None else ""
    if js_name in JOINT_SETS:  # a generic skeleton (names of no known set) has none
        obj[JOINT_SET_PROP] = js_name
    obj[JOINT_BONES_PROP] = [rig.bone_names[b] for b in rig.joint_bone]
    obj[JOINT_AT_TAIL_PROP] = [int(x) for x in rig.joint_at_tail]
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return obj


def key_animation(tx, obj, rig: Rig, quats: np.ndarray, root_location: np.ndarray, start_frame: int,
                  action_name: str, frame_offsets=None) -> "bpy.types.Action":
    """Key rotations [T, B, 4] and root location [T, 3] (NaN = gap) on frames
    ``start_frame + frame_offsets`` (default 0, 1, 2, ...)."""
    action = tx.add(fcurves.new_action(action_name))
    fcurves.assign_action(obj, action)
    T = quats.shape[0]
    offsets = np.arange(T) if frame_offsets is None else np.asarray(frame_offsets)
    frames = start_frame + offsets.astype(np.float64)
    for b, bname in enumerate(rig.bone_names):
        pb = obj.pose.bones[bname]
        path = pb.path_from_id("rotation_quaternion")
        for i in range(4):
            fc = fcurves.ensure_fcurve(action, obj, path, i, group=bname)
            fcurves.write_keys(fc, frames, quats[:, b, i])
    root = obj.pose.bones[rig.bone_names[rig.root]]
    path = root.path_from_id("location")
    for i in range(3):
        fc = fcurves.ensure_fcurve(action, obj, path, i, group=root.name)
        fcurves.write_keys(fc, frames, root_location[:, i])
    return action


def create_skinned_mesh(context, tx, name: str, obj_arm, vertices: np.ndarray, faces: np.ndarray,
                        weights: np.ndarray, bone_names: list[str], shape_dirs: np.ndarray | None = None,
                        shape_values: np.ndarray | None = None) -> "bpy.types.Object":
    """A mesh (rest vertices [V, 3], triangles [F, 3]) skinned to ``obj_arm`` by weights [V, B]
    (one vertex group per bone), with shape keys ``beta_k`` from shape_dirs [V, 3, K]."""
    V = len(vertices)
    mesh = tx.add(bpy.data.meshes.new(name))
    mesh.vertices.add(V)
    mesh.vertices.foreach_set("co", np.asarray(vertices, np.float32).ravel())
    faces = np.asarray(faces, dtype=np.int32)
    F = len(faces)
    mesh.loops.add(3 * F)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(F)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * F, 3, dtype=np.int32))
    mesh.polygons.foreach_set("loop_total", np.full(F, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate(verbose=False)
    obj = tx.add(bpy.data.objects.new(name, mesh))
    context.collection.objects.link(obj)

    W = np.asarray(weights, dtype=np.float64)
    for b, bname in enumerate(bone_names):
        vg = obj.vertex_groups.new(name=bname)
        idx = np.flatnonzero(W[:, b] > 0)
        # one add() per distinct weight value (SMPL weights repeat a lot), not per vertex
        wv = W[idx, b]
        for value in np.unique(wv):
            vg.add(idx[wv == value].tolist(), float(value), "REPLACE")

    if shape_dirs is not None and shape_dirs.shape[-1] > 0:
        obj.shape_key_add(name="Basis", from_mix=False)
        tx.add(mesh.shape_keys)
        base = np.asarray(vertices, np.float64)
        for k in range(shape_dirs.shape[-1]):
            key = obj.shape_key_add(name=f"beta_{k:02d}", from_mix=False)
            key.slider_min, key.slider_max = -10.0, 10.0
            key.data.foreach_set("co", (base + shape_dirs[:, :, k]).astype(np.float32).ravel())
            key.value = float(shape_values[k]) if shape_values is not None and k < len(shape_values) else 0.0

    obj.parent = obj_arm
    mod = obj.modifiers.new("Armature", "ARMATURE")
    mod.object = obj_arm
    mod.use_vertex_groups = True
    return obj
