"""Bone textures (engine.neural.render.texture): coordinates, wrap-around, gradients, actor files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine import MarionetteError
from engine.body.joint_sets import BODY_25B, get_joint_set
from engine.neural.actor.model import Actor, make_config
from engine.neural.actor.model_file import JSON_FILE, load_actor, save_actor
from engine.neural.render import kernels
from engine.neural.render.primitives import bone_geometry, lateral_bones
from engine.neural.render.texture import (ALONG_EXTENT, BoneTexture, surface_points, texture_charts,
                                          texture_coordinates)
from tests.test_kernels import _cam
from tests.test_surface_primitives import _standing


def test_surface_points_lie_on_the_rays_at_the_depth():
    K, R, t = _cam(8, 6)
    depth = torch.full((1, 1, 6, 8), 2.0, dtype=torch.float64)
    pts = surface_points(depth, K, R, t)
    centre = -(R[0].T @ t[0])
    dist = (pts[0] - centre[:, None, None]).norm(dim=0)
    assert torch.allclose(dist, torch.full_like(dist, 2.0))
    # the point projects back onto its own pixel
    x = K[0] @ (R[0] @ pts[0, :, 3, 5] + t[0])
    assert torch.allclose(x[:2] / x[2], torch.tensor([5.0, 3.0], dtype=torch.float64), atol=1e-9)


def test_coordinates_along_and_around_a_bone():
    J = _standing(batch=1, seed=0)
    bones = torch.as_tensor(np.asarray(BODY_25B.bones))
    frames, mid, L = bone_geometry(J, BODY_25B, bones, torch.as_tensor(lateral_bones(BODY_25B)))
    n = BODY_25B.bones.index((BODY_25B.names.index("LHip"), BODY_25B.names.index("LKnee")))
    F, m, length = frames[0, n], mid[0, n], L[0, n]
    pts = torch.stack([m + 0.5 * length * F[:, 0] + 0.05 * F[:, 1],       # at the child joint, on the side axis
                       m - 0.05 * F[:, 2],                                 # mid-bone, behind (-front)
                       m + 5.0 * length * F[:, 0] + 0.05 * F[:, 2]])       # far past the child, in front
    along, around = texture_coordinates(pts.T.reshape(1, 3, 1, 3), frames, mid, L)
    a, r = along[0, n, 0], around[0, n, 0]
    assert a[0] == pytest.approx(0.5 / ALONG_EXTENT) and r[0] == pytest.approx(0.0, abs=1e-9)
    assert a[1] == pytest.approx(0.0, abs=1e-9) and r[1] == pytest.approx(-0.5)
    assert a[2] == pytest.approx(1.0) and r[2] == pytest.approx(0.5)   # clamped at the map's end


def test_texture_wraps_round_the_bone():
    # one bone, a map whose columns ramp 0..S-1: just either side of the seam (angle +-pi) the
    # lookup blends the last and first columns instead of jumping across the map
    tex = BoneTexture(BODY_25B, channels=1, size=8)
    with torch.no_grad():
        tex.maps.zero_()
        tex.maps[:, 0] = torch.arange(8.0)[None, None, :]
    J = _standing(batch=1, seed=1).float()
    bones = tex.bones
    frames, mid, L = bone_geometry(J, BODY_25B, bones, tex.use_forward)
    n = 13
    F, m = frames[0, n], mid[0, n]
    ang = torch.tensor([math.pi - 1e-4, -math.pi + 1e-4, math.pi / 2])
    pts = m[:, None] + 0.05 * (torch.cos(ang)[None] * F[:, 1:2] + torch.sin(ang)[None] * F[:, 2:3])  # [3, 3]
    weights = torch.zeros(1, len(BODY_25B.bones), 1, 3)
    weights[0, n] = 1.0  # only bone n, at three pixels
    along, around = texture_coordinates(pts.reshape(1, 3, 1, 3), frames, mid, L)
    assert around[0, n, 0, 0] > 0.99 and around[0, n, 0, 1] < -0.99
    for dense in (False, True):
        out = _sample(tex, along, around, weights, dense=dense).detach()
        seam = out[0, 0, 0, :2]
        assert torch.allclose(seam, torch.full_like(seam, 3.5), atol=0.01)  # (7 + 0) / 2: blended across the seam
        assert float(out[0, 0, 0, 2]) == pytest.approx(0.75 * 8 - 0.5, abs=1e-3)  # angle pi/2 -> column 5.5


def _sample(tex, along, around, weights, dense=False):
    """BoneTexture's lookup (``forward``, or ``forward_dense`` with ``dense``) with given coordinates
    [B, N, H, W] (monkeypatched coordinate functions; ``forward`` asks only for the pairs with weight,
    in row-major order)."""
    import engine.neural.render.texture as T

    orig = T.texture_coordinates, T.pair_coordinates
    sel = weights > T.MIN_WEIGHT
    T.texture_coordinates = lambda *a: (along, around)
    T.pair_coordinates = lambda *a: (along[sel], around[sel])
    try:
        B, N, H, W = weights.shape
        K, R, t = (x.float() for x in _cam(W, H))
        lookup = tex.forward_dense if dense else tex.forward_reference  # the coordinates patched are PyTorch's
        return lookup(_standing(batch=1).float(), torch.ones(B, 1, H, W), weights, K, R, t)
    finally:
        T.texture_coordinates, T.pair_coordinates = orig


def test_gradcheck_maps_and_weights():
    tex = BoneTexture(BODY_25B, channels=2, size=4).double()
    J = _standing(batch=1)
    K, R, t = _cam(5, 4)
    depth = torch.full((1, 1, 4, 5), 2.6, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(1, len(BODY_25B.bones), 4, 5, generator=g, dtype=torch.float64) * 0.1
    weights.requires_grad_(True)

    maps = tex.maps.detach().clone().requires_grad_(True)
    # grid_sample is linear in the maps and the sum is linear in the weights: exact gradients
    assert torch.autograd.gradcheck(lambda m, w: _with_maps(tex, m, J, depth, w, K, R, t), (maps, weights),
                                    eps=1e-6, atol=1e-7)


def _with_maps(tex, maps, J, depth, w, K, R, t):
    saved = tex.maps
    try:
        del tex.maps
        tex.maps = maps  # a plain tensor attribute for the check, so gradients reach the input
        return tex(J, depth, w, K, R, t)
    finally:
        del tex.maps
        tex.maps = saved


def test_actor_with_texture_renders_learns_and_saves_as_version_3(tmp_path):
    cfg = make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2, texture_channels=3, texture_size=8)
    assert cfg.decoder.in_channels == 4 + 3 + 1
    actor = Actor(cfg)
    j = _standing(dtype=torch.float32, batch=2)
    K, R, t = (x.float() for x in _cam(24, 20, batch=2))
    out = actor(j, K, R, t, 20, 24)
    assert out["latent"].shape == (2, 7, 20, 24)
    # texture features are premultiplied: zero where nothing is rendered
    off = out["latent_alpha"] < 1e-6
    assert off.any() and out["latent"][:, 4:][off.expand(-1, 3, -1, -1)].abs().max() < 1e-5
    out["latent"][:, 4:].sum().backward()  # (the decoder's head starts at zero: no gradient through rgb yet)
    assert actor.texture.maps.grad is not None and actor.texture.maps.grad.abs().sum() > 0
    save_actor(tmp_path / "a", actor)
    doc = json.loads((tmp_path / "a" / JSON_FILE).read_text())
    assert doc["version"] == 3 and doc["texture_channels"] == 3 and doc["texture_size"] == 8
    back, _ = load_actor(tmp_path / "a")
    with torch.no_grad():
        assert torch.allclose(back(j, K, R, t, 20, 24)["rgb"], actor(j, K, R, t, 20, 24)["rgb"], atol=1e-6)
    # a version-2 header cannot claim a texture
    doc["version"] = 2
    (tmp_path / "a" / JSON_FILE).write_text(json.dumps(doc))
    with pytest.raises(MarionetteError, match="needs actor file version 3"):
        load_actor(tmp_path / "a")


def test_actor_without_texture_stays_version_2():
    from engine.neural.actor.model_file import header_version

    assert header_version(make_config("BODY_25B", per_bone=4)) == 2
    assert header_version(make_config("BODY_25B")) == 1


needs_texture_kernel = pytest.mark.skipif(not kernels.texture_available("cpu"),
                                          reason=kernels.unavailable_reason() or "marionette_kernels built "
                                          "without the bone-texture op")


def _render_inputs(dtype=torch.float64, batch=2, seed=3, charts="bones"):
    """A texture and what the renderer hands it for a real render: (tex, joints, depth, weights, K, R, t)."""
    torch.manual_seed(0)
    cfg = make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=4, texture_channels=3, texture_size=8,
                      texture_charts=charts)
    actor = Actor(cfg).to(dtype)
    J = _standing(batch=batch, seed=seed).to(dtype)
    K, R, t = (x.to(dtype) for x in _cam(40, 32, batch=batch))
    tex = actor.texture
    seen = {}
    tex.forward = lambda *a, **k: seen.setdefault("args", a) and BoneTexture.forward(tex, *a, **k)
    with torch.no_grad():
        tex.maps.normal_()  # every texel distinct, so a wrong texel shows
        actor.render_latent(J, K, R, t, 32, 40)
    del tex.forward
    depth, weights = seen["args"][1], seen["args"][2].detach().clone()
    return tex, J, depth, weights, K, R, t


def _lookup(tex, impl):
    return {"reference": tex.forward_reference, "dense": tex.forward_dense,
            "kernel": lambda *a: tex.forward(*a, backend="kernel")}[impl]


@pytest.mark.parametrize("charts", ["bones", "parts"])
@pytest.mark.parametrize("impl", ["reference", pytest.param("kernel", marks=needs_texture_kernel)])
def test_sparse_lookup_equals_the_dense_reference_on_a_render(impl, charts):
    """The sparse lookups (only the (bone, pixel) pairs with weight: in PyTorch, and the compiled kernel)
    against ``forward_dense`` (grid_sample at every pair) with a real render's depth and bone weights:
    same features, same gradients — with a map per bone and with maps shared by a part's bones."""
    tex, J, depth, weights, K, R, t = _render_inputs(charts=charts)
    covered = (weights > 1e-4).sum(1)
    assert int((covered >= 2).sum()) > 20 and int((covered == 0).sum()) > 100  # overlaps and empty pixels
    weights[weights <= 1e-4] = 0.0  # what the sparse lookup leaves out
    for f in (_lookup(tex, impl), tex.forward_dense):
        tex.maps.grad = None
        w = weights.clone().requires_grad_(True)
        out = f(J, depth, w, K, R, t)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        if f != tex.forward_dense:
            sparse, g_maps, g_w = out.detach(), tex.maps.grad.clone(), w.grad.clone()
    assert torch.allclose(sparse, out.detach(), atol=1e-10)
    assert torch.allclose(g_maps, tex.maps.grad, atol=1e-10)
    # d/d weight where a pair was left out: a Gaussian's weight there moves with its own tiny value,
    # so nothing is lost by leaving it out; everywhere else the gradients agree
    looked_up = weights > 0
    assert torch.allclose(g_w[looked_up], w.grad[looked_up], atol=1e-10) and not g_w[~looked_up].any()
    # nothing in view (the person off-screen): no pairs, zero features
    empty = _lookup(tex, impl)(J, depth, torch.zeros_like(weights), K, R, t)
    assert empty.shape == sparse.shape and not empty.any()


