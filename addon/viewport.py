"""The Marionette engine in the 3D viewport's Rendered shading: change detection and glue.

``render_engine.MarionetteRenderEngine.view_update`` / ``view_draw`` call a ``ViewportSession``
(one per viewport, i.e. per engine instance):

* ``ViewportTracker`` (testable on the bpy module, no window) decides *whether* the picture
  changed: from ``view_update``'s depsgraph updates it reads the bound, visible armatures'
  evaluated joints, the frame, the world background and the device, and compares them with
  what was last drawn (reasons: ``pose``, ``frame``, ``binding``, ``visibility``, ``background``,
  ``settings``); ``view_draw`` adds ``view`` when the region's view or projection matrix, its size
  or the viewport resolution changed. Updates that cannot change the picture (a mesh edited, a
  material) are recognised from ``depsgraph.updates`` without reading any armature.
* The picture is made by ``engine.scene.viewport.ProgressiveRenderer`` on worker threads
  (coarse first, refined while nothing changes; latest request wins), so Blender never waits
  on PyTorch. While it works, a ``bpy.app.timers`` poll on the main thread calls the engine's
  ``tag_redraw()`` when a new picture is ready, and stops once the renderer is idle: no CPU is
  used while nothing changes. (The worker threads never touch ``bpy``.)
* ``draw_frame`` (needs a window, so untested here) uploads the newest picture to a GPU texture
  once and draws it over the region with the builtin ``IMAGE`` shader, premultiplied alpha,
  under Blender's overlays.

The view becomes an engine camera through ``engine.geometry.camera.from_view_projection``
(region_data.view_matrix and window_matrix), so free perspective views and the camera view
(with its zoom and offset) both work; an orthographic view is reported and not drawn.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import weakref

import bpy
import numpy as np

from engine import MarionetteError

POLL_S = 0.01          # main-thread poll period while pictures are being made
MIN_PERCENT, MAX_PERCENT = 5, 100

# ID types whose update may change the picture; any other update (a mesh or a material edited,
# an image reloaded) is ignored without reading the armatures
_RELEVANT_ID_TYPES = ("Scene", "World", "Collection", "Action", "Armature", "Camera")
_RELEVANT_OBJECT_TYPES = ("ARMATURE", "CAMERA")


def updates_may_change_picture(updates) -> bool:
    """True when some entry of ``depsgraph.updates`` may change the viewport picture; also True
    for an empty or unknown list (the caller then compares everything)."""
    updates = list(updates or [])
    if not updates:
        return True
    for u in updates:
        idb = getattr(u, "id", None)
        if idb is None:
            return True
        kind = type(idb).__name__
        if kind == "Object":
            if getattr(idb, "type", "ARMATURE") in _RELEVANT_OBJECT_TYPES:
                return True
        elif kind in _RELEVANT_ID_TYPES:
            return True
    return False


def viewport_size(region_width: int, region_height: int, percent: int) -> tuple[int, int]:
    """Pixel size of the full-size picture for a region at a viewport resolution ``percent``."""
    p = min(MAX_PERCENT, max(MIN_PERCENT, int(percent)))
    return max(1, round(region_width * p / 100)), max(1, round(region_height * p / 100))


def view_camera(region_width: int, region_height: int, view_matrix, window_matrix, percent: int = 100):
    """The engine ``Camera`` of a 3D viewport region (its ``region_data`` matrices) at ``percent``
    of the region's size (a MarionetteError for an orthographic view)."""
    from engine.geometry.camera import from_view_projection

    W, H = viewport_size(region_width, region_height, percent)
    return from_view_projection(np.array(view_matrix, dtype=np.float64), np.array(window_matrix, dtype=np.float64),
                                W, H, name="viewport")


def _camera_key(cam) -> bytes:
    return np.concatenate([cam.K.ravel(), cam.R.ravel(), cam.t.ravel(), [cam.width, cam.height]]).tobytes()


