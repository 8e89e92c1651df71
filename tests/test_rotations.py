"""engine.geometry.rotations and engine.geometry.axes: round trips, properties, and the docstring examples."""

import doctest

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.geometry import axes, rotations as R


def _random_quats(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return R.quat_normalize(q)


def test_quat_matrix_round_trip_up_to_sign():
    q = _random_quats(500)
    back = R.matrix_to_quat(R.quat_to_matrix(q))
    assert np.allclose(np.abs(np.sum(back * q, -1)), 1.0, atol=1e-12)
    assert (back[:, 0] >= 0).all()


def test_axis_angle_round_trips_numpy_and_torch():
    v = np.random.default_rng(1).normal(size=(300, 3))
    v *= (np.random.default_rng(2).uniform(0, np.pi - 1e-3, 300) / np.linalg.norm(v, axis=-1))[:, None]
    assert np.allclose(R.matrix_to_axis_angle(R.axis_angle_to_matrix(v)), v, atol=1e-9)
    assert np.allclose(R.quat_log(R.quat_exp(v)), v, atol=1e-12)
    t = torch.tensor(v)
    assert torch.allclose(R.matrix_to_axis_angle_torch(R.axis_angle_to_matrix_torch(t)), t, atol=1e-9)
    assert np.allclose(R.axis_angle_to_matrix_torch(t).numpy(), R.axis_angle_to_matrix(v), atol=1e-12)


def test_matrices_are_rotations_and_products_agree():
    a, b = _random_quats(200, 3), _random_quats(200, 4)
    Ma, Mb = R.quat_to_matrix(a), R.quat_to_matrix(b)
    assert np.allclose(Ma @ np.swapaxes(Ma, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(Ma), 1.0)
    assert np.allclose(R.quat_to_matrix(R.quat_mul(a, b)), Ma @ Mb, atol=1e-12)
    v = np.random.default_rng(5).normal(size=(200, 3))
    assert np.allclose(R.quat_rotate(a, v), np.einsum("nij,nj->ni", Ma, v), atol=1e-12)
    assert np.allclose(R.quat_mul(a, R.quat_conj(a)), [1, 0, 0, 0], atol=1e-12)


def test_between_and_swing_take_a_to_b():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(100, 3)), rng.normal(size=(100, 3))
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    assert np.allclose(R.quat_rotate(R.quat_between(a, b), unit(a)), unit(b), atol=1e-9)
    assert np.allclose(np.einsum("nij,nj->ni", R.swing_matrix(a, b), unit(a)), unit(b), atol=1e-9)
    assert np.allclose(R.quat_rotate(R.quat_between(a, -a), unit(a)), -unit(a), atol=1e-9)


def test_continuity_flips_signs_only():
    q = _random_quats(50, 7)[:, None]
    flipped = q * np.where(np.random.default_rng(8).uniform(size=(50, 1, 1)) < 0.5, -1.0, 1.0)
    c = R.make_quats_continuous(flipped)
    assert np.allclose(np.abs(c), np.abs(q))
    assert np.allclose(R.quat_continuous(flipped), c)


@pytest.mark.parametrize("axis", axes.UP_AXES)
def test_up_axis_matrices_are_rotations_taking_up_to_z(axis):
    M = axes.up_axis_matrix(axis)
    assert np.allclose(M @ M.T, np.eye(3)) and np.isclose(np.linalg.det(M), 1.0)
    assert np.allclose(M @ axes.up_vector(axis), [0, 0, 1])
    p = np.random.default_rng(9).normal(size=(10, 3))
    assert np.allclose(axes.to_z_up(p, M), p @ M.T)
    F = axes.view_frame(axis)
    assert np.allclose(F @ F.T, np.eye(3)) and np.allclose(F[2], axes.up_vector(axis))


def test_bad_up_axis_is_a_clear_error():
    with pytest.raises(MarionetteError):
        axes.up_axis_matrix("W")
    with pytest.raises(MarionetteError):
        axes.up_vector([0, 0, 0])


@pytest.mark.parametrize("module", [R, axes])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0
