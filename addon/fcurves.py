"""The one place that knows how actions and F-curves differ across Blender versions.

* 4.2/4.3: ``action.fcurves`` holds the F-curves; no slots.
* 4.4+: slotted actions (``action.slots``, ``action.layers[..].strips[..]``,
  ``strip.channelbag(slot, ensure=True).fcurves``); ``action.fcurves`` still exists
  as a legacy proxy up to 4.5.
* 5.0: ``Action.fcurves`` is gone; only the channelbag path works.

Everything else in the add-on (and other engineers' operators) goes through these
functions:

    action = new_action("walk")
    assign_action(obj, action)            # creates/uses a slot on 4.4+
    fc = ensure_fcurve(action, obj, 'pose.bones["hip"].rotation_quaternion', 0, group="hip")
    write_keys(fc, frames, values)        # bulk: keyframe_points.add + foreach_set
    for fc in action_fcurves(action, obj): ...
    frames, values = read_keys(fc)

Keys are written in bulk (``keyframe_points.add(n)`` then ``foreach_set("co", ...)``),
about 600x faster than ``keyframe_insert`` loops.
"""

from __future__ import annotations

import bpy
import numpy as np

# F-curve keyframe interpolation enum values, for foreach_set
_INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1, "BEZIER": 2}

HAS_SLOTS = hasattr(bpy.types, "ActionSlot")


def new_action(name: str) -> "bpy.types.Action":
    return bpy.data.actions.new(name)


def _slot_for(action, obj, create: bool = True):
    """The action slot that animates ``obj`` (4.4+), created when missing."""
    ad = obj.animation_data
    if ad is not None and ad.action == action and getattr(ad, "action_slot", None) is not None:
        return ad.action_slot
    id_type = obj.id_type if hasattr(obj, "id_type") else "OBJECT"
    for slot in action.slots:
        if slot.target_id_type in (id_type, "UNSPECIFIED") and slot.name_display == obj.name:
            return slot
    if not create:
        return None
    return action.slots.new(id_type=id_type, name=obj.name)


def assign_action(obj, action) -> None:
    """Make ``action`` animate ``obj`` (on 4.4+ through a slot named after the object)."""
    ad = obj.animation_data or obj.animation_data_create()
    if HAS_SLOTS:
        slot = _slot_for(action, obj)
        ad.action = action
        if ad.action_slot != slot:
            ad.action_slot = slot
    else:
        ad.action = action


def _channelbag(action, obj, create: bool):
    slot = _slot_for(action, obj, create=create)
    if slot is None:
        return None
    if len(action.layers) == 0:
        if not create:
            return None
        action.layers.new("Layer")
    layer = action.layers[0]
    if len(layer.strips) == 0:
        if not create:
            return None
        layer.strips.new(type="KEYFRAME")
    strip = layer.strips[0]
    if create:
        return strip.channelbag(slot, ensure=True)
    return strip.channelbag(slot)


def action_fcurves(action, obj=None):
    """The F-curves of ``action`` (for ``obj``'s slot on 4.4+; all slots when obj is None)."""
    if not HAS_SLOTS:
        return list(action.fcurves)
    if obj is not None:
        bag = _channelbag(action, obj, create=False)
        return list(bag.fcurves) if bag is not None else []
    out = []
    for layer in action.layers:
        for strip in layer.strips:
            for bag in getattr(strip, "channelbags", ()):
                out.extend(bag.fcurves)
    return out


def find_fcurve(action, obj, data_path: str, index: int = 0):
    for fc in action_fcurves(action, obj):
        if fc.data_path == data_path and fc.array_index == index:
            return fc
    return None


def ensure_fcurve(action, obj, data_path: str, index: int = 0, group: str = ""):
    """The F-curve for (data_path, index), created (in ``group``) when missing."""
    fc = find_fcurve(action, obj, data_path, index)
    if fc is not None:
        return fc
    if not HAS_SLOTS:
        return action.fcurves.new(data_path, index=index, action_group=group)
    bag = _channelbag(action, obj, create=True)
    return bag.fcurves.new(data_path, index=index, group_name=group)



def write_keys(fcurve, frames, values, interpolation: str = "LINEAR", replace: bool = True) -> int:
    """Key ``values`` at ``frames`` (1-D, same length) in bulk; NaN values are skipped (a gap).

    Returns the number of keys written. ``replace`` clears existing keys first.
    """
    frames = np.asarray(frames, dtype=np.float64).ravel()
    values = np.asarray(values, dtype=np.float64).ravel()
    if frames.shape != values.shape:
        raise ValueError(f"write_keys: {len(frames)} frames but {len(values)} values")
    ok = np.isfinite(frames) & np.isfinite(values)
    frames, values = frames[ok], values[ok]
    kp = fcurve.keyframe_points
    if replace and len(kp):
        kp.clear()
    n = len(frames)
    if n == 0:
        return 0
    start = len(kp)
    kp.add(n)
    if start == 0:
        co = np.empty(2 * n, dtype=np.float32)
        co[0::2] = frames
        co[1::2] = values
        kp.foreach_set("co", co)
        kp.foreach_set("interpolation", np.full(n, _INTERPOLATION[interpolation], dtype=np.int32))
    else:
        # appending to existing keys: set the new ones only (rare; keeps it simple)
        for i in range(n):
            p = kp[start + i]
            p.co = (frames[i], values[i])
            p.interpolation = interpolation
    fcurve.update()
    return n


def read_keys(fcurve) -> tuple[np.ndarray, np.ndarray]:
    """(frames, values) of every key, as float64 arrays."""
    n = len(fcurve.keyframe_points)
    co = np.empty(2 * n, dtype=np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    return co[0::2].astype(np.float64), co[1::2].astype(np.float64)