def device_name(context=None) -> str:
    from .render_engine import _prefs

    prefs = _prefs(context)
    return (prefs.device if prefs is not None else os.environ.get("MARIONETTE_DEVICE", "auto")).lower()


def viewport_actors(depsgraph):
    """(BoundActor list, problems [(name, reason)], bound {name: (actor path, joint set)}, visible names)
    for the armatures of the depsgraph's scene: ``bound`` are all armatures with an actor; those
    visible in the viewport (in ``depsgraph.objects``) are read as actors."""
    from .pose_read import joint_set_name
    from .render_engine import read_bound_actor

    bound = {}
    for obj in depsgraph.scene.objects:
        if obj.type == "ARMATURE" and getattr(obj, "marionette_actor", ""):
            bound[obj.name] = (bpy.path.abspath(obj.marionette_actor), joint_set_name(obj))
    actors, problems, visible = [], [], set()
    if not bound:
        return actors, problems, bound, frozenset()
    for ob in depsgraph.objects:
        orig = ob.original
        if orig.type != "ARMATURE" or orig.name not in bound:
            continue
        visible.add(orig.name)
        actor, problem = read_bound_actor(orig, bound[orig.name][0], depsgraph)
        if actor is None:
            problems.append((orig.name, problem))
        else:
            actors.append(actor)
    return actors, problems, bound, frozenset(visible)


class ViewportTracker:
    """What the viewport picture depends on, and what changed since the last ``update``."""

    def __init__(self):
        self.actors: list = []
        self.problems: list = []
        self.bound: dict = {}
        self.visible: frozenset = frozenset()
        self.frame: float | None = None
        self.background: tuple | None = None
        self.device: str | None = None
        self.reads = 0              # how often the armatures were read (tests: skipped updates read nothing)
        self.ready = False          # update ran at least once

    def update(self, depsgraph, updates=None, device: str | None = None) -> set[str]:
        """Compare the scene with the last call; returns the reasons to draw again ({} for none).

        ``updates``: ``depsgraph.updates`` during ``view_update`` (None or empty: compare everything).
        """
        from .render_engine import world_background

        if self.ready and not updates_may_change_picture(updates):
            return set()
        scene = depsgraph.scene
        self.reads += 1
        actors, problems, bound, visible = viewport_actors(depsgraph)
        frame = scene.frame_current + scene.frame_subframe
        bg = world_background(scene)
        background = None if bg is None else tuple(float(v) for v in bg)
        device = device if device is not None else device_name()
        reasons = set()
        if not self.ready:
            reasons.add("initial")
        if frame != self.frame:
            reasons.add("frame")
        if bound != self.bound:
            reasons.add("binding")
        if visible != self.visible:
            reasons.add("visibility")
        old = {a.name: a for a in self.actors}
        for a in actors:
            prev = old.get(a.name)
            if prev is not None and (prev.joint_set != a.joint_set or not np.array_equal(prev.joints, a.joints,
                                                                                          equal_nan=True)):
                reasons.add("pose")
        if [p[0] for p in problems] != [p[0] for p in self.problems]:
            reasons.add("binding")
        if background != self.background:
            reasons.add("background")
        if device != self.device:
            reasons.add("settings")
        self.actors, self.problems, self.bound, self.visible = actors, problems, bound, visible
        self.frame, self.background, self.device = frame, background, device
        self.ready = True
        return reasons


def picture_changed(reasons: set[str]) -> bool:
    """A frame change alone does not change the picture (nothing bound is animated): no redraw."""
    return bool(reasons - {"frame"})


