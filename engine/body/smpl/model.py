"""SMPL model files as plain arrays: load (``.npz`` or a restricted ``.pkl``), validate, save, build
a synthetic SMPL-format model for tests, and a batched linear-blend-skinning forward in torch.

SMPL model files are licence-restricted: users point Marionette at their own copy; nothing of
the real model is shipped. ``make_synthetic_smpl_model`` builds a stand-in of the same *form*
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

import contextlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine import MarionetteError

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
# restricted unpickler


class _Inert:
    """Stand-in for a chumpy / scipy.sparse object: records its state, runs nothing."""

    _module = ""
    _qualname = ""

    def __init__(self, *args, **kwargs):
        self._args = args
        self._state = None

    def __setstate__(self, state):
        self._state = state

    @property
    def kind(self) -> str:
        return f"{self._module}.{self._qualname}"


_INERT_CLASSES: dict[tuple[str, str], type] = {}


def _inert_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(f"Inert_{name}", (_Inert,), {"_module": module, "_qualname": name})
    return _INERT_CLASSES[key]


def _safe_reconstructor(cls, base, state):
    """copyreg._reconstructor for protocol-0/1 pickles, restricted to inert stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, _Inert)) or base is not object:
        raise pickle.UnpicklingError("refused: copyreg._reconstructor on a non-data class")
    obj = cls()
    return obj


def _safe_codecs_encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode as protocol-0..2 pickles use it for bytes: str -> bytes, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("refused: _codecs.encode with non-text arguments")
    return text.encode(encoding, errors)


