"""Primitive overlay: each bound actor's Gaussians as wireframe ellipsoids in Solid shading.

Toggled by ``Scene.marionette_show_primitives`` (Object Properties > Marionette Actor), at one or
two standard deviations (``Scene.marionette_primitive_sigma``). A ``SpaceView3D`` draw handler
(``POST_VIEW``) draws, for every visible armature with an actor, the lines that
``engine.scene.overlay.actor_wireframe`` computes from ``actor.primitives(joints)``: the subject's
left side blue, the right side red, the middle yellow. Only the drawing is here; the geometry
is cached per armature until its pose, actor or the sigma change.

An actor is loaded on a worker thread the first time it is shown (PyTorch import and the
actor file), so switching the overlay on never freezes Blender; the viewport is redrawn
when it is ready.
"""

from __future__ import annotations

import os
import threading

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty

from engine import MarionetteError

SIDE_COLOURS = {-1: (0.25, 0.6, 1.0, 0.9), 0: (1.0, 0.85, 0.25, 0.9), 1: (1.0, 0.35, 0.3, 0.9)}
LINE_WIDTH = 1.5

_handle = None
_geometry: dict = {}       # armature name -> (key, vertices [2S, 3] float32, colours [2S, 4] float32)
_batches: dict = {}        # armature name -> (key, GPU batch)
_loads: dict = {}          # actor folder -> "loading" | "ready" | error message
_lock = threading.Lock()
_cache = None


def _actor_cache():
    global _cache
    if _cache is None:
        from engine.scene.shot import ActorCache

        _cache = ActorCache()
    return _cache


def _redraw_viewports() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def request_actor(path: str, background: bool = True):
    """The loaded actor at ``path`` (CPU), or None while it loads on a worker thread; a
    MarionetteError when loading failed. ``background=False`` loads at once (scripts, tests)."""
    with _lock:
        state = _loads.get(path)
    if state == "ready" or not background:
        try:
            actor = _actor_cache().get(path, "cpu")
        except MarionetteError as exc:
            with _lock:
                _loads[path] = str(exc)
            raise
        with _lock:
            _loads[path] = "ready"
        return actor
    if state == "loading":
        return None
    if state is not None:
        raise MarionetteError(state)

    def load():
        try:
            _actor_cache().get(path, "cpu")
            result = "ready"
        except MarionetteError as exc:
            result = str(exc)
        except Exception as exc:  # an unforeseen file problem: show it instead of failing silently
            result = f"{path}: {type(exc).__name__}: {exc}"
        with _lock:
            _loads[path] = result

    def poll():
        with _lock:
            done = _loads.get(path) != "loading"
        if done:
            _redraw_viewports()
            return None
        return 0.1

    from .viewport import torch_problem

    problem = torch_problem()
    if problem:
        with _lock:
            _loads[path] = problem
        raise MarionetteError(problem)
    with _lock:
        _loads[path] = "loading"
    threading.Thread(target=load, name="marionette-overlay-load", daemon=True).start()
    bpy.app.timers.register(poll, first_interval=0.1)
    return None


def _stamp(path: str):
    try:
        return os.stat(os.path.join(path, "actor.safetensors")).st_mtime_ns
    except OSError:
        return None


