"""Pose-dependent appearance (``--pose-conditioning``): latent codes linear in each bone's direction in the
body's frame, format v4."""

from __future__ import annotations

import json
import math

import pytest
import torch

from engine import MarionetteError
from engine.neural.actor.model import Actor, make_config
from engine.neural.actor.model_file import JSON_FILE, header_version, load_actor, save_actor
from tests.test_kernels import _cam
from tests.test_surface_primitives import _standing


def _rotate_z(joints: torch.Tensor, angle: float, shift=(0.0, 0.0, 0.0)) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = joints.new_tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return joints @ rot.T + joints.new_tensor(shift)


def _conditioned_actor(seed=0, kind="pose"):
    """An actor with ``kind`` ("pose" or "light") conditioning whose weights are random (not zero)."""
    actor = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2, **{f"{kind}_conditioning": 1}))
    weights = getattr(actor, f"{kind}_code_weights")
    with torch.no_grad():
        weights.copy_(torch.randn(weights.shape, generator=torch.Generator().manual_seed(seed)))
    return actor


def test_codes_follow_the_limbs_not_the_world():
    actor = _conditioned_actor()
    j = _standing(dtype=torch.float32, batch=1)
    codes = actor.pose_codes(j)
    assert codes.shape == (1, len(actor.bones) * 2, 4)
    # the same pose moved and turned in the world: the same codes
    moved = actor.pose_codes(_rotate_z(j, 0.9, shift=(1.5, -0.7, 0.2)))
    assert torch.allclose(codes, moved, atol=1e-5)
    # a limb moved relative to the trunk: its bone's codes change, the trunk's do not
    bent = j.clone()
    names = actor.joint_set.canonical
    wrist = names.index("right_wrist")
    bent[:, wrist] += bent.new_tensor([0.0, 0.25, 0.25])
    changed = (actor.pose_codes(bent) - codes).abs().amax(-1)[0].view(len(actor.bones), 2).amax(-1)
    moved_bones = {i for i, (a, b) in enumerate(actor.bones) if wrist in (a, b)}
    assert moved_bones and all(changed[i] > 1e-3 for i in moved_bones)
    assert all(changed[i] < 1e-6 for i in range(len(actor.bones)) if i not in moved_bones)


def test_off_by_default_and_zero_at_the_start():
    assert not hasattr(Actor(make_config("BODY_25B", latent_dim=4, preset="tiny")), "pose_code_weights")
    cfg = make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2, pose_conditioning=1)
    actor = Actor(cfg)
    assert actor.pose_code_weights.abs().max() == 0  # training starts from the pose-independent actor
    plain = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2))
    plain.load_state_dict({k: v for k, v in actor.state_dict().items() if k != "pose_code_weights"})
    j = _standing(dtype=torch.float32, batch=2)
    K, R, t = (x.float() for x in _cam(24, 20, batch=2))
    with torch.no_grad():
        assert torch.equal(actor(j, K, R, t, 20, 24)["latent"], plain(j, K, R, t, 20, 24)["latent"])


def _learns_saves_and_needs_its_version(tmp_path, actor, weights: str, field: str, version: int) -> dict:
    """The conditioning ``weights`` get gradient; the actor saves as ``version`` with ``field`` set, loads back
    rendering the same, and a header one version older claiming ``field`` is refused. Returns the header."""
    j = _standing(dtype=torch.float32, batch=2)
    K, R, t = (x.float() for x in _cam(24, 20, batch=2))
    actor(j, K, R, t, 20, 24)["latent"].square().sum().backward()
    grad = getattr(actor, weights).grad
    assert grad is not None and grad.abs().sum() > 0
    save_actor(tmp_path / "a", actor)
    doc = json.loads((tmp_path / "a" / JSON_FILE).read_text())
    assert doc["version"] == version and doc[field] == 1
    back, _ = load_actor(tmp_path / "a")
    with torch.no_grad():
        assert torch.allclose(back(j, K, R, t, 20, 24)["rgb"], actor(j, K, R, t, 20, 24)["rgb"], atol=1e-6)
    (tmp_path / "a" / JSON_FILE).write_text(json.dumps(dict(doc, version=version - 1)))
    with pytest.raises(MarionetteError, match=f"needs actor file version {version}"):
        load_actor(tmp_path / "a")
    return doc


def test_gradient_reaches_the_weights_and_saves_as_version_4(tmp_path):
    doc = _learns_saves_and_needs_its_version(tmp_path, _conditioned_actor(), "pose_code_weights",
                                              "pose_conditioning", 4)
    doc.update(version=4, pose_conditioning=2)
    (tmp_path / "a" / JSON_FILE).write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="pose_conditioning"):
        load_actor(tmp_path / "a")


