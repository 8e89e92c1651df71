"""The Marionette render engine: neural renders of learned actors through any Blender camera.

Blender glue only: this module reads the scene camera and every visible armature
bound to an actor, hands plain arrays to ``engine.scene.shot.render_shot`` and writes
the pixels back. Colour contract: the decoder produces straight sRGB; we write
scene-linear premultiplied pixels (Blender's internal convention), so with the
'Standard' view transform (no look, exposure 0, gamma 1) and dither 0 the saved PNG
holds exactly what the decoder produced. Other view transforms are honoured
(the artist may want them) but reported once per render.
"""

from __future__ import annotations

import os
import time

import bpy
import numpy as np

from engine import MarionetteError

ENGINE_ID = "MARIONETTE"

# Last render's figures, for scripts/bench_blender_render.py and the statistics line.
LAST_STATS: dict = {}

# Built-in panels that make sense for this engine.
_COMPAT_PANELS = (
    "RENDER_PT_format", "RENDER_PT_format_presets", "RENDER_PT_frame_range", "RENDER_PT_time_stretching",
    "RENDER_PT_output", "RENDER_PT_output_views", "RENDER_PT_encoding", "RENDER_PT_encoding_video",
    "RENDER_PT_encoding_audio", "RENDER_PT_output_color_management", "RENDER_PT_color_management",
    "RENDER_PT_color_management_curves", "RENDER_PT_color_management_display_settings",
    "RENDER_PT_color_management_white_balance", "RENDER_PT_post_processing", "RENDER_PT_stamp",
    "RENDER_PT_stamp_note", "RENDER_PT_stamp_burn", "RENDER_PT_format_presets", "DATA_PT_lens", "DATA_PT_camera",
    "DATA_PT_camera_display", "DATA_PT_camera_display_composition_guides", "DATA_PT_camera_safe_areas",
    "DATA_PT_context_camera", "DATA_PT_custom_props_camera", "WORLD_PT_context_world",
)


def _prefs(context=None):
    from .compat import addon_preferences

    try:
        return addon_preferences(context)
    except Exception:  # preferences not available (e.g. add-on loaded from the source tree)
        return None


def output_resolution(scene) -> tuple[int, int]:
    """Final pixel size: resolution times percentage, as Blender computes it."""
    r = scene.render
    return r.resolution_x * r.resolution_percentage // 100, r.resolution_y * r.resolution_percentage // 100


def camera_from_scene(scene, depsgraph):
    """The scene camera as an ``engine.geometry.camera.Camera`` at the final output resolution."""
    from engine.geometry.camera import from_blender

    cam_obj = scene.camera
    if cam_obj is None:
        raise MarionetteError("the scene has no active camera (Scene Properties > Camera)")
    if cam_obj.type != "CAMERA":
        raise MarionetteError(f"the scene camera {cam_obj.name!r} is not a camera object")
    data = cam_obj.data
    if data.type != "PERSP":
        raise MarionetteError(f"camera {cam_obj.name!r} is {data.type.lower()}; the neural renderer supports "
                              "perspective cameras only (Camera Properties > Lens > Type)")
    r = scene.render
    W, H = output_resolution(scene)
    if W <= 0 or H <= 0:
        raise MarionetteError(f"the output resolution is {W}x{H}; set a positive resolution (Output Properties)")
    ev = cam_obj.evaluated_get(depsgraph)
    return from_blender(np.array(ev.matrix_world), data.lens, data.sensor_width, data.sensor_height,
                        data.sensor_fit, data.shift_x, data.shift_y, W, H, r.pixel_aspect_x, r.pixel_aspect_y,
                        name=cam_obj.name)


def bound_armatures(scene, depsgraph):
    """(object, actor path) for every armature in the render that has an actor bound."""
    out = []
    for ob in depsgraph.objects:
        orig = ob.original
        if orig.type != "ARMATURE" or orig.hide_render:
            continue
        path = getattr(orig, "marionette_actor", "")
        if path:
            out.append((orig, bpy.path.abspath(path)))
    return out


def read_bound_actor(obj, path, depsgraph):
    """(BoundActor, None) for an armature bound to the actor at ``path``, or (None, reason)."""
    from engine.scene.shot import BoundActor

    from .pose_read import evaluated_joints, joint_set_name

    js = joint_set_name(obj)
    if not js:
        return None, "it has no Marionette joint set (import it with File > Import > Marionette)"
    try:
        joints = evaluated_joints(obj, depsgraph)
    except MarionetteError as exc:
        return None, str(exc)
    return BoundActor(name=obj.name, actor_path=path, joints=joints, joint_set=js), None


def gather_actors(scene, depsgraph):
    actors, problems = [], []
    for obj, path in bound_armatures(scene, depsgraph):
        actor, problem = read_bound_actor(obj, path, depsgraph)
        if actor is None:
            problems.append((obj.name, problem))
        else:
            actors.append(actor)
    return actors, problems