@needs_texture_kernel
def test_kernel_gradcheck_float64():
    tex, J, depth, weights, K, R, t = _render_inputs(batch=1)
    sl = (slice(None), slice(None), slice(8, 16), slice(14, 22))  # a patch over the body: few pairs, fast check
    w = weights[sl].clone()
    w[w <= 1e-3] = 0.0  # keep finite-difference steps from crossing the lookup threshold
    assert int((w > 0).sum()) > 20
    d = depth[sl].contiguous()
    K2 = K.clone()
    K2[:, 0, 2] -= 14  # the patch's own camera
    K2[:, 1, 2] -= 8
    frames, mid, length = bone_geometry(J, BODY_25B, tex.bones, tex.use_forward)
    maps = tex.maps.detach().clone().requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda m, ww: kernels.bone_texture_kernel(m, ww, d, K2, R, t, frames, mid, length, 1e-4, ALONG_EXTENT),
        (maps, w), eps=1e-6, atol=1e-7)
    # the patch's camera really reads the same surface points as the full image's
    full = tex.forward_dense(J, depth, torch.where(weights > 1e-3, weights, 0.0), K, R, t)[sl]
    patch = kernels.bone_texture_kernel(tex.maps, w.detach(), d, K2, R, t, frames, mid, length, 1e-4, ALONG_EXTENT)
    assert torch.allclose(full, patch, atol=1e-10)


