"""SMPL model files: synthetic model, npz / restricted-pkl loading, validation, LBS vs smplx."""

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.body.smpl.model import SMPL_LANDMARKS, load_smpl_model, save_smpl_npz
from engine.body.smpl.skinning import SMPLTorch
from engine.synthetic.smpl import make_synthetic_smpl_model
from engine.body.smpl.unpickle import restricted_pickle_load
from engine.body.smpl.smplx_adapter import to_smplx


@pytest.fixture(scope="module")
def model():
    return make_synthetic_smpl_model(0)


@pytest.fixture(scope="module")
def small():
    """Fewer vertices: fast to save and pickle (no real-SMPL landmarks apply)."""
    return make_synthetic_smpl_model(0, num_vertices=1000)


def test_synthetic_model_shapes_and_plausibility(model):
    assert model.v_template.shape == (6890, 3)
    assert model.shapedirs.shape == (6890, 3, 10)
    assert model.posedirs.shape == (6890, 3, 207)
    assert model.J_regressor.shape == (24, 6890)
    assert np.allclose(model.weights.sum(1), 1.0)
    J = model.rest_joints()
    height = J[:, 1].max() - J[:, 1].min()
    assert 1.3 < height < 1.9  # head joint to foot joint of an adult
    assert J[1, 0] > 0 > J[2, 0]  # SMPL: the subject's left is +X
    # shape changes limb lengths, not just scale
    b = np.zeros(10)
    b[4] = 2.0
    J2 = model.rest_joints(b)
    thigh = lambda j: np.linalg.norm(j[4] - j[1])  # noqa: E731
    arm = lambda j: np.linalg.norm(j[18] - j[16])  # noqa: E731
    assert abs(thigh(J2) / thigh(J) - arm(J2) / arm(J)) > 1e-3
    assert set(model.landmarks) >= {"nose", "left_heel", "head_top"}


def test_lbs_matches_smplx(model):
    B = 3
    g = torch.Generator().manual_seed(0)
    pose = torch.randn(B, 24, 3, generator=g, dtype=torch.float64) * 0.5
    betas = torch.randn(B, 10, generator=g, dtype=torch.float64)
    trans = torch.randn(B, 3, generator=g, dtype=torch.float64)
    ref = to_smplx(model, batch_size=B, dtype=torch.float64)(
        betas=betas, global_orient=pose[:, 0], body_pose=pose[:, 1:].reshape(B, -1), transl=trans)
    mine = SMPLTorch(model, dtype=torch.float64)
    out = mine(betas, pose, trans, full_mesh=True)
    assert torch.allclose(out["joints"], ref.joints[:, :24], atol=1e-6)
    assert torch.allclose(out["vertices"], ref.vertices, atol=1e-6)
    # landmark vertices skinned alone equal the full mesh's (smplx's extra joints are the same vertices)
    ids = [model.landmarks[k] for k in ("nose", "right_eye", "left_eye", "right_ear", "left_ear")]
    part = mine(betas, pose, trans, vertex_ids=ids)
    assert torch.allclose(part["vertices"], ref.joints[:, 24:29], atol=1e-6)


def test_npz_roundtrip_keeps_landmarks_and_gender(small, tmp_path):
    small.gender = "female"
    path = tmp_path / "m.npz"
    save_smpl_npz(path, small)
    back = load_smpl_model(path)
    small.gender = "neutral"
    assert back.gender == "female"
    assert back.landmarks == small.landmarks
    assert np.array_equal(back.f, small.f)
    assert load_smpl_model(path, gender="male").gender == "male"


