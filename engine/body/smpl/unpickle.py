"""A restricted unpickler for SMPL ``.pkl`` files (and the GMM pose prior): never runs code from the file.

It resolves only numpy's array reconstruction helpers and replaces chumpy and scipy.sparse classes
with inert stand-ins whose state is read as data afterwards; every other global (``os.system``,
``builtins.eval``, ...) is refused before anything is called.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from engine import MarionetteError


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