_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        import numpy.core.multiarray as ma

        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(ma, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
            from numpy.core.numeric import _frombuffer
            return _frombuffer
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _safe_codecs_encode
        if module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset"):
            return {"object": object, "set": set, "frozenset": frozenset}[name]
        if module.split(".")[0] == "chumpy":
            return _inert_class(module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_NAMES:
            return _inert_class(module, name)
        raise pickle.UnpicklingError(f"refused to load global '{module}.{name}' (only arrays and plain "
                                     "containers are allowed)")


def _sparse_to_dense(obj: _Inert, where: str) -> np.ndarray:
    state = obj._state if isinstance(obj._state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    fmt = obj._qualname[:3]
    try:
        shape = tuple(int(s) for s in shape)
        out = np.zeros(shape, dtype=np.float64)
        data = np.asarray(state["data"], dtype=np.float64)
        if fmt == "coo":
            rows = np.asarray(state.get("row", state.get("coords", [None])[0]), dtype=np.int64)
            cols = np.asarray(state.get("col", state.get("coords", [None, None])[1]), dtype=np.int64)
        else:
            indices = np.asarray(state["indices"], dtype=np.int64)
            indptr = np.asarray(state["indptr"], dtype=np.int64)
            major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, cols = (indices, major) if fmt == "csc" else (major, indices)
        np.add.at(out, (rows, cols), data)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MarionetteError(f"{where}: could not read sparse matrix {obj.kind} ({exc})") from None
    return out


def _to_plain(obj, where: str, key: str = ""):
    """Convert inert stand-ins to numpy arrays, recursively through containers."""
    if isinstance(obj, _Inert):
        if obj._module.startswith("scipy.sparse"):
            return _sparse_to_dense(obj, where)
        state = obj._state
        if isinstance(state, dict) and "x" in state:  # a chumpy Ch keeps its value in 'x'
            return np.asarray(_to_plain(state["x"], where, key))
        raise MarionetteError(f"{where}: field '{key}' is a {obj.kind} object whose value cannot be read "
                              "without running chumpy; re-save the model with plain numpy arrays")
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _to_plain(v, where, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v, where, key) for v in obj)
    return obj


def restricted_pickle_load(data: bytes, where: str = "pickle"):
    """Unpickle ``data`` allowing only numpy arrays, plain containers and (inert) chumpy/scipy.sparse
    objects; raise MarionetteError for anything else, before it is called."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise MarionetteError(f"{where}: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError) as exc:
        raise MarionetteError(f"{where}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    return _to_plain(obj, where)


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


# ------------------------------------------------------------------------------------------
# synthetic model

# Rest joints of a plausible adult in SMPL's frame (metres; Y up, facing +Z, subject's left at +X).
_SYNTH_JOINTS = np.array([
    [0.00, -0.22, 0.02],   # pelvis
    [0.06, -0.31, 0.01],   # left_hip
    [-0.06, -0.31, 0.01],  # right_hip
    [0.00, -0.11, -0.01],  # spine1
    [0.10, -0.69, 0.01],   # left_knee
    [-0.10, -0.69, 0.01],  # right_knee
    [0.00, 0.03, 0.00],    # spine2
    [0.09, -1.09, -0.03],  # left_ankle
    [-0.09, -1.09, -0.03],  # right_ankle
    [0.00, 0.09, 0.02],    # spine3
    [0.12, -1.15, 0.09],   # left_foot
    [-0.12, -1.15, 0.09],  # right_foot
    [0.00, 0.29, -0.01],   # neck
    [0.08, 0.20, 0.00],    # left_collar
    [-0.08, 0.20, 0.00],   # right_collar
    [0.00, 0.37, 0.04],    # head
    [0.19, 0.23, -0.01],   # left_shoulder
    [-0.19, 0.23, -0.01],  # right_shoulder
    [0.45, 0.21, -0.03],   # left_elbow
    [-0.45, 0.21, -0.03],  # right_elbow
    [0.71, 0.22, -0.03],   # left_wrist
    [-0.71, 0.22, -0.03],  # right_wrist
    [0.80, 0.21, -0.04],   # left_hand
    [-0.80, 0.21, -0.04],  # right_hand
])

# Landmarks relative to a joint: name -> (joint, offset in the rest frame).
_SYNTH_LANDMARKS = {
    "nose": (15, (0.0, 0.02, 0.11)),
    "left_eye": (15, (0.035, 0.055, 0.085)),
    "right_eye": (15, (-0.035, 0.055, 0.085)),
    "left_ear": (15, (0.075, 0.03, 0.0)),
    "right_ear": (15, (-0.075, 0.03, 0.0)),
    "head_top": (15, (0.0, 0.175, 0.0)),
    "left_big_toe": (10, (-0.015, -0.03, 0.08)),
    "left_small_toe": (10, (0.04, -0.03, 0.05)),
    "left_heel": (7, (0.0, -0.07, -0.07)),
    "right_big_toe": (11, (0.015, -0.03, 0.08)),
    "right_small_toe": (11, (-0.04, -0.03, 0.05)),
    "right_heel": (8, (0.0, -0.07, -0.07)),
}


def _synthetic_segments():
    """(driving joint, start, end, radius) capsules that make up the synthetic body."""
    J = _SYNTH_JOINTS
    segs = []
    radius = {0: 0.12, 1: 0.075, 2: 0.075, 3: 0.12, 4: 0.055, 5: 0.055, 6: 0.13, 7: 0.04, 8: 0.04, 9: 0.13,
              12: 0.05, 13: 0.05, 14: 0.05, 16: 0.045, 17: 0.045, 18: 0.038, 19: 0.038, 20: 0.03, 21: 0.03}
    for child in range(1, NUM_JOINTS):
        parent = int(SMPL_PARENTS[child])
        if parent in radius:
            segs.append((parent, J[parent], J[child], radius[parent]))
    segs.append((15, J[15] + [0, -0.02, 0], J[15] + [0, 0.12, 0], 0.09))  # head
    segs.append((22, J[22], J[22] + [0.09, 0, 0], 0.025))  # left hand
    segs.append((23, J[23], J[23] + [-0.09, 0, 0], 0.025))  # right hand
    segs.append((10, J[10] - [0, 0, 0.06], J[10] + [0, 0, 0.06], 0.03))  # left foot
    segs.append((11, J[11] - [0, 0, 0.06], J[11] + [0, 0, 0.06], 0.03))  # right foot
    return segs


def _point_segment_distance(points, a, b):
    ab = b - a
    t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def make_synthetic_smpl_model(seed: int = 0, num_vertices: int = SMPL_NUM_VERTICES, num_betas: int = 10,
                              gender: str = "neutral") -> SMPLModelData:
    """A synthetic SMPL-format model (not SMPL's data) for tests and benchmarks.

    Capsules around the bones of a plausible 1.7 m adult, smooth skinning weights, a J_regressor
    that averages a small ring of vertices around each joint (so rest joints are exact), shape
    blend shapes that change height, width and limb lengths, and small smooth pose blend shapes.
    Landmarks (nose, eyes, ears, head top, toes, heels) are vertices placed on purpose.
    """
    rng = np.random.default_rng(seed)
    J = _SYNTH_JOINTS
    ring = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64) * 0.02
    n_ring = NUM_JOINTS * len(ring)
    n_land = len(_SYNTH_LANDMARKS)
    n_surface = num_vertices - n_ring - n_land
    if n_surface < 200:
        raise MarionetteError(f"synthetic model needs at least {n_ring + n_land + 200} vertices, got {num_vertices}")

    # surface: a grid (rings x around) on every capsule, with faces; leftovers scattered on capsules
    segs = _synthetic_segments()
    areas = np.array([(np.linalg.norm(b - a) + r) * r for _, a, b, r in segs])
    around = 10
    budget = int(n_surface * 0.9)
    rings_per = np.maximum(2, np.floor(areas / areas.sum() * budget / around)).astype(int)
    while rings_per.sum() * around > n_surface:
        rings_per[np.argmax(rings_per)] -= 1
    verts, faces, drivers = [], [], []
    base = n_ring + n_land
    for (jnt, a, b, r), nr in zip(segs, rings_per):
        axis = b - a
        length = np.linalg.norm(axis)
        u = axis / length
        helper = np.array([0, 0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0, 0])
        e1 = np.cross(u, helper); e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        start = base + len(verts)
        for i in range(nr):
            s = i / (nr - 1)
            taper = 1.0 - 0.15 * s
            for k in range(around):
                ang = 2 * np.pi * k / around
                verts.append(a + s * axis + r * taper * (np.cos(ang) * e1 + np.sin(ang) * e2))
                drivers.append(jnt)
        for i in range(nr - 1):
            for k in range(around):
                v00 = start + i * around + k
                v01 = start + i * around + (k + 1) % around
                v10 = v00 + around
                v11 = v01 + around
                faces.append((v00, v10, v11))
                faces.append((v00, v11, v01))
    while len(verts) < n_surface:
        jnt, a, b, r = segs[rng.integers(len(segs))]
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        verts.append(a + rng.uniform() * (b - a) + r * d)
        drivers.append(jnt)

    ring_verts = (J[:, None, :] + ring[None]).reshape(-1, 3)
    land_verts = np.array([J[j] + np.asarray(off) for j, off in _SYNTH_LANDMARKS.values()])
    v_template = np.concatenate([ring_verts, land_verts, np.asarray(verts)], axis=0)
    V = v_template.shape[0]
    assert V == num_vertices

    # skinning: Gaussian falloff with distance to each joint's capsules, normalised
    dist = np.full((V, NUM_JOINTS), np.inf)
    for jnt, a, b, r in segs:
        dist[:, jnt] = np.minimum(dist[:, jnt], _point_segment_distance(v_template, a, b))
    for j in range(NUM_JOINTS):  # joints without capsules (collars drive short ones; all covered) still get a blob
        if not np.isfinite(dist[:, j]).any():
            dist[:, j] = np.linalg.norm(v_template - J[j], axis=1)
    logits = -(np.where(np.isfinite(dist), dist, 10.0) / 0.035) ** 2
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights[weights < 1e-4] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)

    J_regressor = np.zeros((NUM_JOINTS, V))
    for j in range(NUM_JOINTS):
        J_regressor[j, j * len(ring):(j + 1) * len(ring)] = 1.0 / len(ring)

    # shape space: height, girth, then smooth per-joint displacements (limb lengths, proportions)
    shapedirs = np.zeros((V, 3, num_betas))
    centre = J[0]
    rel = v_template - centre
    shapedirs[:, :, 0] = 0.05 * rel
    if num_betas > 1:
        shapedirs[:, 0, 1] = 0.04 * rel[:, 0]
        shapedirs[:, 2, 1] = 0.04 * rel[:, 2]
    for k in range(2, num_betas):
        # displacement of each joint along its bone direction and a little sideways, blended
        disp = rng.normal(scale=0.012 / np.sqrt(k - 1), size=(NUM_JOINTS, 3))
        disp[0] = 0.0
        # move each joint's whole subtree with it so limb lengths change, not just one spot
        acc = np.zeros_like(disp)
        for j in range(1, NUM_JOINTS):
            acc[j] = acc[SMPL_PARENTS[j]] + disp[j]
        shapedirs[:, :, k] = weights @ acc
    posedirs = np.einsum("vj,jck->vck", weights, rng.normal(scale=0.002, size=(NUM_JOINTS, 3, NUM_POSE_BASIS)))

    kintree = np.stack([SMPL_PARENTS.copy(), np.arange(NUM_JOINTS)])
    kintree[0, 0] = -1
    landmarks = {name: n_ring + i for i, name in enumerate(_SYNTH_LANDMARKS)}
    data = SMPLModelData(v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, J_regressor=J_regressor,
                         weights=weights, kintree_table=kintree.astype(np.int64), f=np.asarray(faces, dtype=np.int64),
                         gender=gender, landmarks=landmarks, source=f"synthetic(seed={seed})")
    return data.validate("synthetic SMPL model")


# ------------------------------------------------------------------------------------------
# smplx interop


def smplx_vertex_ids(data: SMPLModelData) -> dict:
    """The ``vertex_ids`` table smplx wants, from our landmarks (0 where a landmark is unknown)."""
    lm = data.landmarks
    get = lambda n: int(lm.get(n, 0))  # noqa: E731
    ids = {"nose": get("nose"), "reye": get("right_eye"), "leye": get("left_eye"), "rear": get("right_ear"),
           "lear": get("left_ear"), "LBigToe": get("left_big_toe"), "LSmallToe": get("left_small_toe"),
           "LHeel": get("left_heel"), "RBigToe": get("right_big_toe"), "RSmallToe": get("right_small_toe"),
           "RHeel": get("right_heel")}
    for side in "lr":
        for tip in ("thumb", "index", "middle", "ring", "pinky"):
            ids[side + tip] = 0
    return ids


def to_smplx(data: SMPLModelData, device="cpu", batch_size: int = 1, num_betas: int | None = None,
             dtype=None):
    """An ``smplx.SMPL`` built from the arrays (no file read by smplx)."""
    import smplx
    import torch
    from smplx.utils import Struct

    struct = Struct(v_template=data.v_template, shapedirs=data.shapedirs, posedirs=data.posedirs,
                    J_regressor=data.J_regressor, weights=data.weights, kintree_table=data.kintree_table,
                    f=data.f)
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for 10-component models
        model = smplx.SMPL(model_path="", data_struct=struct, gender=data.gender, batch_size=batch_size,
                           num_betas=num_betas or min(10, data.num_betas), vertex_ids=smplx_vertex_ids(data),
                           use_hands=False, dtype=dtype or torch.float32)
    return model.to(device)


# ------------------------------------------------------------------------------------------
# batched LBS in torch (same math as SMPL: shape blend, joint regression, pose blend, FK, skinning)


def batch_rodrigues(aa):
    """Axis-angle [..., 3] -> rotation matrices [..., 3, 3]; smooth at zero."""
    import torch

    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-16)
    # for tiny angles use the Taylor series: sin(t)/t ~ 1 - t^2/6, (1-cos t)/t^2 ~ 1/2 - t^2/24
    small = theta2 < 1e-8
    sin_t = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)  # sin(t)/t
    cos_t = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-16))
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + sin_t[..., None] * K + cos_t[..., None] * (K @ K)


class SMPLTorch:
    """Batched SMPL forward on plain tensors.

    ``joints(betas, pose, trans)`` returns the 24 posed joints (cheap: joints depend on shape only
    through ``J_regressor @ shapedirs``, precomputed) and, when ``vertex_ids`` are given, the posed
    positions of those vertices (skinned individually, with pose blend shapes). ``vertices`` gives
    the whole mesh. pose: [B, 24, 3] axis-angle (joint 0 = global orientation); betas [B, K] or [K].
    """

    def __init__(self, data: SMPLModelData, device="cpu", dtype=None, num_betas: int | None = None):
        import torch

        self.dtype = dtype or torch.float32
        self.device = torch.device(device)
        nb = min(num_betas or 10, data.num_betas)
        self.num_betas = nb
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=self.dtype, device=self.device)  # noqa: E731
        self.v_template = t(data.v_template)
        self.shapedirs = t(data.shapedirs[:, :, :nb])
        self.posedirs = t(data.posedirs)
        self.J_regressor = t(data.J_regressor)
        self.weights = t(data.weights)
        self.parents = data.parents.tolist()
        self.J_template = t(data.J_regressor @ data.v_template)
        self.J_shapedirs = t(np.einsum("jv,vck->jck", data.J_regressor, data.shapedirs[:, :, :nb]))
        self.faces = torch.as_tensor(data.f, dtype=torch.long, device=self.device)
        # joints grouped by tree depth so forward kinematics runs one batched step per level
        depth = [0] * NUM_JOINTS
        for j in range(1, NUM_JOINTS):
            depth[j] = depth[self.parents[j]] + 1
        self.levels = [[j for j in range(NUM_JOINTS) if depth[j] == d] for d in range(1, max(depth) + 1)]
        self.level_idx = [torch.tensor(lv, device=self.device) for lv in self.levels]
        self.level_par = [torch.tensor([self.parents[j] for j in lv], device=self.device) for lv in self.levels]

    def rest_joints(self, betas):
        """[..., K] -> [..., 24, 3]"""
        import torch

        return self.J_template + torch.einsum("jck,...k->...jc", self.J_shapedirs, betas)

    def _transforms(self, rot, rest):
        """World rotation and translation of every joint: rot [B,24,3,3], rest [B,24,3] ->
        (R [B,24,3,3], posed joints [B,24,3])."""
        import torch

        B = rot.shape[0]
        par = torch.tensor([0] + self.parents[1:], device=self.device)
        rel = rest - rest[:, par]  # bone vectors; row 0 is zero
        rel = torch.cat([rest[:, :1], rel[:, 1:]], dim=1)
        R_all = rot.new_zeros(B, NUM_JOINTS, 3, 3)
        P_all = rest.new_zeros(B, NUM_JOINTS, 3)
        R_all = R_all.index_copy(1, torch.tensor([0], device=self.device), rot[:, :1])
        P_all = P_all.index_copy(1, torch.tensor([0], device=self.device), rest[:, :1])
        for idx, pidx in zip(self.level_idx, self.level_par):
            Rp = R_all[:, pidx]
            Pj = P_all[:, pidx] + (Rp @ rel[:, idx, :, None])[..., 0]
            Rj = Rp @ rot[:, idx]
            R_all = R_all.index_copy(1, idx, Rj)
            P_all = P_all.index_copy(1, idx, Pj)
        return R_all, P_all

    def forward(self, betas, pose, trans=None, vertex_ids=None, full_mesh=False):
        """-> dict(joints [B,24,3], vertices [B,V',3] or None, rot [B,24,3,3])."""
        import torch

        B = pose.shape[0]
        pose = pose.reshape(B, NUM_JOINTS, 3)
        if betas.dim() == 1:
            betas = betas.expand(B, -1)
        rot = batch_rodrigues(pose)
        rest = self.rest_joints(betas)
        R, posed = self._transforms(rot, rest)
        out = {"joints": posed, "rot": R, "vertices": None}
        if full_mesh or vertex_ids is not None:
            if full_mesh:
                vt, sd, pd, w = self.v_template, self.shapedirs, self.posedirs, self.weights
            else:
                ids = torch.as_tensor(vertex_ids, dtype=torch.long, device=self.device)
                vt, sd, pd, w = self.v_template[ids], self.shapedirs[ids], self.posedirs[ids], self.weights[ids]
            eye = torch.eye(3, dtype=rot.dtype, device=rot.device)
            feat = (rot[:, 1:] - eye).reshape(B, -1)  # [B, 207]
            v = vt + torch.einsum("vck,bk->bvc", sd, betas) + torch.einsum("vcp,bp->bvc", pd, feat)
            # skinning: x' = sum_j w_j (R_j (x - rest_j) + posed_j)
            A_t = posed - (R @ rest[..., None])[..., 0]  # [B,24,3]
            Rw = torch.einsum("vj,bjcd->bvcd", w, R)
            tw = torch.einsum("vj,bjc->bvc", w, A_t)
            out["vertices"] = (Rw @ v[..., None])[..., 0] + tw
        if trans is not None:
            out["joints"] = out["joints"] + trans[:, None]
            if out["vertices"] is not None:
                out["vertices"] = out["vertices"] + trans[:, None]
        return out

    __call__ = forward
