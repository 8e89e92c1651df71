"""Bone maps as data: one JSON file per rig in this folder, and detection of the rig from bone names.

Each file maps Marionette's canonical joint names (``engine.body.joint_sets``'
vocabulary, e.g. ``"left_knee"``) to the rig's bone whose *head* sits at that
joint (``"mixamorig:LeftLeg"``)::

    {"name": "mixamo", "title": "...", "kind": "armature" | "joint_set",
     "joint_set": "SMPL_24"            (joint_set maps only: their "joints" default to the joint set's
                                        own names, from ``engine.body.joint_sets``, the one source),
     "strip_prefix": ":"               (optional: ignore a namespace before ':' when matching),
     "rest_joints": {"Hips": [x, y, z]} (optional: a default rest skeleton, metres, Z up, facing -Y),
     "joints": {"pelvis": "Hips", "left_hip": "LeftUpLeg", ...}}

Bone names are matched case-insensitively, ignoring ``.``/``_``/``-``/spaces, and
(with ``strip_prefix``) anything up to the last ``:``. To support a new rig, drop
a file here; nothing else changes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine import MarionetteError

RIG_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class RigMap:
    name: str
    title: str
    kind: str
    joints: dict  # canonical joint -> bone name (as written in the file)
    joint_set: str | None = None
    strip_prefix: str | None = None
    about: str = ""
    path: str = ""
    rest_joints: dict | None = None  # optional: bone name -> rest head position (metres, Z up, facing -Y)

    def match(self, bone_names) -> dict[str, str]:
        """canonical joint -> actual bone name, for the joints of this map present in ``bone_names``."""
        by_key: dict[str, str] = {}
        for b in bone_names:
            by_key.setdefault(normalize_bone_name(b, self.strip_prefix), b)
        found = {}
        for canon, bone in self.joints.items():
            key = normalize_bone_name(bone, self.strip_prefix)
            if key in by_key:
                found[canon] = by_key[key]
        return found


@dataclass
class Detection:
    rig: RigMap | None
    mapping: dict[str, str]  # canonical joint -> bone name
    score: float  # Jaccard overlap between the rig's bones and the armature's
    candidates: list = field(default_factory=list)  # (score, rig name), best first


def normalize_bone_name(name: str, strip_prefix: str | None = None) -> str:
    name = str(name)
    if strip_prefix and strip_prefix in name:
        name = name.rsplit(strip_prefix, 1)[1]
    return re.sub(r"[\s._\-]+", "", name).lower()


def _joint_set_bones(name: str, path: Path) -> dict[str, str]:
    """canonical joint -> the joint set's own joint name (joint-set skeletons have one bone per joint)."""
    from engine.body.joint_sets import get_joint_set

    try:
        js = get_joint_set(str(name))
    except MarionetteError as exc:
        raise MarionetteError(f"{path}: field 'joint_set': {exc}") from None
    return dict(zip(js.canonical, js.names))


def _load(path: Path) -> RigMap:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MarionetteError(f"{path}: not a readable rig map JSON ({exc})") from None
    for key in ("name", "kind"):
        if key not in data:
            raise MarionetteError(f"{path}: missing field {key!r}")
    if data["kind"] not in ("armature", "joint_set"):
        raise MarionetteError(f"{path}: field 'kind' must be 'armature' or 'joint_set', got {data['kind']!r}")
    if "joints" not in data and data["kind"] == "joint_set" and "joint_set" in data:
        data["joints"] = _joint_set_bones(data["joint_set"], path)
    if "joints" not in data:
        raise MarionetteError(f"{path}: missing field 'joints'")
    joints = data["joints"]
    if not isinstance(joints, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in joints.items()):
        raise MarionetteError(f"{path}: field 'joints' must map canonical joint names to bone names (strings)")
    if len(set(joints.values())) != len(joints):
        raise MarionetteError(f"{path}: field 'joints' maps two joints to the same bone")
    rest = data.get("rest_joints")
    if rest is not None:
        ok = isinstance(rest, dict) and all(
            isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v) for v in rest.values())
        if not ok:
            raise MarionetteError(f"{path}: field 'rest_joints' must map bone names to [x, y, z] in metres")
    return RigMap(name=data["name"], title=data.get("title", data["name"]), kind=data["kind"], joints=dict(joints),
                  joint_set=data.get("joint_set"), strip_prefix=data.get("strip_prefix"),
                  about=data.get("about", ""), path=str(path), rest_joints=rest)


_CACHE: dict[str, RigMap] = {}


def list_rigs() -> list[RigMap]:
    """Every rig map shipped in ``engine/rigs``, sorted by name."""
    if not _CACHE:
        for path in sorted(RIG_DIR.glob("*.json")):
            rig = _load(path)
            _CACHE[rig.name] = rig
    return [_CACHE[k] for k in sorted(_CACHE)]


def load_rig(name_or_path) -> RigMap:
    """A shipped rig map by name (``"mixamo"``, ``"smpl_24"``, joint-set names work too) or a JSON file path."""
    p = Path(str(name_or_path))
    if p.suffix == ".json" and p.is_file():
        return _load(p)
    key = str(name_or_path).lower().replace("-", "_")
    rigs = {r.name: r for r in list_rigs()}
    if key in rigs:
        return rigs[key]
    for r in rigs.values():
        if r.joint_set and r.joint_set.lower() == key:
            return r
    raise MarionetteError(f"unknown rig {name_or_path!r}; expected one of {', '.join(rigs)} or a rig map .json file")


def detect_rig(bone_names, min_joints: int = 6) -> Detection:
    """Pick the rig map whose bones best match ``bone_names``.

    Score: matched joints / (joints in the map + bones in the armature - matched) (Jaccard),
    so a rig with extra finger bones still picks its own map but a map that merely
    shares a few generic names (``"head"``) does not win. Returns ``rig=None`` when
    no map matches at least ``min_joints`` joints.
    """
    names = [str(b) for b in bone_names]
    scored = []
    for rig in list_rigs():
        m = rig.match(names)
        denom = len(rig.joints) + len(names) - len(m)
        scored.append((len(m) / denom if denom else 0.0, len(m), rig, m))
    scored.sort(key=lambda s: (-s[0], -s[1], s[2].name))
    cands = [(round(s, 4), r.name) for s, _, r, _ in scored if s > 0]
    best = scored[0] if scored else None
    if best is None or best[1] < min_joints:
        return Detection(None, {}, 0.0, cands)
    return Detection(best[2], best[3], best[0], cands)
