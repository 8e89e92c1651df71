"""SMPL model files as plain arrays: load (``.npz`` or a restricted ``.pkl``), validate, save;
and a batched linear-blend-skinning forward in torch.

SMPL model files are licence-restricted: users point Marionette at their own copy; nothing of
the real model is shipped. ``engine.synthetic.smpl.make_synthetic_smpl_model`` builds a stand-in of the same *form*
(24 joints, the SMPL kinematic tree, shape and pose blend shapes, skinning weights) so every
code path can be tested.

Arrays of :class:`SMPLModelData` (V vertices, B shape components, F faces):

=============  ==============  ====================================================
v_template     [V, 3] f64      rest mesh in metres (SMPL: Y up, facing +Z)
shapedirs      [V, 3, B] f64   shape blend shapes (B = 10 for SMPL 1.0, 300 for 1.1)
posedirs       [V, 3, 207]     pose blend shapes (23 joints x 9 rotation-matrix entries)
J_regressor    [24, V] f64     dense; joints = J_regressor @ shaped vertices
weights        [V, 24] f64     skinning weights, rows sum to 1
kintree_table  [2, 24] int64   row 0 = parent of each joint (root's is ignored)
f              [F, 3] int64    triangles
=============  ==============  ====================================================

``landmarks`` maps names (``nose``, ``left_eye`` ... ``right_heel``, ``head_top``) to vertex
ids used by the joint correspondence (``engine.body.smpl.joints``). A real SMPL topology (6890
vertices) gets ``SMPL_LANDMARKS`` automatically; the synthetic model defines its own.

The ``.pkl`` reader never runs code from the file: its unpickler resolves only numpy's array
reconstruction helpers and replaces chumpy and scipy.sparse classes with inert stand-ins whose
state is read as data afterwards; every other global (``os.system``, ``builtins.eval``, ...)
is refused before anything is called.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError
from engine.body.smpl.unpickle import _Inert, _to_plain, restricted_pickle_load

NUM_JOINTS = 24
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)  # 207
GENDERS = ("neutral", "male", "female")

# SMPL's kinematic tree (parent of each joint; -1 for the pelvis).
SMPL_PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21],
                        dtype=np.int64)

# Vertex ids of surface landmarks on the real SMPL topology (6890 vertices). Face and foot
# ids are the ones OpenPose-style fitting conventionally uses on this mesh (they match smplx's
# own table); the head-top id is an anthropometric landmark at the crown.
SMPL_LANDMARKS = {
    "nose": 332, "right_eye": 6260, "left_eye": 2800, "right_ear": 4071, "left_ear": 583,
    "left_big_toe": 3216, "left_small_toe": 3226, "left_heel": 3387,
    "right_big_toe": 6617, "right_small_toe": 6624, "right_heel": 6787,
    "head_top": 412,
}
SMPL_NUM_VERTICES = 6890


@dataclass
class SMPLModelData:
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    kintree_table: np.ndarray
    f: np.ndarray
    gender: str = "neutral"
    landmarks: dict = field(default_factory=dict)
    source: str = ""

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.shapedirs.shape[2])

    @property
    def parents(self) -> np.ndarray:
        p = np.asarray(self.kintree_table[0], dtype=np.int64).copy()
        p[0] = -1
        return p

    def rest_joints(self, betas=None) -> np.ndarray:
        """Rest-pose joints [24, 3] for shape ``betas`` (zeros by default)."""
        v = self.v_template
        if betas is not None:
            b = np.asarray(betas, dtype=np.float64)
            v = v + np.einsum("vck,k->vc", self.shapedirs[:, :, : b.shape[0]], b)
        return self.J_regressor @ v

    def validate(self, where: str = "SMPL model") -> "SMPLModelData":
        """Check shapes and values; raise MarionetteError naming the field on any mismatch."""
        def need(name, ok, expected):
            if not ok:
                arr = getattr(self, name)
                shape = list(np.shape(arr)) if arr is not None else None
                raise MarionetteError(f"{where}: field '{name}' has shape {shape}, expected {expected}")

        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"):
            if getattr(self, name) is None:
                raise MarionetteError(f"{where}: missing field '{name}'")
        V = self.v_template.shape[0] if self.v_template.ndim == 2 else -1
        need("v_template", self.v_template.ndim == 2 and self.v_template.shape[1] == 3 and V > 0, "[V, 3]")
        need("shapedirs", self.shapedirs.ndim == 3 and self.shapedirs.shape[:2] == (V, 3) and self.shapedirs.shape[2] >= 1,
             f"[{V}, 3, B]")
        need("kintree_table", self.kintree_table.ndim == 2 and self.kintree_table.shape[0] == 2, "[2, 24]")
        nj = self.kintree_table.shape[1]
        if nj != NUM_JOINTS:
            raise MarionetteError(f"{where}: field 'kintree_table' describes {nj} joints; only SMPL (24 joints) is "
                                  "supported, not SMPL-H/SMPL-X")
        need("posedirs", self.posedirs.ndim == 3 and self.posedirs.shape == (V, 3, NUM_POSE_BASIS),
             f"[{V}, 3, {NUM_POSE_BASIS}]")
        need("J_regressor", self.J_regressor.ndim == 2 and self.J_regressor.shape == (NUM_JOINTS, V), f"[24, {V}]")
        need("weights", self.weights.ndim == 2 and self.weights.shape == (V, NUM_JOINTS), f"[{V}, 24]")
        need("f", self.f.ndim == 2 and self.f.shape[1] == 3, "[F, 3]")
        for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
            if not np.isfinite(getattr(self, name)).all():
                raise MarionetteError(f"{where}: field '{name}' contains NaN or infinite values")
        if self.f.size and (self.f.min() < 0 or self.f.max() >= V):
            raise MarionetteError(f"{where}: field 'f' has vertex indices outside 0..{V - 1}")
        parents = self.parents
        if not all(0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
            raise MarionetteError(f"{where}: field 'kintree_table' is not a tree with parents before children")
        if not np.allclose(parents, SMPL_PARENTS):
            raise MarionetteError(f"{where}: field 'kintree_table' is not SMPL's kinematic tree "
                                  f"(parents {parents.tolist()})")
        if self.gender not in GENDERS:
            raise MarionetteError(f"{where}: gender {self.gender!r}, expected one of {GENDERS}")
        for name, vid in self.landmarks.items():
            if not (0 <= int(vid) < V):
                raise MarionetteError(f"{where}: landmark {name!r} vertex {vid} outside 0..{V - 1}")
        return self


# ------------------------------------------------------------------------------------------
# loading / saving

_FIELDS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _gender_from_name(path: Path) -> str:
    low = path.name.lower()
    if "female" in low or "_f." in low or low.endswith("_f"):
        return "female"
    if "male" in low or "_m." in low:
        return "male"
    return "neutral"


def _from_dict(d: dict, where: str, gender: str, landmarks: dict | None) -> SMPLModelData:
    arrays = {}
    for name in _FIELDS:
        if name not in d:
            raise MarionetteError(f"{where}: missing field '{name}' (is this an SMPL model file?)")
        val = d[name]
        if isinstance(val, _Inert):
            val = _to_plain(val, where, name)
        try:
            arr = np.asarray(val)
        except Exception as exc:  # noqa: BLE001 - anything odd inside a user file
            raise MarionetteError(f"{where}: field '{name}' is not an array ({exc})") from None
        if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
            raise MarionetteError(f"{where}: field '{name}' is not numeric (dtype {arr.dtype})")
        arrays[name] = arr
    if arrays["posedirs"].ndim == 2:  # some exports store [V*3, 207]
        p = arrays["posedirs"]
        if p.shape[0] % 3 == 0:
            arrays["posedirs"] = p.reshape(p.shape[0] // 3, 3, p.shape[1])
    data = SMPLModelData(
        v_template=arrays["v_template"].astype(np.float64),
        shapedirs=arrays["shapedirs"].astype(np.float64),
        posedirs=arrays["posedirs"].astype(np.float64),
        J_regressor=arrays["J_regressor"].astype(np.float64),
        weights=arrays["weights"].astype(np.float64),
        kintree_table=arrays["kintree_table"].astype(np.int64),
        f=arrays["f"].astype(np.int64),
        gender=gender,
        source=where,
    )
    if landmarks is not None:
        data.landmarks = dict(landmarks)
    elif data.v_template.ndim == 2 and data.v_template.shape[0] == SMPL_NUM_VERTICES:
        data.landmarks = dict(SMPL_LANDMARKS)
    return data.validate(where)


def load_smpl_model(path, gender: str | None = None) -> SMPLModelData:
    """Load an SMPL model from ``.npz`` or ``.pkl`` (or a folder holding ``SMPL_<GENDER>.npz|pkl``).

    gender: ``neutral``/``male``/``female``; by default taken from the file (``gender`` field of
    our ``.npz``) or its name (``..._FEMALE.pkl``), else ``neutral``.
    """
    path = Path(path)
    if gender is not None:
        gender = gender.lower()
        if gender not in GENDERS:
            raise MarionetteError(f"gender {gender!r}: expected one of {', '.join(GENDERS)}")
    if path.is_dir():
        candidates = [path / f"SMPL_{(gender or 'neutral').upper()}.{ext}" for ext in ("npz", "pkl")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise MarionetteError(f"{path}: folder has no {' or '.join(c.name for c in candidates)}")
        path = found[0]
    if not path.is_file():
        raise MarionetteError(f"{path}: SMPL model file not found")
    where = str(path)
    raw = path.read_bytes()
    landmarks = None
    if raw[:4] == b"PK\x03\x04":  # .npz (zip)
        d = {}
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                for k in z.files:
                    try:
                        d[k] = z[k]
                    except ValueError as exc:  # a pickled (object) entry: refused; fatal only if we need it
                        if k in _FIELDS:
                            raise MarionetteError(f"{where}: field '{k}' is a pickled object array ({exc}); "
                                                  "expected a numeric array") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise MarionetteError(f"{where}: not a readable .npz model file ({exc})") from None
        file_gender = str(d["gender"]) if "gender" in d else None
        if "landmark_names" in d and "landmark_ids" in d:
            landmarks = {str(n): int(i) for n, i in zip(d["landmark_names"], d["landmark_ids"])}
    elif raw[:1] == b"\x80" or path.suffix.lower() == ".pkl":
        d = restricted_pickle_load(raw, where)
        if not isinstance(d, dict):
            raise MarionetteError(f"{where}: expected a pickled dict of arrays, got {type(d).__name__}")
        file_gender = None
    else:
        raise MarionetteError(f"{where}: unknown model file kind; expected an SMPL .npz or .pkl")
    if file_gender is not None and file_gender not in GENDERS:
        file_gender = None
    g = gender or file_gender or _gender_from_name(path)
    return _from_dict(d, where, g, landmarks)


def save_smpl_npz(path, data: SMPLModelData) -> None:
    """Write a model as ``.npz`` (no pickles), atomically."""
    data.validate(str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(data.landmarks)
    arrays = {name: getattr(data, name) for name in _FIELDS}
    arrays.update(gender=np.array(data.gender), landmark_names=np.array(names, dtype=str),
                  landmark_ids=np.array([int(data.landmarks[n]) for n in names], dtype=np.int64))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