class ViewportSession:
    """One viewport's state: the tracker, the view camera, the renderer and the redraw poll."""

    def __init__(self, renderer=None):
        from engine.scene.viewport import ProgressiveRenderer

        self.tracker = ViewportTracker()
        self.renderer = renderer or ProgressiveRenderer(cache=_shared_cache())
        self.camera = None
        self._camera_key = None
        self.view_error: str | None = None   # the view cannot be drawn (orthographic)
        self.error: str | None = None        # nothing can be drawn (no PyTorch, unreadable scene)
        self.draw_error: str | None = None   # the GPU drawing failed (reported, not retried)
        self.last_reasons: set[str] = set()
        self.submitted = 0          # requests handed to the renderer
        self.drawn_key = None       # the picture view_draw drew last
        self._tagged_key = None
        self._polling = False
        self.draw_cache: dict = {}  # GPU texture and batch (draw_frame)
        _SESSIONS.add(self)

    # ------------------------------------------------------------------ change detection
    def update(self, depsgraph, updates=None, device: str | None = None) -> set[str]:
        """``view_update``: read the depsgraph; ask for a new picture when it changed."""
        reasons = self.tracker.update(depsgraph, updates, device=device)
        if picture_changed(reasons):
            self._submit(reasons)
        return reasons

    def set_view(self, camera) -> bool:
        """``view_draw``: the region's camera; asks for a new picture when the view changed."""
        self.view_error = None
        key = _camera_key(camera)
        if key == self._camera_key:
            return False
        self.camera, self._camera_key = camera, key
        self._submit({"view"})
        return True

    def set_view_from_region(self, region_width, region_height, view_matrix, window_matrix, percent) -> bool:
        try:
            camera = view_camera(region_width, region_height, view_matrix, window_matrix, percent)
        except MarionetteError as exc:
            self.view_error = str(exc)
            self.camera, self._camera_key = None, None
            return False
        return self.set_view(camera)

    def request(self):
        """The ViewRequest for the current view and scene (None before both are known)."""
        from engine.scene.viewport import ViewRequest

        if self.camera is None or not self.tracker.ready:
            return None
        bg = self.tracker.background
        return ViewRequest(camera=self.camera, actors=tuple(self.tracker.actors),
                           background=None if bg is None else np.asarray(bg, dtype=np.float32),
                           device=self.tracker.device or "auto")

    def _submit(self, reasons: set[str]) -> int | None:
        req = self.request()
        if req is None or self.renderer.closed:
            return None
        self.last_reasons = set(reasons)
        self.submitted += 1
        return self.renderer.submit(req)

    # ------------------------------------------------------------------ redraws
    def start_polling(self, tag_redraw) -> bool:
        """Poll the renderer from the main thread (``bpy.app.timers``) while it works, calling
        ``tag_redraw()`` (the engine's) for each new picture; the timer ends when it is idle."""
        if self._polling or self.renderer.closed:
            return False
        if not self.renderer.busy and self._new_picture() is None:
            return False
        self._polling = True

        def poll():
            if self.renderer.closed:
                self._polling = False
                return None
            busy = self.renderer.busy  # before latest(): a picture is published before busy clears
            frame = self._new_picture()
            if frame is not None:
                self._tagged_key = frame.key
                try:
                    tag_redraw()
                except ReferenceError:  # Blender freed the engine (viewport left Rendered shading)
                    self.close()
                    self._polling = False
                    return None
            if busy:
                return POLL_S
            self._polling = False
            return None

        bpy.app.timers.register(poll, first_interval=0.0)
        return True

    def _new_picture(self):
        frame = self.renderer.latest()
        return frame if frame is not None and frame.key != self._tagged_key and frame.key != self.drawn_key else None

    @property
    def can_draw(self) -> bool:
        return not self.error and not self.view_error and self.camera is not None

    def status(self) -> str:
        """One line for the viewport's statistics."""
        if self.error or self.view_error or self.draw_error:
            return f"Marionette: {self.error or self.view_error or self.draw_error}"
        if not self.tracker.actors and not self.tracker.problems:
            return "Marionette: no visible armature has an actor bound (Object Properties > Marionette Actor)"
        frame = self.renderer.latest()
        parts = [f"Marionette | {len(self.tracker.actors)} actor(s)"]
        if frame is None:
            parts.append("starting")
        elif frame.error:
            return f"Marionette: {frame.error}"
        else:
            step = "final" if frame.final else f"1/{round(1 / frame.scale)} size"
            parts.append(f"{frame.width}x{frame.height} {step}, {1000 * frame.render_s:.0f} ms")
            if frame.skipped:
                parts.append("skipped " + ", ".join(n for n, _ in frame.skipped))
        if self.tracker.problems:
            parts.append("not drawn: " + ", ".join(n for n, _ in self.tracker.problems))
        return " | ".join(parts)

    def close(self) -> None:
        self.renderer.close()
        self.draw_cache.clear()


