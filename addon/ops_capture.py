"""File > Import > Marionette Capture (folder): a capture's cameras and skeleton in one collection.

    bpy.ops.marionette.import_capture(filepath="CAPTURE/capture.json", full_frame_cameras=False,
                                      start_frame=1, up_axis='FILE')

``filepath`` is the capture folder or any file in it (the file browser picks its
``capture.json``). The folder is read with ``engine.io.capture_folder.load_capture``.
What is created, in a new collection named after the folder:

* one camera object per capture camera (``cameras.json``, or with ``full_frame_cameras``
  the uncropped ones of ``cameras_full.json``), named after it; lens, sensor and shift
  come from ``engine.geometry.camera.to_blender``, so with the scene resolution at the
  camera's size Blender projects exactly as the engine does (distortion is dropped);
* the skeleton (``joints3d.npz``) as a keyed armature, through the skeleton importer's
  own code (``ops_import.import_skeleton_sequence``), capture frame ``frames[0]`` on
  ``start_frame``.

The scene gets the capture's frame rate and frame range, the first camera as its
camera and that camera's resolution. All-or-nothing like the other importers
(``compat.Transaction``): on any error ``bpy.data`` and those scene settings are left
as they were.
"""

from __future__ import annotations

import os

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper
from mathutils import Matrix

from engine import MarionetteError
from engine.geometry import axes
from engine.geometry.camera import Camera, from_blender, to_blender

from . import ops_import

UP_AXIS_ITEMS = [("FILE", "From File", "The capture's 'up_axis' (capture.json, else joints3d.npz)")] + [
    item for item in ops_import.UP_AXIS_ITEMS if item[0] != "FILE"]

_PIXEL_TOLERANCE = 0.01  # px: how far Blender's camera may differ from the capture's


def capture_root(filepath: str) -> str:
    """The capture folder from the operator's ``filepath``: a folder, or a file inside one."""
    path = bpy.path.abspath(filepath)
    if os.path.isdir(path) or not os.path.splitext(path)[1]:
        return os.path.normpath(path)
    return os.path.dirname(os.path.normpath(path))


def create_camera(tx, collection, camera: Camera, name: str | None = None) -> "bpy.types.Object":
    """A camera object for ``camera`` (world already in Blender's frame), linked to ``collection``.

    Blender's per-scene settings (resolution, pixel aspect) are stored on the object as
    ``marionette_resolution`` / ``marionette_pixel_aspect``; the projection matches the
    engine's when the scene uses them (see ``apply_render_settings``).
    """
    p = to_blender(camera)
    name = name or camera.name
    data = tx.add(bpy.data.cameras.new(name))
    obj = tx.add(bpy.data.objects.new(name, data))
    collection.objects.link(obj)
    data.sensor_fit = p["sensor_fit"]
    data.sensor_width = p["sensor_width"]
    data.sensor_height = p["sensor_height"]
    data.lens = p["lens"]
    data.shift_x = p["shift_x"]
    data.shift_y = p["shift_y"]
    obj.matrix_world = Matrix(p["matrix_world"])
    obj["marionette_camera"] = camera.name
    obj["marionette_resolution"] = [int(p["resolution_x"]), int(p["resolution_y"])]
    obj["marionette_pixel_aspect"] = [float(p["pixel_aspect_x"]), float(p["pixel_aspect_y"])]
    obj["marionette_K"] = [float(v) for v in camera.K.ravel()]
    obj["marionette_dist"] = [float(v) for v in camera.dist]
    _check_representable(obj, camera, p)
    return obj


def _check_representable(obj, camera: Camera, p: dict) -> None:
    """Read the camera back from what Blender stored (it clamps, e.g., lens to >= 1 mm)."""
    data = obj.data
    back = from_blender(np.array(obj.matrix_world), data.lens, data.sensor_width, data.sensor_height,
                        data.sensor_fit, data.shift_x, data.shift_y, p["resolution_x"], p["resolution_y"],
                        p["pixel_aspect_x"], p["pixel_aspect_y"], name=camera.name)
    err = np.abs(back.K[:2] - camera.K[:2]).max()
    if err > _PIXEL_TOLERANCE:
        got = {k: round(getattr(data, k), 6) for k in ("lens", "sensor_width", "shift_x", "shift_y")}
        want = {k: round(p[k], 6) for k in got}
        raise MarionetteError(f"camera {camera.name!r}: Blender cannot represent its intrinsics K="
                              f"{np.round(camera.K, 3).tolist()} (asked for {want}, Blender stored {got})")


