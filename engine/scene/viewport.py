"""Progressive rendering for an interactive viewport, off the caller's thread (no Blender here).

The Blender viewport (``addon/viewport.py``) hands a ``ViewRequest`` — the view as an
``engine.geometry.camera.Camera`` at the final size, the bound actors' joints, the background —
to a ``ProgressiveRenderer`` each time something that changes the picture changed, and draws
``latest()`` whenever it is told a picture is ready. The renderer never blocks the caller:

* **latest request wins.** ``submit`` stores the request and returns; requests that arrive while
  a picture is being made replace each other, and only the newest is rendered next.
* **coarse first.** A new request is rendered at once at a fraction of its size (latent image and
  decoder both smaller), chosen so that the pass takes about ``coarse_budget_s`` at the cost per
  pixel measured on the previous coarse passes (``plan_scales``).
* **refined while nothing changes.** Once no request has arrived for ``settle_s``, the same
  request is rendered again at twice the scale, and again, up to the full size (the last picture
  equals ``render_shot`` at the request's camera). A refinement runs on its own thread, so a new
  request never waits for it: the coarse lane starts the new picture at once, and the stale
  refinement stops at its next actor (or finishes and is thrown away).
* **idle when done.** Both threads sleep on a condition variable without a timeout once the full
  size is shown: no CPU is used until the next ``submit``.

Pictures come back as ``ViewFrame``: straight sRGB RGBA [h, w, 4] plus the same pixels in
Blender's buffer layout (``engine.scene.compositing.to_blender_pixels``: scene-linear,
premultiplied, bottom row first), computed on the worker so the UI thread only uploads them.
``on_frame(frame)`` is called from a worker thread each time a picture is published; a Blender
caller must not touch ``bpy`` there (it polls ``latest()`` from the main thread instead).
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.scene.compositing import to_blender_pixels
from engine.scene.shot import ActorCache, BoundActor, render_shot
from engine.validate import number

DEFAULT_COARSE_BUDGET_S = 0.06   # target duration of the first (coarse) pass
DEFAULT_SETTLE_S = 0.12          # quiet time before refining (longer than the gap between scrubbed frames)
DEFAULT_COST_PER_PX = 2e-6       # seconds per output pixel before anything was measured (demo actor, CPU)
MIN_COARSE_SIDE = 24             # pixels: the coarse pass is never smaller than this (shorter side)


@dataclass(frozen=True)
class ViewRequest:
    """What to draw: ``camera`` at the final size, the actors (joints in world metres), straight sRGB
    RGBA ``background`` [4] or None (transparent), and the torch device name."""

    camera: Camera
    actors: tuple[BoundActor, ...]
    background: np.ndarray | None = None
    device: str = "auto"


@dataclass
class ViewFrame:
    """One published picture of request ``generation`` at ``scale`` of its size (``final`` at 1)."""

    generation: int
    scale: float
    final: bool
    width: int
    height: int
    rgba: np.ndarray | None               # [height, width, 4] straight sRGB; None when ``error``
    pixels: np.ndarray | None             # flat float32 for Blender (scene-linear, premultiplied, bottom row first)
    submitted: float                      # time.perf_counter() at submit
    ready: float                          # time.perf_counter() when published
    render_s: float = 0.0                 # seconds the pass took
    load_s: float = 0.0                   # of which loading actors (the first picture of an actor)
    lane: str = "coarse"                  # "coarse" or "refine"
    rendered: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (actor name, reason)
    error: str | None = None

    @property
    def key(self) -> tuple[int, float]:
        """Identifies the picture (a newer picture has a larger key)."""
        return (self.generation, self.scale)

    @property
    def latency_s(self) -> float:
        return self.ready - self.submitted


def plan_scales(width: int, height: int, cost_per_px: float, coarse_budget_s: float,
                min_side: int = MIN_COARSE_SIDE) -> list[float]:
    """Scales of the passes for a ``width x height`` request: the coarse one first (``1/k`` for the
    smallest whole k whose pass should take at most ``coarse_budget_s`` at ``cost_per_px`` seconds
    per pixel, but not smaller than ``min_side`` pixels on the shorter side), then ``next_scale``
    up to 1.

    >>> plan_scales(320, 180, 2e-6, 0.06)
    [0.5, 1.0]
    >>> [round(s, 3) for s in plan_scales(1920, 1080, 2e-6, 0.06)]
    [0.111, 0.222, 0.444, 1.0]
    >>> plan_scales(64, 36, 2e-6, 0.06)
    [1.0]
    """
    pixels = max(1, int(width) * int(height))
    fit = math.sqrt(max(coarse_budget_s, 0.0) / max(cost_per_px, 1e-12) / pixels)
    floor = min(1.0, min_side / max(1, min(int(width), int(height))))
    s = max(min(1.0, fit), floor)
    k = max(1, math.ceil(1.0 / s - 1e-9))
    if 1.0 / k < floor - 1e-12:
        k = max(1, math.floor(1.0 / floor))
    scales = [1.0 / k]
    while scales[-1] < 1.0:
        scales.append(next_scale(scales[-1]))
    return scales


def next_scale(scale: float) -> float:
    """The refinement after a pass at ``scale``: twice the size, or the full size once that is
    near (a pass at 0.8 then 1.0 would cost more than going to 1.0 at once)."""
    return 2 * scale if 2 * scale <= 0.6 else 1.0


class _Cancelled(Exception):
    pass


class ProgressiveRenderer:
    """Coarse-then-fine pictures of the latest ``ViewRequest``, made on two daemon threads.

    ``render(camera, actors, device, background, cancelled)`` makes one picture and returns an
    ``engine.scene.shot.ShotResult``-like object (``rgba``, ``rendered``, ``skipped``); the
    default is ``render_shot`` with this renderer's ``ActorCache``. Tests pass a fake.
    """

    def __init__(self, render=None, *, coarse_budget_s: float = DEFAULT_COARSE_BUDGET_S,
                 settle_s: float = DEFAULT_SETTLE_S, cost_per_px: float = DEFAULT_COST_PER_PX,
                 min_side: int = MIN_COARSE_SIDE, cache: ActorCache | None = None, on_frame=None,
                 blender_pixels: bool = True):
        self.coarse_budget_s = number(coarse_budget_s, "coarse budget (seconds)", lo=0)
        self.settle_s = number(settle_s, "settle time (seconds)", lo=0)
        self.cost_per_px = number(cost_per_px, "cost per pixel (seconds)", lo=0, lo_open=True)
        self.min_side = int(min_side)
        self._cache = cache or ActorCache()
        self._render_fn = render or self._render_shot
        self.on_frame = on_frame
        self.blender_pixels = bool(blender_pixels)
        self._cond = threading.Condition()
        self._closed = False
        self._generation = 0
        self._request: ViewRequest | None = None
        self._submitted = 0.0
        self._coarse_todo = False      # the newest request has not been started by the coarse lane
        self._coarse_busy = False
        self._refine_from: tuple[int, float] | None = None  # (generation, scale already shown)
        self._refine_busy = False
        self._latest: ViewFrame | None = None
        self.passes = 0                # pictures made (published or thrown away), for tests and benchmarks
        self._threads = [threading.Thread(target=self._coarse_loop, name="marionette-viewport-coarse", daemon=True),
                         threading.Thread(target=self._refine_loop, name="marionette-viewport-refine", daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ caller's side
    def submit(self, request: ViewRequest) -> int:
        """Replace the request to draw; returns its generation (increasing). Never blocks on rendering."""
        if not isinstance(request, ViewRequest):
            raise MarionetteError(f"viewport: expected a ViewRequest, got {type(request).__name__}")
        with self._cond:
            if self._closed:
                raise MarionetteError("viewport: the renderer was closed")
            self._generation += 1
            self._request = request
            self._submitted = time.perf_counter()
            self._coarse_todo = True
            self._refine_from = None
            self._cond.notify_all()
            return self._generation

    @property
    def generation(self) -> int:
        return self._generation

    def latest(self) -> ViewFrame | None:
        """The newest picture published (possibly of an older request, or an error)."""
        return self._latest

    @property
    def busy(self) -> bool:
        """True while a pass runs or is due (a refinement waiting for the view to settle counts)."""
        with self._cond:
            return (self._coarse_todo or self._coarse_busy or self._refine_busy
                    or (self._refine_from is not None and not self._closed))

    def wait(self, generation: int | None = None, final: bool = False, timeout: float = 30.0) -> ViewFrame | None:
        """Block until a picture of ``generation`` (default: the newest) or a newer one is published
        — the full-size one with ``final`` — and return it; None on timeout. For tests and scripts."""
        deadline = time.perf_counter() + timeout
        with self._cond:
            gen = self._generation if generation is None else generation
            while True:
                f = self._latest
                if f is not None and (f.generation > gen or (f.generation == gen and (f.final or f.error or not final))):
                    return f
                left = deadline - time.perf_counter()
                if left <= 0 or self._closed:
                    return None
                self._cond.wait(left)

    def close(self, timeout: float = 0.0) -> None:
        """Stop both threads (after their current pass); join them for up to ``timeout`` seconds."""
        with self._cond:
            self._closed = True
            self._request = None
            self._cond.notify_all()
        if timeout > 0:
            for t in self._threads:
                t.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(timeout=30.0)

    # ------------------------------------------------------------------ workers
    def _render_shot(self, camera, actors, device, background, cancelled):
        return render_shot(camera, list(actors), device=device, background=background, cancelled=cancelled,
                           cache=self._cache)

    def _coarse_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._coarse_todo:
                    self._cond.wait()
                if self._closed:
                    return
                gen, request, submitted = self._generation, self._request, self._submitted
                self._coarse_todo = False
                self._coarse_busy = True
            frame, scale = None, 1.0
            try:
                cam = request.camera
                scale = plan_scales(cam.width, cam.height, self.cost_per_px, self.coarse_budget_s, self.min_side)[0]
                frame = self._make(request, gen, scale, submitted, "coarse", cancellable=False)
                if frame is not None and frame.error is None and frame.render_s - frame.load_s > 0:
                    # the cost per pixel of this lane, smoothed (it follows the machine's load);
                    # loading an actor is a one-off, not a cost of the picture's size
                    cost = (frame.render_s - frame.load_s) / max(1, frame.width * frame.height)
                    # (at most 4x up per pass: the first pass also imports PyTorch)
                    self.cost_per_px = 0.5 * self.cost_per_px + 0.5 * min(cost, 4 * self.cost_per_px)
                self._publish(frame)  # before busy clears: a poller that sees "idle" has seen the picture
            finally:
                with self._cond:
                    self._coarse_busy = False
                    if frame is not None and frame.error is None and not frame.final and gen == self._generation:
                        self._refine_from = (gen, scale)
                    self._cond.notify_all()

    def _refine_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    target = self._refine_from
                    if target is not None and target[0] == self._generation and not self._coarse_todo:
                        quiet = time.perf_counter() - self._submitted
                        if quiet >= self.settle_s:
                            break
                        self._cond.wait(self.settle_s - quiet)
                    else:
                        self._cond.wait()
                gen, scale = target
                request, submitted = self._request, self._submitted
                self._refine_from = None
                self._refine_busy = True
            try:
                while scale < 1.0 and gen == self._generation and not self._closed:
                    scale = next_scale(scale)
                    frame = self._make(request, gen, scale, submitted, "refine", cancellable=True)
                    if frame is None or frame.error is not None:
                        self._publish(frame)
                        break
                    if gen == self._generation:
                        self._publish(frame)
            finally:
                with self._cond:
                    self._refine_busy = False
                    self._cond.notify_all()

    def _make(self, request: ViewRequest, gen: int, scale: float, submitted: float, lane: str,
              cancellable: bool) -> ViewFrame | None:
        """One pass; None when cancelled (a newer request arrived during a refinement)."""
        cam = request.camera

        def cancelled() -> bool:
            if self._closed or (cancellable and gen != self._generation):
                raise _Cancelled
            return False

        t0 = time.perf_counter()
        try:
            if scale < 1.0:
                cam = request.camera.scaled(scale)
            shot = self._render_fn(cam, request.actors, request.device, request.background, cancelled)
            rgba = np.asarray(shot.rgba, dtype=np.float32)
            pixels = to_blender_pixels(rgba) if self.blender_pixels else None
            error = None
            if request.actors and not shot.rendered:
                error = "no actor could be rendered: " + "; ".join(f"{n}: {r}" for n, r in shot.skipped)
        except _Cancelled:
            self.passes += 1
            return None
        except MarionetteError as exc:
            rgba = pixels = None
            shot, error = None, str(exc)
        except Exception as exc:  # never let the worker die: report it like an error
            traceback.print_exc()
            rgba = pixels = None
            shot, error = None, f"unexpected {type(exc).__name__}: {exc}"
        self.passes += 1
        return ViewFrame(generation=gen, scale=scale, final=scale >= 1.0, width=cam.width, height=cam.height,
                         rgba=rgba, pixels=pixels, submitted=submitted, ready=time.perf_counter(),
                         render_s=time.perf_counter() - t0, lane=lane,
                         load_s=float((getattr(shot, "timings", None) or {}).get("load", 0.0)),
                         rendered=list(getattr(shot, "rendered", []) or []),
                         skipped=list(getattr(shot, "skipped", []) or []), error=error)

    def _publish(self, frame: ViewFrame | None) -> None:
        if frame is None:
            return
        with self._cond:
            old = self._latest
            if old is not None and frame.key <= old.key:
                return  # an older picture finished late
            frame.ready = time.perf_counter()
            self._latest = frame
            self._cond.notify_all()
        if self.on_frame is not None:
            try:
                self.on_frame(frame)
            except Exception:
                traceback.print_exc()