_SESSIONS: "weakref.WeakSet[ViewportSession]" = weakref.WeakSet()


def close_all_sessions(timeout: float = 2.0) -> None:
    """Stop every viewport's workers (add-on disabled, Blender quitting), waiting up to ``timeout``
    seconds for a picture in progress, so that no thread runs PyTorch while Python shuts down."""
    sessions = list(_SESSIONS)
    for s in sessions:
        s.close()
    for s in sessions:
        s.renderer.close(timeout=timeout)


atexit.register(close_all_sessions)

_CACHE = None


def _shared_cache():
    """One actor cache for every viewport (each actor is loaded once)."""
    global _CACHE
    if _CACHE is None:
        from engine.scene.shot import ActorCache

        _CACHE = ActorCache()
    return _CACHE


def torch_problem(context=None) -> str | None:
    """Why PyTorch cannot be used (None when it can), without importing it (the worker does)."""
    from engine.scene.shot import add_site_packages

    from .render_engine import _prefs

    prefs = _prefs(context)
    folder = getattr(prefs, "torch_path", "") if prefs is not None else ""
    try:
        if folder:
            add_site_packages(bpy.path.abspath(folder))
    except MarionetteError as exc:
        return str(exc)
    for module in ("torch", "safetensors"):
        if importlib.util.find_spec(module) is None:
            return (f"{module} is not available to Blender: set a folder holding PyTorch and safetensors in "
                    "Preferences > Add-ons > Marionette, or use the 'Install PyTorch' button there")
    return None


# ---------------------------------------------------------------------- drawing (needs a window)
def draw_frame(engine, scene, frame, region_width: int, region_height: int, cache: dict) -> None:
    """Draw ``frame`` stretched over the region: a texture (uploaded once per picture) on a quad with
    the builtin IMAGE shader, premultiplied alpha; Blender draws its overlays on top."""
    import gpu
    from gpu_extras.batch import batch_for_shader

    if cache.get("key") != frame.key:
        n = frame.width * frame.height * 4
        try:
            buf = gpu.types.Buffer("FLOAT", n, frame.pixels)
        except TypeError:  # a Blender whose Buffer does not take the buffer protocol
            buf = gpu.types.Buffer("FLOAT", n, frame.pixels.tolist())
        cache["texture"] = gpu.types.GPUTexture((frame.width, frame.height), format="RGBA16F", data=buf)
        cache["key"] = frame.key
    if cache.get("size") != (region_width, region_height):
        shader = gpu.shader.from_builtin("IMAGE")
        w, h = float(region_width), float(region_height)
        cache["shader"] = shader
        cache["batch"] = batch_for_shader(shader, "TRI_FAN", {"pos": ((0, 0), (w, 0), (w, h), (0, h)),
                                                             "texCoord": ((0, 0), (1, 0), (1, 1), (0, 1))})
        cache["size"] = (region_width, region_height)
    shader = cache["shader"]
    gpu.state.blend_set("ALPHA_PREMULT")
    engine.bind_display_space_shader(scene)
    shader.uniform_sampler("image", cache["texture"])
    cache["batch"].draw(shader)
    engine.unbind_display_space_shader()
    gpu.state.blend_set("NONE")