def test_older_configs_keep_their_versions():
    assert header_version(make_config("BODY_25B", per_bone=4, texture_channels=8)) == 3
    assert header_version(make_config("BODY_25B", per_bone=4, texture_channels=8, pose_conditioning=1)) == 4


# ---------------------------------------------------------------- light-dependent codes (--light-conditioning)
def _lit_actor(seed=0):
    return _conditioned_actor(seed, kind="light")


def test_light_codes_follow_the_world_orientation_not_the_place():
    actor = _lit_actor()
    j = _standing(dtype=torch.float64, batch=1)
    actor.double()
    codes = actor.light_codes(j)
    assert codes.shape == (1, len(actor.bones) * 2, 4)
    # moved in the world without turning: the same codes (light from a fixed direction)
    assert torch.allclose(actor.light_codes(_rotate_z(j, 0.0, shift=(1.5, -0.7, 0.2))), codes, atol=1e-9)
    # the whole body turned towards another side of the room: every bone's codes change (pose codes do not)
    turned = actor.light_codes(_rotate_z(j, 0.9))
    assert ((turned - codes).abs().amax(-1) > 1e-3).all()
    # each Gaussian's code: its weights times its bone frame's axes (along, side, front) in world coordinates
    from engine.neural.render.primitives import bone_geometry

    frames = bone_geometry(j, actor.joint_set, actor.primitives.bones, actor.lateral_bone)[0]
    n = 7  # a Gaussian of bone 3
    axes = torch.cat([frames[0, n // 2][:, k] for k in range(3)])
    assert torch.allclose(codes[0, n], actor.light_code_weights[n] @ axes, atol=1e-12)


def test_light_codes_off_by_default_zero_at_the_start_and_saved_as_version_5(tmp_path):
    assert not hasattr(Actor(make_config("BODY_25B", latent_dim=4, preset="tiny")), "light_code_weights")
    fresh = Actor(make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2, light_conditioning=1))
    assert fresh.light_code_weights.abs().max() == 0
    assert header_version(fresh.config) == 5
    _learns_saves_and_needs_its_version(tmp_path, _lit_actor(), "light_code_weights", "light_conditioning", 5)


def test_mirrored_views_read_the_light_codes_with_the_light_mirrored_back():
    from engine.neural.actor.augment import mirror_joints, mirror_permutation, mirror_reflections
    from engine.neural.render.primitives import bone_geometry

    actor = _lit_actor().double()
    j = _standing(batch=2, seed=4)
    K, R, t = _cam(24, 20, batch=2)
    flip = torch.tensor([True, False])
    M = mirror_reflections(R, flip)
    assert torch.allclose(M[0] @ M[0], torch.eye(3, dtype=M.dtype)) and torch.equal(M[1], torch.eye(3, dtype=M.dtype))
    assert torch.allclose(torch.linalg.det(M[0]), torch.tensor(-1.0, dtype=M.dtype))
    mirrored = mirror_joints(j, R, t, flip, mirror_permutation(actor.joint_set))
    geo = lambda joints: bone_geometry(joints, actor.joint_set, actor.primitives.bones,  # noqa: E731
                                       actor.lateral_bone)[0]
    # a centre bone (neck to head top) keeps its name: reflected back, its axis is the unmirrored one again
    names = actor.joint_set.canonical
    n = actor.bones.index((names.index("upper_neck"), names.index("head_top")))
    assert torch.allclose(M[0] @ geo(mirrored)[0, n, :, 0], geo(j)[0, n, :, 0], atol=1e-9)
    # a side bone (the left thigh of the mirrored body is the right thigh reflected): reflected back, its frame
    # is the right thigh's own — along and front as they were, side negated (the body's left-right axis turned)
    left = actor.bones.index((names.index("left_hip"), names.index("left_knee")))
    right = actor.bones.index((names.index("right_hip"), names.index("right_knee")))
    back = M[0] @ geo(mirrored)[0, left]
    # (to the 1e-3 nudge bone_frames gives the side axis towards the body's forward axis, which does not turn)
    assert torch.allclose(back, geo(j)[0, right] * back.new_tensor([1.0, -1.0, 1.0]), atol=5e-3)
    assert torch.allclose(back[:, 0], geo(j)[0, right][:, 0], atol=1e-9)
    # and that reflected-back frame is what its light codes read; unflipped views are untouched
    assert torch.allclose(actor.light_codes(mirrored, M)[0, 2 * left],
                          actor.light_code_weights[2 * left] @ back.T.reshape(9), atol=1e-9)
    assert torch.allclose(actor.light_codes(mirrored, M)[1], actor.light_codes(mirrored)[1])