def apply_render_settings(tx, scene, camera_obj) -> None:
    """Scene resolution and pixel aspect of an imported camera (restored if ``tx`` fails)."""
    r = scene.render
    W, H = camera_obj["marionette_resolution"]
    pax, pay = camera_obj["marionette_pixel_aspect"]
    tx.set(r, "resolution_x", int(W))
    tx.set(r, "resolution_y", int(H))
    tx.set(r, "resolution_percentage", 100)
    tx.set(r, "pixel_aspect_x", float(pax))
    tx.set(r, "pixel_aspect_y", float(pay))


class MARIONETTE_OT_import_capture(bpy.types.Operator, ImportHelper):
    """Import a capture folder's cameras and skeleton (pick its capture.json) into a new collection"""

    bl_idname = "marionette.import_capture"
    bl_label = "Import Marionette Capture"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: StringProperty(default="capture.json", options={"HIDDEN"})
    full_frame_cameras: BoolProperty(
        name="Full-Frame Cameras", default=False,
        description="Import the uncropped video cameras of cameras_full.json (written by 'marionette ingest') "
                    "instead of the capture's own (cropped) cameras")
    start_frame: IntProperty(name="Start Frame", default=1, description="Scene frame of the capture's first frame")
    up_axis: EnumProperty(name="Up Axis", items=UP_AXIS_ITEMS, default="FILE",
                          description="The capture's up axis, converted to Blender's Z-up (cameras and skeleton)")

    def execute(self, context):
        if not self.filepath:
            self.report({"ERROR"}, "No capture folder selected")
            return {"CANCELLED"}
        return ops_import.run_import(self, context)

    def build(self, context, tx, wm):
        from engine.io.capture_folder import load_capture

        root = capture_root(self.filepath)
        cap = load_capture(root, require_masks=False)
        cameras = cap.full_frame_cameras() if self.full_frame_cameras else cap.cameras
        up = cap.up_axis if self.up_axis == "FILE" else self.up_axis
        C = axes.up_axis_matrix(up)
        wm.progress_update(10)

        scene = context.scene
        name = os.path.basename(root) or "Capture"
        coll = tx.add(bpy.data.collections.new(name))
        context.collection.children.link(coll)
        coll["marionette_capture"] = str(cap.root)
        coll["marionette_first_frame"] = int(cap.frames[0])
        coll["marionette_start_frame"] = int(self.start_frame)

        cam_objs = [create_camera(tx, coll, cam.in_world(C), cam.name) for cam in cameras]
        apply_render_settings(tx, scene, cam_objs[0])
        tx.set(scene, "camera", cam_objs[0])
        wm.progress_update(20)

        frames = np.asarray(cap.frames, dtype=np.float64)
        progress = lambda value: wm.progress_update(20 + 0.8 * value)  # noqa: E731
        arm, offsets, gaps = ops_import.import_skeleton_sequence(
            context, tx, cap.skeleton, name, str(cap.root / "joints3d.npz"), cap.fps, self.start_frame, up,
            times=frames / cap.fps, progress=progress)
        coll.objects.link(arm)
        for other in [c for c in arm.users_collection if c != coll]:
            other.objects.unlink(arm)
        arm.select_set(True)
        context.view_layer.objects.active = arm

        # the scene plays the capture: its frame rate and frames (Transaction restores the range)
        fps = int(max(1, round(cap.fps)))
        tx.set(scene.render, "fps", fps)
        tx.set(scene.render, "fps_base", fps / cap.fps)
        scene.frame_start = int(self.start_frame)
        scene.frame_end = int(self.start_frame + (offsets[-1] if len(offsets) else 0))
        scene.frame_set(scene.frame_start)
        wm.progress_update(100)

        notes = []
        if any(c.has_distortion for c in cameras):
            notes.append("lens distortion dropped (Blender cameras are pinholes)")
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) > 1:
            notes.append(f"cameras differ in size; scene resolution set for '{cam_objs[0].name}' "
                         f"(each camera's is in its 'marionette_resolution')")
        if gaps:
            notes.append(f"{gaps} bone-frames missing, left as gaps")
        kind = "full-frame " if self.full_frame_cameras else ""
        return (f"Imported capture '{coll.name}': {len(cam_objs)} {kind}cameras and {cap.skeleton.num_frames} "
                f"frames of {cap.joint_set.name} as '{arm.name}' at {cap.fps:g} fps"
                + (f" ({'; '.join(notes)})" if notes else ""))


def menu_import(self, context):
    self.layout.operator(MARIONETTE_OT_import_capture.bl_idname, text="Marionette Capture (folder)")


CLASSES = (MARIONETTE_OT_import_capture,)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