def overlay_geometry(scene, depsgraph, sigma: float, background: bool = True):
    """{armature name: (vertices [2S, 3] float32, colours [2S, 4] float32)} for the visible armatures
    with an actor (LINES: vertex 2i to 2i + 1), and {name: reason} for those not drawn (yet)."""
    from engine.scene.overlay import actor_wireframe, bone_sides

    from .viewport import viewport_actors

    actors, problems, _, _ = viewport_actors(depsgraph)
    out, skipped = {}, dict(problems)
    for bound in actors:
        key = (bound.actor_path, _stamp(bound.actor_path), bound.joint_set, float(sigma), bound.joints.tobytes())
        hit = _geometry.get(bound.name)
        if hit is not None and hit[0] == key:
            out[bound.name] = hit[1:]
            continue
        try:
            actor = request_actor(bound.actor_path, background=background)
            if actor is None:
                skipped[bound.name] = "loading the actor"
                continue
            seg, bones = actor_wireframe(actor, bound.joints, bound.joint_set, sigma=sigma, where=bound.name)
        except MarionetteError as exc:
            skipped[bound.name] = str(exc)
            continue
        sides = bone_sides(actor.joint_set)[bones]
        colours = np.array([SIDE_COLOURS[int(s)] for s in (-1, 0, 1)], dtype=np.float32)[sides + 1]
        verts = seg.reshape(-1, 3).astype(np.float32)
        cols = np.repeat(colours, 2, axis=0)
        _geometry[bound.name] = (key, verts, cols)
        out[bound.name] = (verts, cols)
    for name in list(_geometry):
        if name not in out:
            _geometry.pop(name, None)
    return out, skipped


def _sigma(scene) -> float:
    return float(getattr(scene, "marionette_primitive_sigma", "1"))


def draw_overlay() -> None:
    """The draw handler (needs a window): lines of every bound actor's ellipsoids in Solid shading."""
    context = bpy.context
    scene = context.scene
    space = context.space_data
    if scene is None or not getattr(scene, "marionette_show_primitives", False):
        return
    if space is None or space.type != "VIEW_3D" or space.shading.type != "SOLID" or not space.overlay.show_overlays:
        return
    try:
        geometry, _ = overlay_geometry(scene, context.evaluated_depsgraph_get(), _sigma(scene))
    except Exception as exc:  # never break the viewport's drawing
        print(f"Marionette primitive overlay: {type(exc).__name__}: {exc}")
        return
    if not geometry:
        return
    try:
        _draw_lines(geometry)
    except Exception as exc:  # never break the viewport's drawing
        print(f"Marionette primitive overlay: drawing failed: {type(exc).__name__}: {exc}")
        import gpu

        gpu.state.blend_set("NONE")


def _draw_lines(geometry) -> None:
    import gpu
    from gpu_extras.batch import batch_for_shader

    shader = gpu.shader.from_builtin("POLYLINE_FLAT_COLOR")
    shader.uniform_float("viewportSize", gpu.state.viewport_get()[2:])
    shader.uniform_float("lineWidth", LINE_WIDTH)
    gpu.state.blend_set("ALPHA")
    for name, (verts, cols) in geometry.items():
        key = _geometry[name][0]
        hit = _batches.get(name)
        if hit is None or hit[0] != key:
            hit = (key, batch_for_shader(shader, "LINES", {"pos": verts, "color": cols}))
            _batches[name] = hit
        hit[1].draw(shader)
    for name in list(_batches):
        if name not in geometry:
            _batches.pop(name, None)
    gpu.state.blend_set("NONE")


def _redraw(self, context):
    _redraw_viewports()


def register():
    global _handle
    bpy.types.Scene.marionette_show_primitives = BoolProperty(
        name="Show Primitives", default=False, update=_redraw,
        description="Draw every bound actor's Gaussians as ellipsoids in the viewport's Solid shading")
    bpy.types.Scene.marionette_primitive_sigma = EnumProperty(
        name="Size", default="2", update=_redraw,
        items=(("1", "1 σ", "Ellipsoids at one standard deviation"),
               ("2", "2 σ", "Ellipsoids at two standard deviations")),
        description="Standard deviations at which the Gaussians' ellipsoids are drawn")
    _handle = bpy.types.SpaceView3D.draw_handler_add(draw_overlay, (), "WINDOW", "POST_VIEW")


def unregister():
    global _handle
    if _handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle, "WINDOW")
        _handle = None
    _geometry.clear()
    _batches.clear()
    del bpy.types.Scene.marionette_primitive_sigma
    del bpy.types.Scene.marionette_show_primitives
