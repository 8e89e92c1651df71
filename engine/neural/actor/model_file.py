"""Actor folders: ``ACTOR_DIR/actor.safetensors`` (tensors) + ``ACTOR_DIR/actor.json`` (everything else).

``actor.json``::

    {"format": "marionette.actor", "version": 1,
     "joint_set": "BODY_25B", "bones": [[parent, child], ...], "bone_names": [...],
     "widths": [...metres, informative copy of exp(primitives.log_widths)],
     "latent_dim": 16, "mode": "transmittance", "density": 30.0,
     "decoder": {"in_channels": 17, "base_channels": 32, "levels": 3, ...},
     "tensors": {"file": "actor.safetensors", "bytes": N, "sha256": "...",
                 "shapes": {"codes": [26, 16], ...}},
     "training": {"capture": ..., "steps": ..., "seed": ..., "command": ..., "metrics": {...},
                  "time_s": ..., "created": ...}}

Writing is atomic per file and the tensor file goes first; the JSON records its size
and SHA-256, so a truncated or swapped tensor file is detected on load. Nothing is
ever pickled. Checkpoints (``engine.neural.actor.train``) use the same two-file layout.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from engine import MarionetteError
from engine.fileio import new_file_mode, read_json, write_json_atomic
from engine.neural.actor.decoder import DecoderConfig
from engine.neural.actor.model import Actor, ActorConfig
from engine.neural.render.texture import CHART_KINDS
from engine.body.joint_sets import JointSet, get_joint_set
from engine.validate import MAX_RENDER_SIDE, confined_file, number, string, whole_number

# caps on the sizes an actor/checkpoint JSON may ask for, checked before anything is allocated
# (the largest preset is base 64, 4 levels, max 256 channels, code 32, latent 16)
LIMITS = {"latent_dim": 1024, "per_bone": 64, "colour_cameras": 4096, "pose_frames": 100000, "pose_conditioning": 1,
          "light_conditioning": 1,
          "texture_channels": 64, "texture_size": 64, "in_channels": 1024 + 64 + 1, "base_channels": 1024,
          "levels": 8, "max_channels": 4096, "code_dim": 4096, "upsample": 2}
MAX_TENSOR_BYTES = 16 << 30

ACTOR_FORMAT = "marionette.actor"
# v2 adds several Gaussians per bone ('per_bone'); v3 bone textures ('texture_channels') and learned pose
# corrections ('pose_frames'); v4 pose-dependent codes ('pose_conditioning'); v5 texture maps shared by a
# body part's bones ('texture_charts': "parts") and light-dependent codes ('light_conditioning'); older
# versions still load
ACTOR_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
TENSOR_FILE = "actor.safetensors"
JSON_FILE = "actor.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> dict:
    """Write a safetensors file atomically; returns {"file", "bytes", "sha256", "shapes"}."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(clean, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    os.chmod(tmp, new_file_mode())  # safetensors creates 0600 files; others (a render farm) must read them
    info = {"file": path.name, "bytes": tmp.stat().st_size, "sha256": sha256_file(tmp),
            "shapes": {k: list(v.shape) for k, v in clean.items()}}
    os.replace(tmp, path)
    return info


def read_tensors(path: Path, info: dict | None, where: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking size and hash against ``info`` (from the JSON) when given."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MarionetteError(f"{path}: tensor file missing (referenced by {where})")
    if info is not None:
        info = check_tensor_info(info, where)
        size = path.stat().st_size
        if "bytes" in info and size != info["bytes"]:
            raise MarionetteError(f"{path}: file is {size} bytes but {where} says {info['bytes']} — the file is "
                                  "truncated or was replaced; retrain or restore a good copy")
        if "sha256" in info and sha256_file(path) != info["sha256"]:
            raise MarionetteError(f"{path}: contents do not match the SHA-256 recorded in {where} — the file is "
                                  "corrupted or belongs to another actor")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MarionetteError(f"{path}: not a readable safetensors file ({exc})") from None


def check_tensor_info(info, where: str) -> dict:
    """The JSON's ``tensors`` object: ``file`` (a name), ``bytes``, ``sha256``, ``shapes`` with the right types."""
    if not isinstance(info, dict):
        raise MarionetteError(f"{where}: field 'tensors' must be an object (file, bytes, sha256, shapes)")
    out = dict(info)
    if "file" in info:
        string(info["file"], f"{where}: field 'tensors.file'")
    if "bytes" in info:
        out["bytes"] = whole_number(info["bytes"], f"{where}: field 'tensors.bytes'", lo=0, hi=MAX_TENSOR_BYTES)
    if "sha256" in info:
        sha = info["sha256"]
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise MarionetteError(f"{where}: field 'tensors.sha256' must be 64 hexadecimal digits, got {str(sha)[:70]!r}")
    if "shapes" in info:
        shapes = info["shapes"]
        if not isinstance(shapes, dict) or not all(
                isinstance(v, list) and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 40 for n in v)
                for v in shapes.values()):
            raise MarionetteError(f"{where}: field 'tensors.shapes' must map tensor names to lists of sizes")
    return out


