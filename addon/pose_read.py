"""Read an armature's evaluated pose back into joint positions (world space).

    joints = evaluated_joints(obj, depsgraph)   # [J, 3] float64, the armature's joint set order

Works on any armature imported by Marionette (it reads the custom properties
``marionette_joint_bones``/``marionette_joint_at_tail`` that ``armature.py`` writes);
the render engine calls it every frame, so it reads all bones in bulk with
``foreach_get`` and leaves the math to ``engine.body.kinematics.joints_from_pose``.
"""

from __future__ import annotations

import bpy
import numpy as np

from engine import MarionetteError
from engine.body.kinematics import joints_from_pose

from .armature import JOINT_AT_TAIL_PROP, JOINT_BONES_PROP, JOINT_SET_PROP


def joint_set_name(obj) -> str:
    """The joint set an imported armature holds ('' when it is not a Marionette armature)."""
    return str(obj.get(JOINT_SET_PROP, "")) if obj is not None else ""


def pose_matrices(obj, depsgraph=None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(bone names, world-space pose matrices [B, 4, 4], bone lengths [B]) of the evaluated pose."""
    if obj is None or obj.type != "ARMATURE":
        raise MarionetteError(f"{getattr(obj, 'name', obj)!r} is not an armature")
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    bones = ev.pose.bones
    B = len(bones)
    buf = np.empty(16 * B, dtype=np.float32)
    bones.foreach_get("matrix", buf)  # column-major per bone
    P = buf.reshape(B, 4, 4).transpose(0, 2, 1).astype(np.float64)
    lengths = np.empty(B, dtype=np.float32)
    ev.data.bones.foreach_get("length", lengths)
    names = [pb.name for pb in bones]
    world = np.array(ev.matrix_world, dtype=np.float64)
    return names, world @ P, lengths.astype(np.float64)


def evaluated_joints(obj, depsgraph=None) -> np.ndarray:
    """World positions [J, 3] of the armature's joints (its ``marionette_joint_set`` order)."""
    if JOINT_BONES_PROP not in obj:
        raise MarionetteError(f"armature {obj.name!r} has no '{JOINT_BONES_PROP}' property; "
                              "import it with Marionette (File > Import) first")
    joint_bones = [str(n) for n in obj[JOINT_BONES_PROP]]
    at_tail = np.asarray([int(v) for v in obj[JOINT_AT_TAIL_PROP]], dtype=bool)
    names, P, lengths = pose_matrices(obj, depsgraph)
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in joint_bones if n not in index]
    if missing:
        raise MarionetteError(f"armature {obj.name!r} lost bones {missing} that hold its joints")
    jb = np.array([index[n] for n in joint_bones], dtype=np.int64)
    return joints_from_pose(lengths, P, jb, at_tail)