def _fake_chumpy():
    """A stand-in module 'chumpy.ch' whose Ch pickles like chumpy's (a __dict__ holding 'x')."""
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch = Ch
    return mod


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pkl_with_chumpy_and_sparse(small, tmp_path, monkeypatch, protocol):
    import scipy.sparse as sp

    model = small
    mod = _fake_chumpy()
    monkeypatch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
    monkeypatch.setitem(sys.modules, "chumpy.ch", mod)
    ch = mod.Ch()
    ch.x = model.shapedirs
    ch._dirty_vars = set()
    data = dict(v_template=model.v_template, shapedirs=ch, posedirs=model.posedirs,
                J_regressor=sp.csc_matrix(model.J_regressor), weights=model.weights,
                kintree_table=model.kintree_table,
                f=model.f.astype(np.uint32), bs_style="lbs", bs_type="lrotmin")
    path = tmp_path / "SMPL_MALE.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    monkeypatch.delitem(sys.modules, "chumpy.ch")  # the loader must not need chumpy
    back = load_smpl_model(path)
    assert back.gender == "male"
    assert np.allclose(back.shapedirs, model.shapedirs)
    assert np.allclose(back.J_regressor, model.J_regressor)
    assert back.landmarks == {}  # not SMPL's topology: no vertex landmarks


def test_real_topology_gets_smpl_landmarks(model):
    from engine.body.smpl.model import _from_dict

    arrays = {k: getattr(model, k) for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                             "kintree_table", "f")}
    assert _from_dict(arrays, "x", "neutral", None).landmarks == SMPL_LANDMARKS


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_pkl_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil(marker)}, protocol=2))
    with pytest.raises(MarionetteError, match="refused"):
        load_smpl_model(path)
    assert not marker.exists()
    with pytest.raises(MarionetteError, match="refused"):
        restricted_pickle_load(pickle.dumps(_EvalEvil()), "evil")
    # a protocol-0 pickle smuggling a callable through copyreg._reconstructor
    payload = b"ccopy_reg\n_reconstructor\n(cposix\nsystem\nc__builtin__\nobject\nNtR."
    with pytest.raises(MarionetteError, match="refused"):
        restricted_pickle_load(payload, "evil")


def test_bad_model_files(small, tmp_path):
    model = small
    bad = tmp_path / "model.txt"
    bad.write_text("hello")
    with pytest.raises(MarionetteError, match="unknown model file kind"):
        load_smpl_model(bad)
    with pytest.raises(MarionetteError, match="not found"):
        load_smpl_model(tmp_path / "missing.npz")
    arrays = {k: getattr(model, k) for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                             "kintree_table", "f")}
    wrong = dict(arrays, J_regressor=arrays["J_regressor"][:, :100])
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(MarionetteError, match="J_regressor"):
        load_smpl_model(tmp_path / "wrong.npz")
    smplh = dict(arrays, kintree_table=np.zeros((2, 52), dtype=np.int64))
    np.savez(tmp_path / "smplh.npz", **smplh)
    with pytest.raises(MarionetteError, match="24 joints"):
        load_smpl_model(tmp_path / "smplh.npz")
    missing = {k: v for k, v in arrays.items() if k != "weights"}
    np.savez(tmp_path / "missing_field.npz", **missing)
    with pytest.raises(MarionetteError, match="'weights'"):
        load_smpl_model(tmp_path / "missing_field.npz")
    nan = dict(arrays, v_template=np.full_like(arrays["v_template"], np.nan))
    np.savez(tmp_path / "nan.npz", **nan)
    with pytest.raises(MarionetteError, match="NaN"):
        load_smpl_model(tmp_path / "nan.npz")
    with pytest.raises(MarionetteError, match="gender"):
        load_smpl_model(tmp_path / "nan.npz", gender="robot")


def test_npz_with_pickled_extras_loads_without_unpickling(small, tmp_path):
    arrays = {k: getattr(small, k) for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                                             "kintree_table", "f")}
    extra = np.empty(1, dtype=object)
    extra[0] = {"bs_style": "lbs"}
    np.savez(tmp_path / "extras.npz", bs_style=extra, **arrays)  # an object entry we do not need
    assert load_smpl_model(tmp_path / "extras.npz").num_vertices == 1000
    bad = dict(arrays)
    obj = np.empty(1, dtype=object)
    obj[0] = arrays["weights"]
    bad["weights"] = obj
    np.savez(tmp_path / "objweights.npz", **bad)
    with pytest.raises(MarionetteError, match="'weights' is a pickled object array"):
        load_smpl_model(tmp_path / "objweights.npz")