def write_json(path: Path, doc: dict) -> None:
    write_json_atomic(path, doc, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def actor_header(actor: Actor) -> dict:
    cfg = actor.config
    js = actor.joint_set
    return {
        # one-Gaussian-per-bone actors stay version 1 so older Marionettes keep reading them
        "format": ACTOR_FORMAT, "version": header_version(cfg),
        "joint_set": js.name, "bones": [list(b) for b in js.bones], "bone_names": js.bone_names,
        "widths": [round(float(w), 6) for w in actor.primitives.widths().detach().cpu()],
        "latent_dim": cfg.latent_dim, "mode": cfg.mode, "density": cfg.density,
        "decoder": cfg.decoder.to_dict(), "per_bone": cfg.per_bone, "colour_cameras": cfg.colour_cameras,
        "pose_frames": cfg.pose_frames, "texture_channels": cfg.texture_channels, "texture_size": cfg.texture_size,
        "pose_conditioning": cfg.pose_conditioning, "texture_charts": cfg.texture_charts,
        "light_conditioning": cfg.light_conditioning,
    }


def header_version(cfg: ActorConfig) -> int:
    """The oldest format version that can describe ``cfg``, so older Marionettes keep reading what they can."""
    if cfg.texture_charts != "bones" or cfg.light_conditioning:
        return 5
    if cfg.pose_conditioning:
        return 4
    if cfg.texture_channels or cfg.pose_frames:
        return 3
    return 2 if (cfg.per_bone > 1 or cfg.colour_cameras) else 1


def save_actor(actor_dir, actor: Actor, training: dict | None = None) -> Path:
    """Write ``actor_dir/actor.safetensors`` then ``actor_dir/actor.json`` (each atomically)."""
    actor_dir = Path(actor_dir)
    actor_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in actor.state_dict().items()}
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise MarionetteError(f"actor: parameter {k!r} contains NaN/inf; refusing to save a broken actor")
    doc = actor_header(actor)
    doc["tensors"] = write_tensors(actor_dir / TENSOR_FILE, state, {"format": ACTOR_FORMAT})
    doc["training"] = dict(training or {})
    doc["training"].setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_json(actor_dir / JSON_FILE, doc)
    return actor_dir


