"""Small Blender-version and bookkeeping helpers shared by the add-on's operators.

``Transaction`` makes an operator all-or-nothing: every datablock it creates is
registered with it, and if anything fails they are all removed again and the
scene's frame range, active object and selection are put back, so a cancelled
import leaves ``bpy.data`` exactly as it was (and nothing stray for undo to keep).
Other settings an operator changes (frame rate, resolution, the scene camera) go
through ``tx.set(owner, "attr", value)``, which puts the old value back on failure.
"""

from __future__ import annotations

import bpy

BLENDER_VERSION = tuple(bpy.app.version)



def addon_preferences(context=None):
    """This add-on's preferences, or None when it is not enabled as an add-on (e.g. the
    package imported straight from the source tree in tests)."""
    context = context or bpy.context
    package = __package__
    entry = context.preferences.addons.get(package)
    return entry.preferences if entry is not None else None


def ensure_object_mode(context) -> None:
    """Leave edit/pose mode so new armatures can be built (importers always work in object mode)."""
    if context.mode != "OBJECT" and context.view_layer.objects.active is not None:
        bpy.ops.object.mode_set(mode="OBJECT")


class Transaction:
    """Track created datablocks; on failure remove them and restore scene state.

        with Transaction(context) as tx:
            arm = tx.add(bpy.data.armatures.new("x"))
            ...
        # an exception inside the block removed everything added, then re-raised
    """

    def __init__(self, context):
        self.context = context
        self.created = []
        self.changed = []  # (owner, attribute, old value), in the order they were set

    def add(self, datablock):
        self.created.append(datablock)
        return datablock

    def set(self, owner, attr: str, value) -> None:
        """``setattr(owner, attr, value)``, restored to its old value if the transaction fails."""
        self.changed.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def __enter__(self):
        ctx = self.context
        scene = ctx.scene
        self._frames = (scene.frame_start, scene.frame_end, scene.frame_current)
        self._active = ctx.view_layer.objects.active
        self._selected = [o for o in ctx.view_layer.objects if o.select_get()]
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        self.rollback()
        return False

    def rollback(self) -> None:
        ctx = self.context
        try:
            if ctx.mode != "OBJECT" and ctx.view_layer.objects.active is not None:
                bpy.ops.object.mode_set(mode="OBJECT")
        except RuntimeError:
            pass
        for owner, attr, old in reversed(self.changed):
            try:
                setattr(owner, attr, old)
            except (ReferenceError, AttributeError, TypeError, ValueError):
                pass  # its owner was created (and is removed below) by this transaction
        self.changed.clear()
        alive = []
        for block in self.created:
            try:
                block.name  # noqa: B018 - raises once Blender has freed it
            except ReferenceError:
                continue
            if block not in alive:
                alive.append(block)
        if alive:
            # batch_remove also unlinks users (an object from its collections) in one go
            bpy.data.batch_remove(ids=alive)
        self.created.clear()
        scene = ctx.scene
        scene.frame_start, scene.frame_end = self._frames[0], self._frames[1]
        scene.frame_set(self._frames[2])
        for o in ctx.view_layer.objects:
            o.select_set(o in self._selected)
        if self._active is None or self._active.name in bpy.data.objects:
            ctx.view_layer.objects.active = self._active
