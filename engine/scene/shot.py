"""Render a shot with several actors: what the Blender render engine calls, without Blender.

The Blender side (``addon/render_engine.py``) only gathers plain data — the scene
camera as an ``engine.geometry.camera.Camera``, and for every visible armature bound to an
actor, its joint positions and joint-set name — and hands them to ``render_shot``.
Everything else happens here: loading (and caching) actors, mapping joint sets,
rendering each actor with its depth, and compositing front to back by depth.

Pixels come back as straight-alpha sRGB RGBA [H, W, 4] (what the decoder produced);
``engine.scene.compositing.to_blender_pixels`` turns them into Blender's render buffer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.scene.compositing import composite_layers
from engine.body.joint_sets import JointSet, get_joint_set, joint_map


@dataclass
class BoundActor:
    """One armature to render: its actor folder, joint positions [J, 3] (world, metres) and joint set."""

    name: str
    actor_path: str
    joints: np.ndarray
    joint_set: str


@dataclass
class ShotResult:
    rgba: np.ndarray  # [H, W, 4] straight sRGB
    timings: dict = field(default_factory=dict)  # seconds per stage
    rendered: list = field(default_factory=list)  # names of actors drawn
    skipped: list = field(default_factory=list)  # (name, reason)


def read_actor_header(actor_path) -> dict:
    """The validated JSON of an actor folder (cheap: does not read the weights or import torch)."""
    from engine.fileio import read_json

    path = Path(actor_path)
    if path.is_file():
        path = path.parent
    json_path = path / "actor.json"
    if not json_path.is_file():
        raise MarionetteError(f"{path}: not an actor folder (no actor.json; expected a folder written by "
                              "'marionette train')")
    doc = read_json(json_path, "actor description")
    if doc.get("format") != "marionette.actor":
        raise MarionetteError(f"{json_path}: field 'format' is not 'marionette.actor'")
    if "joint_set" not in doc:
        raise MarionetteError(f"{json_path}: missing field 'joint_set'")
    get_joint_set(str(doc["joint_set"]))
    return doc


def validate_actor(actor_path) -> dict:
    """Check an actor folder as loading it does (``engine.neural.actor.model_file.load_actor``: format,
    version, joint set and bones, tensors present with the recorded size, SHA-256 and shapes, finite
    values) and return its JSON; a MarionetteError says what is wrong. Imports torch."""
    from engine.neural.actor.model_file import load_actor

    path = Path(actor_path)
    if path.is_file():
        path = path.parent
    _, doc = load_actor(path, device="cpu")
    return doc


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) \
        else None


def actor_summary(doc: dict, actor_path) -> dict[str, str]:
    """One-line texts about an actor from its JSON, for the Blender panel: ``name`` (its folder),
    ``joint_set``, ``training`` (steps, time, device, date) and ``quality`` (held-out metrics
    recorded by training: ``training.metrics.heldout``). Odd or missing values are left out."""
    path = Path(actor_path)
    if path.is_file():
        path = path.parent
    t = doc.get("training") if isinstance(doc.get("training"), dict) else {}
    parts = []
    steps = _num(t.get("steps"))
    if steps is not None:
        parts.append(f"{int(steps)} steps")
    secs = _num(t.get("time_s"))
    if secs is not None:
        parts.append(f"{secs / 60:.0f} min" if secs >= 60 else f"{secs:.0f} s")
    if isinstance(t.get("device"), str):
        parts.append(f"on {t['device'][:12]}")
    if isinstance(t.get("created"), str):
        parts.append(t["created"][:10])
    metrics = t.get("metrics") if isinstance(t.get("metrics"), dict) else {}
    held = metrics.get("heldout") if isinstance(metrics.get("heldout"), dict) else {}
    quality = []
    for key, label, fmt in (("psnr", "PSNR", "{:.1f} dB"), ("ssim", "SSIM", "{:.3f}"), ("mask_iou", "mask IoU", "{:.3f}")):
        v = _num(held.get(key))
        if v is not None:
            quality.append(f"{label} {fmt.format(v)}")
    views = _num(held.get("views"))
    return {
        "name": path.name,
        "joint_set": str(doc.get("joint_set", "?"))[:32],
        "training": ", ".join(parts) if parts else "not recorded",
        "quality": (", ".join(quality) + (f" ({int(views)} views)" if views is not None else "")) if quality
        else "not recorded",
    }


def needed_joints(joint_set: JointSet) -> list[int]:
    return sorted({j for bone in joint_set.bones for j in bone})


def joint_set_compatibility(source: str, actor_joint_set: str) -> tuple[bool, list[str]]:
    """Can an armature holding ``source`` joints drive an actor trained on ``actor_joint_set``?

    Returns (ok, names of actor joints that cannot be obtained).
    """
    src, dst = get_joint_set(source), get_joint_set(actor_joint_set)
    if src.name == dst.name:
        return True, []
    missing = joint_map(src, dst).missing(needed_joints(dst))
    return not missing, missing


def estimated_joints(source: str, actor_joint_set: str) -> dict[str, list[str]]:
    """{actor joint: ``source`` joints it is estimated from} for the actor's joints that ``source``
    lacks (``engine.body.joint_sets.ESTIMATED``/``DERIVED``); empty for the same joint set."""
    src, dst = get_joint_set(source), get_joint_set(actor_joint_set)
    if src.name == dst.name:
        return {}
    return joint_map(src, dst).estimated(needed_joints(dst))


def joints_for_actor(joints: np.ndarray, source: str, actor_joint_set: str, where: str) -> np.ndarray:
    ok, missing = joint_set_compatibility(source, actor_joint_set)
    if not ok:
        raise MarionetteError(f"{where}: holds {source} joints but its actor was trained on {actor_joint_set}; "
                              f"these actor joints cannot be obtained: {', '.join(missing)}")
    src, dst = get_joint_set(source), get_joint_set(actor_joint_set)
    joints = np.asarray(joints, dtype=np.float64)
    out = joints if src.name == dst.name else joint_map(src, dst).apply(joints)
    bad = [dst.names[j] for j in needed_joints(dst) if not np.isfinite(out[j]).all()]
    if bad:
        raise MarionetteError(f"{where}: joints {', '.join(bad)} are missing (NaN) on this frame")
    return out.astype(np.float32)


class ActorCache:
    """Loaded actors keyed by folder; reloaded when the files change, dropped when deleted."""

    def __init__(self):
        self._actors: dict[tuple[str, str], tuple[float, object]] = {}

    @staticmethod
    def _stamp(path: Path) -> float:
        try:
            return max((path / "actor.json").stat().st_mtime, (path / "actor.safetensors").stat().st_mtime)
        except OSError:
            raise MarionetteError(f"{path}: actor files are missing (was the actor folder moved or deleted?)") from None

    def get(self, actor_path, device):
        from engine.neural.actor.model_file import load_actor

        path = Path(actor_path)
        if path.is_file():
            path = path.parent
        key = (str(path.resolve()), str(device))
        stamp = self._stamp(path)
        hit = self._actors.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        actor, _ = load_actor(path, device=device)
        self._actors[key] = (stamp, actor)
        return actor

    def clear(self):
        self._actors.clear()


_CACHE = ActorCache()


def resolve_device(name: str):
    """'auto' | 'cpu' | 'cuda' | 'mps' -> torch.device, with a clear error when unavailable."""
    from engine.neural.actor.train import resolve_device as _resolve

    return _resolve(name)


def _to_output(x: np.ndarray, factor: int, H: int, W: int) -> np.ndarray:
    if x.shape == (H, W):
        return x
    return np.repeat(np.repeat(x, factor, axis=0), factor, axis=1)[:H, :W]


def render_shot(camera: Camera, actors: list[BoundActor], device: str = "auto",
                background: np.ndarray | None = None, cancelled=None, progress=None,
                cache: ActorCache | None = None) -> ShotResult:
    """Render every bound actor from ``camera`` and composite them by depth.

    background: straight sRGB RGBA [4] behind the actors (None: transparent).
    cancelled(): polled between actors; when it returns True the shot stops (MarionetteError).
    progress(fraction): called after every actor.
    An actor whose file is missing or whose joints cannot drive it is skipped with a reason
    (``ShotResult.skipped``); the caller decides how loudly to report it.
    """
    import torch

    cache = cache or _CACHE
    dev = resolve_device(device)
    if camera.has_distortion:
        raise MarionetteError("the neural renderer draws pinhole images; the camera has lens distortion")
    H, W = camera.height, camera.width
    timings = {"load": 0.0, "render": 0.0, "composite": 0.0}
    layers, depths, rendered, skipped = [], [], [], []
    for i, bound in enumerate(actors):
        if cancelled is not None and cancelled():
            raise MarionetteError("render cancelled")
        t0 = time.perf_counter()
        try:
            actor = cache.get(bound.actor_path, dev)
            joints = joints_for_actor(bound.joints, bound.joint_set, actor.joint_set.name, bound.name)
        except MarionetteError as exc:
            skipped.append((bound.name, str(exc)))
            continue
        t1 = time.perf_counter()
        timings["load"] += t1 - t0
        with torch.no_grad():
            K = torch.as_tensor(camera.K[None], dtype=torch.float32, device=dev)
            R = torch.as_tensor(camera.R[None], dtype=torch.float32, device=dev)
            t = torch.as_tensor(camera.t[None], dtype=torch.float32, device=dev)
            J = torch.as_tensor(joints[None], dtype=torch.float32, device=dev)
            out = actor.forward_scaled(J, K, R, t, H, W)
            rgb = out["rgb"][0].permute(1, 2, 0).float().cpu().numpy()
            alpha = out["alpha"][0, 0].float().cpu().numpy()
            depth = out["depth"][0, 0].float().cpu().numpy()
            lat_alpha = out["latent_alpha"][0, 0].float().cpu().numpy()
        # the latent (and its depth) may be coarser than the output: nearest-neighbour up to it
        factor = -(-H // depth.shape[0])
        depth = _to_output(depth, factor, H, W)
        depth = np.where(_to_output(lat_alpha, factor, H, W) > 1e-3, depth, np.inf)
        layers.append(np.concatenate([rgb, alpha[..., None]], axis=-1))
        depths.append(depth)
        rendered.append(bound.name)
        timings["render"] += time.perf_counter() - t1
        if progress is not None:
            progress((i + 1) / max(1, len(actors)))
    t2 = time.perf_counter()
    if layers:
        rgba = composite_layers(layers, depths, background)
    else:
        rgba = np.zeros((H, W, 4), np.float32)
        if background is not None:
            rgba[:] = np.asarray(background, dtype=np.float32)
    timings["composite"] = time.perf_counter() - t2
    return ShotResult(rgba=rgba, timings=timings, rendered=rendered, skipped=skipped)


def add_site_packages(folder: str) -> bool:
    """Put an extra site-packages folder (e.g. one holding torch) on sys.path; True if added."""
    import sys

    if not folder:
        return False
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        raise MarionetteError(f"{folder}: the PyTorch folder set in the Marionette preferences does not exist")
    if folder not in sys.path:
        sys.path.append(folder)
        return True
    return False