def config_from_header(doc: dict, where: str) -> ActorConfig:
    """Validate the model part of an actor/checkpoint JSON and build its ActorConfig."""
    fmt = doc.get("format")
    if fmt != ACTOR_FORMAT:
        raise MarionetteError(f"{where}: field 'format' is {fmt!r}, expected {ACTOR_FORMAT!r} (not an actor file)")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MarionetteError(f"{where}: field 'version' must be an integer, got {str(version)[:40]!r}")
    if version not in READABLE_VERSIONS:
        newer = "newer" if version > ACTOR_VERSION else "older"
        raise MarionetteError(f"{where}: actor file version {version} is {newer} than the versions this Marionette "
                              f"reads ({', '.join(map(str, READABLE_VERSIONS))}); use a matching Marionette or "
                              "retrain the actor")
    for key, need in (("per_bone", 2), ("colour_cameras", 2), ("pose_frames", 3), ("texture_channels", 3),
                      ("pose_conditioning", 4), ("light_conditioning", 5)):
        if version < need and doc.get(key, 1 if key == "per_bone" else 0) != (1 if key == "per_bone" else 0):
            raise MarionetteError(f"{where}: field {key!r} needs actor file version {need}, the file says {version}")
    charts = doc.get("texture_charts", "bones")
    if charts not in CHART_KINDS:
        raise MarionetteError(f"{where}: field 'texture_charts' must be one of {CHART_KINDS}, got {str(charts)[:40]!r}")
    if version < 5 and charts != "bones":
        raise MarionetteError(f"{where}: field 'texture_charts' needs actor file version 5, the file says {version}")
    for key in ("joint_set", "bones", "latent_dim", "mode", "decoder"):
        if key not in doc:
            raise MarionetteError(f"{where}: missing field {key!r}")
    try:
        js = get_joint_set(string(doc["joint_set"], f"{where}: field 'joint_set'"))
    except MarionetteError as exc:
        raise MarionetteError(f"{where}: field 'joint_set': {exc}") from None
    bones = doc["bones"]
    if not (isinstance(bones, list) and all(isinstance(b, list) and len(b) == 2 and all(
            isinstance(i, int) and not isinstance(i, bool) for i in b) for b in bones)):
        raise MarionetteError(f"{where}: field 'bones' must be a list of [parent, child] joint indices")
    if [list(b) for b in bones] != [list(b) for b in js.bones]:
        raise MarionetteError(f"{where}: field 'bones' does not match the bones of joint set {js.name} in this "
                              "Marionette (the actor was made with a different joint-set definition)")
    sizes = {}
    for key, default in (("latent_dim", None), ("per_bone", 1), ("colour_cameras", 0), ("pose_frames", 0),
                         ("texture_channels", 0), ("texture_size", 16), ("pose_conditioning", 0),
                         ("light_conditioning", 0)):
        value = doc.get(key, default)
        lo = 0 if key in ("colour_cameras", "pose_frames", "texture_channels", "pose_conditioning",
                          "light_conditioning") else (
            2 if key == "texture_size" else 1)
        sizes[key] = number(value, f"{where}: field {key!r}", lo=lo,
                            hi=LIMITS[key], integer=True)
    dec = doc["decoder"]
    if not isinstance(dec, dict):
        raise MarionetteError(f"{where}: field 'decoder' must be an object, got {type(dec).__name__}")
    dec = {k: (number(v, f"{where}: field 'decoder.{k}'", lo=0, hi=LIMITS[k], integer=True) if k in LIMITS else v)
           for k, v in dec.items()}
    mode = string(doc["mode"], f"{where}: field 'mode'")
    density = number(doc.get("density", 30.0), f"{where}: field 'density'", lo=0, lo_open=True)
    try:
        cfg = ActorConfig(joint_set=js.name, latent_dim=sizes["latent_dim"], mode=mode, density=density,
                          per_bone=sizes["per_bone"], colour_cameras=sizes["colour_cameras"],
                          pose_frames=sizes["pose_frames"], texture_channels=sizes["texture_channels"],
                          texture_size=sizes["texture_size"], pose_conditioning=sizes["pose_conditioning"],
                          texture_charts=charts, light_conditioning=sizes["light_conditioning"],
                          decoder=DecoderConfig.from_dict(dec, f"{where}: field 'decoder'"))
    except (TypeError, ValueError) as exc:
        raise MarionetteError(f"{where}: bad field value ({exc})") from None
    try:
        cfg.validate(where)
    except MarionetteError as exc:
        raise MarionetteError(str(exc)) from None
    return cfg


def check_decoder_tensors(cfg: ActorConfig, state: dict[str, torch.Tensor], where: str) -> None:
    """Compare the actor the JSON describes with the tensors on disk *before* building it.

    The whole actor (decoder, textures, pose corrections...) is laid out on PyTorch's "meta"
    device (shapes only, no memory), so a JSON whose sizes were tampered with is refused here
    instead of allocating them.
    """
    from engine.neural.actor.model import Actor as layout  # (the real class, whatever this module's name points at)

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in layout(cfg).state_dict().items()}
    for k, shape in shapes.items():
        if k not in state or tuple(state[k].shape) != shape:
            got = list(state[k].shape) if k in state else "missing"
            raise MarionetteError(f"{where}: tensor {k!r} is {got}, but the actor the JSON describes needs "
                                  f"{list(shape)}; the JSON and the tensor file do not belong together")