@needs_texture_kernel
def test_kernel_float32_and_threads():
    tex, J, depth, weights, K, R, t = _render_inputs(dtype=torch.float32)
    ref = tex.forward_reference(J, depth, weights, K, R, t)
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            w = weights.clone().requires_grad_(True)
            tex.maps.grad = None
            out = tex.forward(J, depth, w, K, R, t, backend="kernel")
            out.square().sum().backward()
            outs.append((out.detach(), tex.maps.grad.clone(), w.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(outs[0][0], ref, atol=1e-4)
    for a, b in zip(*outs):  # per-thread map gradients are summed in another order: rounding only
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@needs_texture_kernel
def test_kernel_degenerate_inputs():
    """Collapsed bones, a body folded onto one point, and depth that is NaN or infinite where a bone has
    weight give finite features; the pairs without a finite coordinate are left out."""
    tex, J, depth, weights, K, R, t = _render_inputs()
    folded = J.clone()
    folded[:, :] = J[:, :1]  # every joint at the nose: every bone of length 0, every frame degenerate
    out = tex.forward(folded, depth, weights, K, R, t, backend="kernel")
    assert torch.isfinite(out).all()
    hit = (weights > 1e-4).any(1)[0]  # pixels of view 0 with some bone
    y, x = hit.nonzero()[0]
    y2, x2 = hit.nonzero()[-1]
    bad = depth.clone()
    bad[0, 0, y, x], bad[0, 0, y2, x2] = float("nan"), float("inf")
    w = weights.clone().requires_grad_(True)
    out = tex.forward(J, bad, w, K, R, t, backend="kernel")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(w.grad).all() and torch.isfinite(tex.maps.grad).all()
    assert not out[0, :, y, x].any() and not w.grad[0, :, y, x].any()
    good = tex.forward_reference(J, depth, weights, K, R, t)
    keep = torch.ones_like(good, dtype=torch.bool)
    keep[0, :, y, x] = keep[0, :, y2, x2] = False
    assert torch.allclose(out.detach()[keep], good[keep], atol=1e-10)


@needs_texture_kernel
def test_kernel_opcheck_and_compile():
    tex, J, depth, weights, K, R, t = _render_inputs(batch=1)
    sl = (slice(None), slice(None), slice(10, 14), slice(16, 20))
    frames, mid, length = bone_geometry(J, BODY_25B, tex.bones, tex.use_forward)
    args = [tex.maps.detach().clone().requires_grad_(True), weights[sl].clone().requires_grad_(True),
            depth[sl].contiguous(), K, R, t, frames, mid, length, 1e-4, ALONG_EXTENT]
    torch.library.opcheck(torch.ops.marionette.bone_texture_fwd.default, args)
    grad = torch.randn(1, tex.channels, 4, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.marionette.bone_texture_bwd.default, [grad] + [a.detach() if
                          isinstance(a, torch.Tensor) else a for a in args], test_utils=("test_schema", "test_faketensor"))

    def loss(maps, w):
        return kernels.bone_texture_kernel(maps, w, *args[2:]).square().sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    eager = torch.autograd.grad(loss(*args[:2]), args[:2])
    comp = torch.autograd.grad(compiled(*args[:2]), args[:2])
    for a, b in zip(eager, comp):
        assert torch.allclose(a, b)


@needs_texture_kernel
def test_kernel_bad_inputs_are_errors():
    tex, J, depth, weights, K, R, t = _render_inputs(batch=1)
    frames, mid, length = bone_geometry(J, BODY_25B, tex.bones, tex.use_forward)
    with pytest.raises(RuntimeError, match="weights must be \\[B,N,H,W\\] with N=26"):
        torch.ops.marionette.bone_texture_fwd(tex.maps, weights[:, :5], depth, K, R, t, frames, mid, length, 1e-4, 0.75)
    with pytest.raises(RuntimeError, match="depth is Float but maps are Double"):
        torch.ops.marionette.bone_texture_fwd(tex.maps, weights, depth.float(), K, R, t, frames, mid, length, 1e-4, 0.75)
    with pytest.raises(RuntimeError, match="depth must be \\[B,1,H,W\\]"):
        torch.ops.marionette.bone_texture_fwd(tex.maps, weights, depth[..., :3], K, R, t, frames, mid, length, 1e-4, 0.75)


def test_backend_choice(monkeypatch):
    """"auto" falls back to the PyTorch lookup where the installed build has no bone-texture op (an
    extension built before it); "kernel" then says how to rebuild."""
    tex, J, depth, weights, K, R, t = _render_inputs(batch=1)
    monkeypatch.setattr(kernels, "_TEXTURE_DEVICE_TYPES", frozenset())
    assert torch.equal(tex(J, depth, weights, K, R, t), tex.forward_reference(J, depth, weights, K, R, t))
    with pytest.raises(MarionetteError, match="no bone-texture kernel.*pip install --no-build-isolation ./cuda_ext"):
        tex(J, depth, weights, K, R, t, backend="kernel")


def test_body_part_charts_of_body25b_and_smpl():
    chart_of, starts, ends, lateral, names = texture_charts(BODY_25B, "parts")
    assert names[:4] == ["trunk", "head", "left_foot", "right_foot"] and len(names) == 12
    members = {name: sorted(BODY_25B.bone_names[i] for i in np.flatnonzero(chart_of == c)) for c, name in enumerate(names)}
    assert members["trunk"] == sorted(["Neck-LShoulder", "Neck-RShoulder", "Neck-LHip", "Neck-RHip", "LHip-RHip",
                                       "LShoulder-RShoulder"])
    assert members["head"] == sorted(["Neck-Nose", "Nose-LEye", "Nose-REye", "LEye-LEar", "REye-REar", "Neck-HeadTop"])
    assert members["left_foot"] == sorted(["LAnkle-LBigToe", "LBigToe-LSmallToe", "LAnkle-LHeel"])
    assert members["LHip-LKnee"] == ["LHip-LKnee"]  # limbs keep their own map
    idx = BODY_25B.names.index
    assert sorted(starts[0]) == sorted([idx("LHip"), idx("RHip")]) and sorted(ends[0]) == sorted([idx("LShoulder"),
                                                                                                  idx("RShoulder")])
    assert list(starts[1]) == [idx("Neck")] * 2 and list(ends[1]) == [idx("HeadTop")] * 2
    assert not lateral[:4].any()
    # one chart per bone: the bones themselves, with their own lateral flags
    chart_of, starts, ends, lateral, names = texture_charts(BODY_25B, "bones")
    assert list(chart_of) == list(range(len(BODY_25B.bones))) and names == list(BODY_25B.bone_names)
    assert [tuple(b) for b in np.stack([starts[:, 0], ends[:, 0]], 1)] == [tuple(b) for b in BODY_25B.bones]
    assert (lateral == lateral_bones(BODY_25B)).all()
    # SMPL: the trunk's bones share one map; its head and feet are single bones and keep theirs
    smpl = get_joint_set("SMPL_24")
    chart_of, _, _, _, names = texture_charts(smpl, "parts")
    assert names[0] == "trunk" and "head" not in names and len(names) == len(smpl.bones) - (chart_of == 0).sum() + 1
    with pytest.raises(MarionetteError, match="texture charts must be one of"):
        texture_charts(BODY_25B, "faces")


def test_part_charts_of_every_joint_set_hold_only_that_part():
    from engine.body.joint_sets import JOINT_SETS

    torso = ("hip", "shoulder", "collar", "pelvis", "spine", "neck", "thorax")
    for name in JOINT_SETS:
        js = get_joint_set(name)
        chart_of, _, _, _, names = texture_charts(js, "parts")
        for c, part in enumerate(names):
            joints = {js.canonical[j] for i in np.flatnonzero(chart_of == c) for j in js.bones[i]}
            if part == "trunk":  # no hand, foot or face bone reads the trunk's map
                assert all(any(k in j for k in torso) for j in joints), (name, joints)
            elif part.endswith("_foot"):
                assert all(j.startswith(part.split("_")[0] + "_") and not j.endswith(("knee", "wrist")) for j in joints)
            elif part == "head":
                assert not any(k in j for j in joints for k in ("shoulder", "hip", "wrist")), (name, joints)
            else:
                assert (chart_of == c).sum() == 1  # every other chart is one bone

def test_trunk_bones_read_one_map_in_the_trunk_frame():
    tex = BoneTexture(BODY_25B, channels=2, size=8, charts="parts").double()
    assert tex.maps.shape[0] == 12
    J = _standing(batch=1, seed=2)
    frames, mid, length = tex.geometry(J)
    trunk = (tex.chart_of_bone == 0).nonzero().flatten()
    for n in trunk[1:]:  # every trunk bone looks its points up in the same frame, so in the same place
        assert torch.equal(frames[0, n], frames[0, trunk[0]]) and torch.equal(mid[0, n], mid[0, trunk[0]])
    idx = BODY_25B.names.index
    hips = 0.5 * (J[0, idx("LHip")] + J[0, idx("RHip")])
    shoulders = 0.5 * (J[0, idx("LShoulder")] + J[0, idx("RShoulder")])
    n = int(trunk[0])
    assert torch.allclose(mid[0, n], 0.5 * (hips + shoulders)) and torch.allclose(length[0, n], (shoulders - hips).norm())
    assert torch.allclose(frames[0, n][:, 0], (shoulders - hips) / (shoulders - hips).norm())  # along: up the spine
    # the limbs' geometry is the bones' own
    own, _, _ = bone_geometry(J, BODY_25B, tex.bones, tex.use_forward)
    limb = BODY_25B.bones.index((idx("LHip"), idx("LKnee")))
    assert torch.allclose(frames[0, limb], own[0, limb])
    # a shared map gets the gradient of every bone that reads it
    K, R, t = _cam(5, 4)
    depth = torch.full((1, 1, 4, 5), 2.6, dtype=torch.float64)
    w = torch.zeros(1, len(BODY_25B.bones), 4, 5, dtype=torch.float64)
    w[0, trunk[0]], w[0, trunk[1]] = 0.3, 0.2
    tex.forward_dense(J, depth, w, K, R, t).sum().backward()
    assert tex.maps.grad[0].abs().sum() > 0 and not tex.maps.grad[1:].any()
    maps = tex.maps.detach().clone().requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    weights = (torch.rand(1, len(BODY_25B.bones), 4, 5, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m, x: _with_maps(tex, m, J, depth, x, K, R, t), (maps, weights),
                                    eps=1e-6, atol=1e-7)


def test_actor_with_part_charts_saves_as_version_5_and_older_headers_refuse_it(tmp_path):
    from engine.neural.actor.model_file import header_version

    cfg = make_config("BODY_25B", latent_dim=4, preset="tiny", per_bone=2, texture_channels=3, texture_size=8,
                      texture_charts="parts")
    assert header_version(cfg) == 5
    assert header_version(make_config("BODY_25B", per_bone=2, texture_channels=3)) == 3
    with pytest.raises(MarionetteError, match="'texture_charts' 'parts' needs bone textures"):
        make_config("BODY_25B", per_bone=2, texture_charts="parts")
    from engine.neural.actor.train import TrainConfig

    with pytest.raises(MarionetteError, match="--texture-charts parts needs bone textures"):
        TrainConfig(capture="c", out="o", texture_charts="parts").validate()
    actor = Actor(cfg)
    j = _standing(dtype=torch.float32, batch=1)
    K, R, t = (x.float() for x in _cam(24, 20))
    save_actor(tmp_path / "a", actor)
    doc = json.loads((tmp_path / "a" / JSON_FILE).read_text())
    assert doc["version"] == 5 and doc["texture_charts"] == "parts" and doc["tensors"]["shapes"]["texture.maps"][0] == 12
    back, _ = load_actor(tmp_path / "a")
    assert back.config.texture_charts == "parts"
    with torch.no_grad():
        assert torch.allclose(back(j, K, R, t, 20, 24)["rgb"], actor(j, K, R, t, 20, 24)["rgb"], atol=1e-6)
    for version, charts, message in ((4, "parts", "needs actor file version 5"),
                                     (5, "faces", "field 'texture_charts' must be")):
        bad = dict(doc, version=version, texture_charts=charts)
        (tmp_path / "a" / JSON_FILE).write_text(json.dumps(bad))
        with pytest.raises(MarionetteError, match=message):
            load_actor(tmp_path / "a")