def world_background(scene):
    """Straight sRGB RGBA behind the actors: transparent with Film > Transparent, else the world colour."""
    from engine.scene.compositing import linear_to_srgb

    if scene.render.film_transparent:
        return None
    colour = (0.0, 0.0, 0.0)
    world = scene.world
    if world is not None:
        colour = tuple(world.color)
        # Blender 5.0 always shades the world with nodes (use_nodes is deprecated there)
        uses_nodes = bpy.app.version >= (5, 0, 0) or world.use_nodes
        if uses_nodes and world.node_tree is not None:
            for node in world.node_tree.nodes:
                if node.type == "BACKGROUND":
                    c = node.inputs["Color"].default_value
                    s = node.inputs["Strength"].default_value
                    colour = (c[0] * s, c[1] * s, c[2] * s)
                    break
    rgb = linear_to_srgb(np.clip(np.asarray(colour, dtype=np.float32), 0.0, 1.0))
    return np.array([rgb[0], rgb[1], rgb[2], 1.0], dtype=np.float32)


def colour_settings_exact(scene) -> bool:
    vs = scene.view_settings
    return (vs.view_transform == "Standard" and vs.look in ("None", "") and abs(vs.exposure) < 1e-6
            and abs(vs.gamma - 1.0) < 1e-6 and not vs.use_curve_mapping)


def ensure_torch(context=None) -> None:
    """Make torch importable (the preferences' extra folder), or raise a clear error."""
    from engine.scene.shot import add_site_packages

    prefs = _prefs(context)
    folder = getattr(prefs, "torch_path", "") if prefs is not None else ""
    if folder:
        add_site_packages(bpy.path.abspath(folder))
    for module in ("torch", "safetensors"):  # the renderer and the actor files
        try:
            __import__(module)
        except ImportError:
            raise MarionetteError(f"{module} is not available to Blender: set a folder holding PyTorch and "
                                  "safetensors in Preferences > Add-ons > Marionette, or use the 'Install PyTorch' "
                                  "button there") from None


class MarionetteRenderEngine(bpy.types.RenderEngine):
    bl_idname = ENGINE_ID
    bl_label = "Marionette"
    bl_use_preview = False
    bl_use_postprocess = True
    bl_use_shading_nodes_custom = False

    def __init__(self, *args, **kwargs):
        # Blender 4.4+ passes arguments to RenderEngine.__init__; forward them
        super().__init__(*args, **kwargs)
        self._viewport_session = None

    def __del__(self):
        # Blender frees the engine when the viewport leaves Rendered shading: stop its workers
        try:
            session = self._viewport_session
        except (AttributeError, ReferenceError):
            return
        if session is not None:
            session.close()

    # ------------------------------------------------------------------ viewport (Rendered shading)
    def _viewport(self):
        from .viewport import ViewportSession

        session = getattr(self, "_viewport_session", None)
        if session is None:
            session = self._viewport_session = ViewportSession()
        return session

    def view_update(self, context, depsgraph):
        """The depsgraph changed: read poses, binding, visibility and background; ask for a new
        picture when they changed (rendered on worker threads, see addon/viewport.py)."""
        from .viewport import device_name, torch_problem

        session = self._viewport()
        session.error = torch_problem(context)
        if session.error:
            return
        try:
            session.update(depsgraph, list(depsgraph.updates), device=device_name(context))
        except MarionetteError as exc:
            session.error = str(exc)
        except Exception as exc:  # never break Blender's viewport: say what happened
            import traceback

            traceback.print_exc()
            session.error = f"unexpected {type(exc).__name__}: {exc}"
        session.start_polling(self.tag_redraw)

    def view_draw(self, context, depsgraph):
        """Draw the newest picture; a changed view (orbit, zoom, camera, region size) asks for a new one."""
        from .viewport import draw_frame

        session = self._viewport()
        region, rv3d = context.region, context.region_data
        scene = depsgraph.scene
        if session.tracker.ready and not session.error:
            percent = getattr(scene, "marionette_viewport_resolution", 50)
            session.set_view_from_region(region.width, region.height, rv3d.view_matrix, rv3d.window_matrix,
                                         percent)
        frame = session.renderer.latest()
        if (frame is not None and frame.error is None and frame.pixels is not None and session.can_draw
                and not session.draw_error):
            try:
                draw_frame(self, scene, frame, region.width, region.height, session.draw_cache)
            except Exception as exc:  # a GPU API this Blender lacks: report once, stop trying
                import traceback

                traceback.print_exc()
                session.draw_error = f"drawing failed ({type(exc).__name__}: {exc})"
            session.drawn_key = frame.key
        session.start_polling(self.tag_redraw)
        self.update_stats("", session.status())

    def _fail(self, message: str) -> None:
        self.report({"ERROR"}, f"Marionette: {message}")
        try:
            self.error_set(f"Marionette: {message}")
        except AttributeError:
            pass
        print(f"Marionette render error: {message}")

    def render(self, depsgraph):
        scene = depsgraph.scene
        W, H = output_resolution(scene)
        if W <= 0 or H <= 0:
            self._fail(f"the output resolution is {W}x{H}; set a positive resolution")
            return
        result = self.begin_result(0, 0, W, H)
        try:
            pixels, stats = self._render_pixels(scene, depsgraph)
        except MarionetteError as exc:
            self._fail(str(exc))
            self.end_result(result, cancel=True)
            return
        except Exception as exc:  # never take Blender down; say what happened
            import traceback

            traceback.print_exc()
            self._fail(f"unexpected {type(exc).__name__}: {exc}")
            self.end_result(result, cancel=True)
            return
        t0 = time.perf_counter()
        result.layers[0].passes["Combined"].rect.foreach_set(pixels)
        self.end_result(result)
        stats["write"] = time.perf_counter() - t0
        LAST_STATS.clear()
        LAST_STATS.update(stats)
        total = sum(v for k, v in stats.items() if isinstance(v, float))
        self.update_stats("", f"Marionette | {len(stats.get('rendered', []))} actor(s) | {1000 * total:.0f} ms")

    def _render_pixels(self, scene, depsgraph):
        from engine.scene.compositing import to_blender_pixels

        t0 = time.perf_counter()
        ensure_torch()
        from engine.scene.shot import render_shot

        camera = camera_from_scene(scene, depsgraph)
        actors, problems = gather_actors(scene, depsgraph)
        t1 = time.perf_counter()
        for name, reason in problems:
            self.report({"WARNING"}, f"Marionette: skipped {name!r}: {reason}")
        if not actors and not problems:
            self.report({"WARNING"}, "Marionette: no visible armature has an actor bound "
                                     "(Object Properties > Marionette Actor)")
        if not colour_settings_exact(scene):
            self.report({"INFO"}, "Marionette: view transform is not 'Standard' — saved colours differ from "
                                  "the decoder's output")
        prefs = _prefs()
        # preferences when enabled as an add-on; MARIONETTE_DEVICE for scripts on the bpy module
        device = (prefs.device if prefs is not None else os.environ.get("MARIONETTE_DEVICE", "auto")).lower()
        self.update_stats("", f"Marionette | rendering {len(actors)} actor(s)")
        shot = render_shot(camera, actors, device=device, background=world_background(scene),
                           cancelled=self.test_break, progress=self.update_progress)
        for name, reason in shot.skipped:
            self.report({"WARNING"}, f"Marionette: skipped {name!r}: {reason}")
        if actors and not shot.rendered:
            raise MarionetteError("no actor could be rendered: " + "; ".join(r for _, r in shot.skipped))
        if self.test_break():
            raise MarionetteError("render cancelled")
        t2 = time.perf_counter()
        pixels = to_blender_pixels(shot.rgba)
        t3 = time.perf_counter()
        stats = {"read": t1 - t0, "load": shot.timings["load"], "render_decode": shot.timings["render"],
                 "composite": shot.timings["composite"] + (t3 - t2), "rendered": shot.rendered,
                 "skipped": [n for n, _ in shot.skipped], "resolution": (camera.width, camera.height)}
        return pixels, stats