def load_state_checked(actor: Actor, state: dict[str, torch.Tensor], where: str, shapes: dict | None) -> None:
    expected = actor.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise MarionetteError(f"{where}: tensors do not match the actor described by its JSON "
                              f"(missing {missing[:5]}, unexpected {extra[:5]})")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise MarionetteError(f"{where}: tensor {k!r} has shape {list(state[k].shape)}, the JSON's configuration "
                                  f"needs {list(v.shape)}")
        if isinstance(shapes, dict) and k in shapes and list(shapes[k]) != list(state[k].shape):
            raise MarionetteError(f"{where}: tensor {k!r} has shape {list(state[k].shape)} but the JSON records "
                                  f"{shapes[k]}")
        if state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all()):
            raise MarionetteError(f"{where}: tensor {k!r} contains NaN/inf")
    actor.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()})


def load_actor(actor_dir, joint_set: JointSet | str | None = None, device="cpu") -> tuple[Actor, dict]:
    """Load and validate an actor folder -> (Actor in eval mode, its JSON).

    ``joint_set``: when given, the actor must have been trained for that joint set.
    """
    actor_dir = Path(actor_dir)
    if actor_dir.is_file() and actor_dir.name in (JSON_FILE, TENSOR_FILE):
        actor_dir = actor_dir.parent
    if not actor_dir.is_dir():
        raise MarionetteError(f"{actor_dir}: actor folder not found (expected a folder with {JSON_FILE} and "
                              f"{TENSOR_FILE}, as written by 'marionette train')")
    json_path = actor_dir / JSON_FILE
    doc = read_json(json_path, "actor description")
    cfg = config_from_header(doc, str(json_path))
    if joint_set is not None:
        want = get_joint_set(joint_set) if isinstance(joint_set, str) else joint_set
        if want.name != cfg.joint_set:
            raise MarionetteError(f"{json_path}: the actor was trained for joint set {cfg.joint_set}, not {want.name}")
    info = doc.get("tensors")
    if not isinstance(info, dict):
        raise MarionetteError(f"{json_path}: missing field 'tensors' (size, hash and shapes of {TENSOR_FILE})")
    info = check_tensor_info(info, str(json_path))
    tensor_path = confined_file(actor_dir, info.get("file", TENSOR_FILE), f"{json_path}: field 'tensors.file'")
    state = read_tensors(tensor_path, info, str(json_path))
    check_decoder_tensors(cfg, state, str(tensor_path))
    actor = Actor(cfg)
    load_state_checked(actor, state, str(tensor_path), info.get("shapes"))
    res = doc.get("training", {}).get("resolution") if isinstance(doc.get("training"), dict) else None
    ok = isinstance(res, list) and len(res) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_RENDER_SIDE for v in res)
    actor.training_resolution = res if ok else None  # [W, H]
    native = doc.get("training", {}).get("person_height_px") if isinstance(doc.get("training"), dict) else None
    # the person's on-screen height the decoder learned at (Actor.forward_scaled); None for older actors
    ok = isinstance(native, (int, float)) and not isinstance(native, bool) and 4 <= native <= 1e5
    actor.native_person_px = float(native) if ok else None
    spread = doc.get("training", {}).get("person_height_range_px") if isinstance(doc.get("training"), dict) else None
    # the spread of those heights over the training views (Actor.forward_supersampled); None for older actors
    ok = isinstance(spread, list) and len(spread) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 1 <= v <= 1e5 for v in spread)
    actor.person_range_px = [float(v) for v in spread] if ok else None
    sha = doc.get("training", {}).get("pose_skeleton_sha256") if isinstance(doc.get("training"), dict) else None
    # the skeleton file the learned pose corrections belong to (engine.neural.actor.evaluate)
    actor.pose_skeleton_sha256 = sha if isinstance(sha, str) and len(sha) == 64 else None
    actor.to(device)
    actor.eval()
    return actor, doc