class RENDER_PT_marionette(bpy.types.Panel):
    bl_label = "Marionette"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"
    COMPAT_ENGINES = {ENGINE_ID}

    @classmethod
    def poll(cls, context):
        return context.engine in cls.COMPAT_ENGINES

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        layout.prop(scene.render, "film_transparent", text="Transparent Background")
        if not scene.render.film_transparent and scene.world is not None:
            layout.prop(scene.world, "color", text="Background")
        prefs = _prefs(context)
        if prefs is not None:
            layout.prop(prefs, "device")
        if hasattr(scene, "marionette_viewport_resolution"):
            layout.prop(scene, "marionette_viewport_resolution")
        bound = [o for o in scene.objects if o.type == "ARMATURE" and getattr(o, "marionette_actor", "")]
        layout.label(text=f"{len(bound)} armature(s) with an actor", icon="ARMATURE_DATA")
        if not colour_settings_exact(scene):
            layout.label(text="Use view transform 'Standard' for exact colours", icon="INFO")
        if LAST_STATS:
            ms = {k: 1000 * v for k, v in LAST_STATS.items() if isinstance(v, float)}
            layout.label(text="Last: " + ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items()))


def _compat_panels():
    for name in _COMPAT_PANELS:
        panel = getattr(bpy.types, name, None)
        if panel is not None and hasattr(panel, "COMPAT_ENGINES"):
            yield panel


def register():
    bpy.types.Scene.marionette_viewport_resolution = bpy.props.IntProperty(
        name="Viewport Resolution", subtype="PERCENTAGE", default=50, min=5, max=100,
        description="Size of the neural picture in the viewport's Rendered shading, in percent of the "
                    "viewport's size (a coarse picture comes first, then it is refined up to this size)")
    bpy.utils.register_class(MarionetteRenderEngine)
    bpy.utils.register_class(RENDER_PT_marionette)
    for panel in _compat_panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)


def unregister():
    from .viewport import close_all_sessions

    close_all_sessions()
    for panel in _compat_panels():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)
    bpy.utils.unregister_class(RENDER_PT_marionette)
    bpy.utils.unregister_class(MarionetteRenderEngine)
    del bpy.types.Scene.marionette_viewport_resolution
