"""Compiled raycast kernels (cuda_ext -> marionette_kernels) against the PyTorch reference.

The kernel tests skip when the extension is not built (``pip install --no-build-isolation ./cuda_ext``);
the CUDA source compile checks need only nvcc / g++ and run either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from engine import MarionetteError
from engine.geometry.camera import Camera
from engine.neural.render import bone_gaussians, kernels, raycast, raycast_reference, render_latent
from engine.body.joint_sets import BODY_25B

CSRC = Path(__file__).resolve().parents[1] / "cuda_ext" / "csrc"
MODES = ("transmittance", "rochette")

needs_ext = pytest.mark.skipif(not kernels.available("cpu"), reason=kernels.unavailable_reason() or "no CPU kernels")


# ---------------------------------------------------------------------- scenes
def _cam(width, height, eye=(0.2, -2.5, 1.0), target=(0.0, 0.0, 0.9), f_px=None, dtype=torch.float64, batch=1):
    cam = Camera.look_at("test", eye=eye, target=target, width=width, height=height,
                         f_px=f_px if f_px is not None else 0.9 * max(width, height))
    K = torch.as_tensor(cam.K, dtype=dtype)
    K[0, 1] = 0.05 * K[0, 0]  # a little skew, the spec's K01 term
    def rep(x):
        return x[None].repeat(batch, *([1] * x.dim())).contiguous()
    return rep(K), rep(torch.as_tensor(cam.R, dtype=dtype)), rep(torch.as_tensor(cam.t, dtype=dtype))


def _random_scene(seed, B=2, N=7, C=5, H=18, W=22, dtype=torch.float64, degenerate=None):
    """Random bones around a person-sized volume seen by a look-at camera (2.5 m away)."""
    g = torch.Generator().manual_seed(seed)
    joints = torch.rand(B, N + 1, 3, generator=g, dtype=dtype) * torch.tensor([0.6, 0.4, 1.6], dtype=dtype) \
        + torch.tensor([-0.3, -0.2, 0.1], dtype=dtype)
    bones = [(i, i + 1) for i in range(N)]
    widths = torch.rand(N, generator=g, dtype=dtype) * 0.08 + 0.04
    densities = torch.rand(B, N, generator=g, dtype=dtype) * 30 + 5
    cams = [_cam(W, H, eye=(0.2 + 0.4 * i, -2.5 + 0.2 * i, 1.0 - 0.1 * i), dtype=dtype) for i in range(B)]
    K, R, t = (torch.cat(x).contiguous() for x in zip(*cams))  # a different camera per frame
    if degenerate == "zero_length":
        joints[:, 2] = joints[:, 1]  # bone 1 has length 0
    means, precisions = bone_gaussians(joints, bones, widths)
    if degenerate == "behind":
        # primitive 0 half a metre behind the camera centre, on the optical axis
        o = -(R.transpose(1, 2) @ t[..., None])[..., 0]
        back = -R[:, 2, :]
        means = means.clone()
        means[:, 0] = o + 0.5 * back
    if degenerate == "outside":
        means = means + torch.tensor([6.0, 0.0, 0.0], dtype=dtype)  # all far to the side of the frustum
    features = torch.randn(B, N, C, generator=g, dtype=dtype)
    background = torch.randn(B, C, generator=g, dtype=dtype)
    return [means, precisions, densities, features, background, K, R, t, H, W]


def _outputs_and_grads(fn, scene, mode, seed=0):
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]
    out = fn(*inputs, *scene[5:], mode=mode)
    g = torch.Generator().manual_seed(seed + 100)
    weights = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in out]
    loss = sum((o * w).sum() for o, w in zip(out, weights))
    grads = torch.autograd.grad(loss, inputs)
    return [o.detach() for o in out], grads


def _assert_close(ref_outs, ker_outs, ref_grads, ker_grads, atol, grad_rtol):
    for name, r, k in zip(("latent", "alpha", "depth"), ref_outs, ker_outs):
        err = (r - k).abs().max().item()
        assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"
    for name, r, k in zip(("means", "precisions", "densities", "features", "background"), ref_grads, ker_grads):
        assert torch.isfinite(k).all(), f"grad {name} not finite"
        scale = max(1.0, r.abs().max().item())
        err = (r - k).abs().max().item()
        assert err <= grad_rtol * scale, f"grad {name}: max abs error {err:.3g} (scale {scale:.3g})"


# ---------------------------------------------------------------------- equality with the reference
@needs_ext
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_random_scenes(mode, dtype, seed):
    scene = _random_scene(seed, dtype=dtype)
    ref = _outputs_and_grads(raycast_reference, scene, mode, seed)
    ker = _outputs_and_grads(kernels.raycast_kernel, scene, mode, seed)
    if dtype == torch.float64:
        _assert_close(ref[0], ker[0], ref[1], ker[1], atol=1e-4, grad_rtol=1e-4)
        # the skipped contributions are far below the contract's bound
        assert (ref[0][0] - ker[0][0]).abs().max().item() < 1e-9
    else:
        _assert_close(ref[0], ker[0], ref[1], ker[1], atol=1e-3, grad_rtol=1e-3)


@needs_ext
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("degenerate", ["zero_length", "behind", "outside"])
def test_matches_reference_degenerate_scenes(mode, degenerate):
    scene = _random_scene(5, degenerate=degenerate)
    ref = _outputs_and_grads(raycast_reference, scene, mode)
    ker = _outputs_and_grads(kernels.raycast_kernel, scene, mode)
    _assert_close(ref[0], ker[0], ref[1], ker[1], atol=1e-4, grad_rtol=1e-4)
    if degenerate == "outside":
        latent, alpha, depth = ker[0]
        background = scene[4]
        assert alpha.abs().max().item() < 1e-9
        assert torch.allclose(latent, background[:, :, None, None].expand_as(latent), atol=1e-6)


@needs_ext
@pytest.mark.parametrize("mode", MODES)
def test_larger_scene_with_culling(mode):
    """Many tiles, most of them empty: per-tile culling must not drop anything that matters."""
    scene = _random_scene(11, B=1, N=24, C=8, H=70, W=90, dtype=torch.float32)
    scene[0] = scene[0] * 0.5  # a smaller body so that tiles around it are empty
    ref = _outputs_and_grads(raycast_reference, scene, mode)
    ker = _outputs_and_grads(kernels.raycast_kernel, scene, mode)
    _assert_close(ref[0], ker[0], ref[1], ker[1], atol=1e-3, grad_rtol=2e-3)


@needs_ext
def test_thread_count_does_not_change_results():
    scene = _random_scene(3, B=1, N=9, C=6, H=40, W=48)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _outputs_and_grads(kernels.raycast_kernel, scene, "transmittance")
        torch.set_num_threads(max(2, threads))
        many = _outputs_and_grads(kernels.raycast_kernel, scene, "transmittance")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one[0], many[0]):  # forward: every pixel is computed the same way
        assert torch.equal(a, b)
    for a, b in zip(one[1], many[1]):  # backward: per-thread partial sums, summed in another order
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- autograd machinery
def _tiny_scene(mode_seed=0):
    scene = _random_scene(20 + mode_seed, B=1, N=3, C=2, H=5, W=6)
    # a wider camera so the 6x5 image sees every bone
    scene[5], scene[6], scene[7] = _cam(6, 5, f_px=4.0, batch=1)
    return scene


# ---------------------------------------------------------------------- primitive groups (bone weights)
def _grouped_outputs_and_grads(backend, scene, mode, groups, G, seed=0):
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]
    out = raycast(*inputs, *scene[5:], mode=mode, backend=backend, groups=groups, num_groups=G)
    gen = torch.Generator().manual_seed(seed + 200)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in out)
    return [o.detach() for o in out], torch.autograd.grad(loss, inputs)


@needs_ext
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_group_weights_match_one_hot_reference(mode, dtype):
    """The kernels' group weights = the reference rendering one-hot group features (forward and every
    gradient, the weights' own included); groups leave latent, alpha and depth unchanged."""
    scene = _random_scene(11, N=9, dtype=dtype)
    groups = torch.tensor([0, 2, 2, 1, 3, 3, 3, 0, 1])
    ref = _grouped_outputs_and_grads("reference", scene, mode, groups, 4)
    ker = _grouped_outputs_and_grads("kernel", scene, mode, groups, 4)
    atol = 1e-9 if dtype == torch.float64 else 1e-4
    assert ker[0][3].shape == (2, 4, 18, 22)
    assert ker[0][3].abs().sum() > 1.0  # the bones are in the picture
    for name, r, k in zip(("latent", "alpha", "depth", "weights"), ref[0], ker[0]):
        assert (r - k).abs().max().item() <= atol * 10, name
    for name, r, k in zip(("means", "precisions", "densities", "features", "background"), ref[1], ker[1]):
        scale = max(1.0, r.abs().max().item())
        assert (r - k).abs().max().item() <= (1e-7 if dtype == torch.float64 else 1e-3) * scale, name
    plain = kernels.raycast_kernel(*scene, mode=mode)
    for r, k in zip(plain, ker[0][:3]):
        assert torch.equal(r, k)
    # the groups' weights add up to the pixel's coverage in transmittance mode (zero background)
    if mode == "transmittance":
        assert torch.allclose(ker[0][3].sum(1, keepdim=True), ker[0][1], atol=atol * 10)


@needs_ext
def test_group_weights_gradcheck_float64():
    scene = _tiny_scene()
    groups = torch.arange(scene[0].shape[1]) % 2
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]

    def fn(*xs):
        return kernels.raycast_kernel(*xs, *scene[5:], mode="transmittance", groups=groups, num_groups=2)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@needs_ext
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    scene = _tiny_scene()
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]

    def fn(*xs):
        return kernels.raycast_kernel(*xs, *scene[5:], mode=mode)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@needs_ext
def test_opcheck():
    # the mode does not change how the op is registered; one is enough (opcheck is slow)
    mode = 1
    scene = _tiny_scene()
    N, G = scene[0].shape[1], 2
    groups = torch.arange(N) % G
    fwd_args = [x.detach().clone().requires_grad_(True) for x in scene[:5]] + scene[5:8] + [scene[8], scene[9], mode,
                                                                                             groups, G]
    torch.library.opcheck(torch.ops.marionette.raycast_fwd.default, fwd_args)
    B, C, H, W = 1, scene[3].shape[2], scene[8], scene[9]
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(B, C, H, W, generator=g, dtype=torch.float64),
             torch.randn(B, 1, H, W, generator=g, dtype=torch.float64),
             torch.randn(B, 1, H, W, generator=g, dtype=torch.float64),
             torch.randn(B, G, H, W, generator=g, dtype=torch.float64)]
    # raycast_bwd already runs inside raycast_fwd's autograd checks; schema and fake kernel suffice here
    torch.library.opcheck(torch.ops.marionette.raycast_bwd.default, grads + scene[:8] + [H, W, mode, groups, G],
                          test_utils=("test_schema", "test_faketensor"))


@needs_ext
def test_torch_compile_fullgraph():
    scene = _tiny_scene()
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]

    def loss_fn(means, precisions, densities, features, background):
        latent, alpha, depth = kernels.raycast_kernel(means, precisions, densities, features, background,
                                                      *scene[5:], mode="transmittance")
        return (latent ** 2).sum() + alpha.sum() + 0.1 * depth.sum()

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    eager_loss = loss_fn(*inputs)
    eager_grads = torch.autograd.grad(eager_loss, inputs)
    comp_loss = compiled(*inputs)
    comp_grads = torch.autograd.grad(comp_loss, inputs)
    assert torch.allclose(eager_loss, comp_loss)
    for a, b in zip(eager_grads, comp_grads):
        assert torch.allclose(a, b)


@needs_ext
@pytest.mark.slow
def test_torch_compile_inductor_fullgraph():
    """The default backend generates C++ around the ops (a minute or so on 2 cores)."""
    scene = _tiny_scene()
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]

    def loss_fn(means, precisions, densities, features, background):
        latent, alpha, depth = kernels.raycast_kernel(means * 1.0, precisions, densities.exp().log(), features,
                                                      background, *scene[5:], mode="rochette")
        return (latent.tanh() ** 2).sum() + alpha.sum() + 0.1 * depth.sum()

    compiled = torch.compile(loss_fn, fullgraph=True)
    eager_grads = torch.autograd.grad(loss_fn(*inputs), inputs)
    comp_grads = torch.autograd.grad(compiled(*inputs), inputs)
    for a, b in zip(eager_grads, comp_grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


@needs_ext
def test_unused_outputs_and_partial_requires_grad():
    scene = _random_scene(4, B=1, N=4, C=3, H=10, W=12)
    feats = scene[3].clone().requires_grad_(True)
    latent, _, _ = kernels.raycast_kernel(scene[0], scene[1], scene[2], feats, scene[4], *scene[5:])
    (g,) = torch.autograd.grad(latent.sum(), [feats])
    feats_ref = scene[3].clone().requires_grad_(True)
    latent_ref, _, _ = raycast_reference(scene[0], scene[1], scene[2], feats_ref, scene[4], *scene[5:])
    (g_ref,) = torch.autograd.grad(latent_ref.sum(), [feats_ref])
    assert torch.allclose(g, g_ref, atol=1e-9)


# ---------------------------------------------------------------------- dispatch, errors, integration
@needs_ext
def test_dispatch_uses_kernels_and_matches(monkeypatch):
    scene = _random_scene(6, B=1, N=5, C=4, H=12, W=14)
    called = []
    original = kernels.raycast_kernel
    monkeypatch.setattr(kernels, "raycast_kernel", lambda *a, **k: called.append(1) or original(*a, **k))
    auto = raycast(*scene, backend="auto")
    assert called, "backend='auto' did not use the installed kernels"
    ref = raycast(*scene, backend="reference")
    for a, b in zip(auto, ref):
        assert (a - b).abs().max().item() < 1e-9
    monkeypatch.setenv("MARIONETTE_RENDER_BACKEND", "reference")
    called.clear()
    raycast(*scene)
    assert not called


@needs_ext
def test_features_broadcast_over_batch():
    scene = _random_scene(8, B=2, N=4, C=3, H=9, W=11)
    shared = scene[3][:1]
    ker = kernels.raycast_kernel(*scene[:3], shared, *scene[4:])
    ref = raycast_reference(*scene[:3], shared, *scene[4:])
    for a, b in zip(ker, ref):
        assert (a - b).abs().max().item() < 1e-9


@needs_ext
def test_bad_inputs_are_errors():
    scene = _random_scene(9, B=1, N=3, C=2, H=6, W=7)
    with pytest.raises(MarionetteError, match="mode"):
        kernels.raycast_kernel(*scene, mode="nope")
    bad = list(scene)
    bad[1] = bad[1][:, :2]
    with pytest.raises(RuntimeError, match="precisions must be"):
        kernels.raycast_kernel(*bad)
    bad = list(scene)
    bad[4] = bad[4].float()
    none = torch.empty(0, dtype=torch.long)
    with pytest.raises(RuntimeError, match="background is"):
        torch.ops.marionette.raycast_fwd(*bad[:8], 6, 7, 0, none, 0)
    with pytest.raises(RuntimeError, match="mode must be"):
        torch.ops.marionette.raycast_fwd(*scene[:8], 6, 7, 5, none, 0)
    with pytest.raises(RuntimeError, match=r"groups must lie in \[0, 2\), got \[0, 2\]"):
        torch.ops.marionette.raycast_fwd(*scene[:8], 6, 7, 0, torch.tensor([0, 1, 2]), 2)
    with pytest.raises(RuntimeError, match="groups must be int64"):
        torch.ops.marionette.raycast_fwd(*scene[:8], 6, 7, 0, torch.tensor([0, 1, 1], dtype=torch.int32), 2)
    with pytest.raises(RuntimeError, match=r"groups must be \[N\] = \[3\]"):
        torch.ops.marionette.raycast_fwd(*scene[:8], 6, 7, 0, torch.tensor([0, 1]), 2)
    with pytest.raises(MarionetteError, match="groups must lie in"):
        raycast(*scene, groups=torch.tensor([0, 1, 5]), num_groups=2)
    with pytest.raises(MarionetteError, match="one group per primitive"):
        raycast(*scene, groups=torch.tensor([0.0, 1.0, 1.0]), num_groups=2)


@needs_ext
@pytest.mark.parametrize("mode", MODES)
def test_render_latent_posed_body(mode):
    """The whole path: BODY_25B pose -> bone Gaussians -> render_latent on both backends."""
    from engine.synthetic.toy_capture import ring_cameras, walk_sequence
    joints = torch.as_tensor(walk_sequence(2)).double()
    cams = ring_cameras(2, 48)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1, len(BODY_25B.bones), 8, generator=g, dtype=torch.float64, requires_grad=True)
    outs = {}
    for backend in ("kernel", "reference"):
        out = render_latent(joints, BODY_25B, cams, feats, mode=mode, backend=backend)
        loss = (out["latent"] ** 2).mean() + out["alpha"].mean()
        (grad,) = torch.autograd.grad(loss, [feats])
        outs[backend] = (out, grad)
    k, r = outs["kernel"], outs["reference"]
    assert k[0]["alpha"].amax().item() > 0.5  # the body is in the picture
    for name in ("latent", "alpha", "depth"):
        assert (k[0][name] - r[0][name]).abs().max().item() < 1e-4
    assert torch.allclose(k[1], r[1], atol=1e-7)


def test_unavailable_is_clean(monkeypatch):
    """Without the extension the module still imports and says why."""
    monkeypatch.setattr(kernels, "_ext", None)
    assert not kernels.available("cpu")
    with pytest.raises(MarionetteError, match="cuda_ext"):
        kernels.raycast_kernel(*_random_scene(0, B=1, N=2, C=1, H=3, W=3))


@needs_ext
def test_stale_build_is_left_unused(monkeypatch):
    """A build from before primitive groups has another op signature: it is reported, never called, and
    the renderer falls back to the reference."""
    assert kernels._raycast_schema_is_current()  # the build under test is current
    monkeypatch.setattr(kernels, "_STALE_BUILD", True)
    monkeypatch.setattr(kernels, "_DEVICE_TYPES", frozenset())
    assert not kernels.available("cpu")
    assert "rebuild" in kernels.unavailable_reason()
    scene = _random_scene(0, B=1, N=2, C=1, H=3, W=3)
    with pytest.raises(MarionetteError, match="older sources"):
        kernels.raycast_kernel(*scene)
    latent, _, _ = raycast(*scene)  # auto: the reference
    assert torch.equal(latent, raycast_reference(*scene)[0])


def test_too_many_primitives_for_the_cuda_kernel_is_said_not_silent():
    import importlib
    import warnings

    rc = importlib.import_module("engine.neural.render.raycast")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where the kernel fits
        assert rc.fits_cuda_kernel("cpu", 10_000) and rc.fits_cuda_kernel("cuda", rc.CUDA_MAX_PRIMITIVES)
    with pytest.warns(RuntimeWarning, match=r"144 Gaussian primitives exceed .*--per-bone"):
        assert not rc.fits_cuda_kernel("cuda", 144)


# ---------------------------------------------------------------------- CUDA sources
def _nvcc():
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.exists() else None


@pytest.mark.parametrize("source", ["raycast_cuda.cu", "texture_cuda.cu"])
def test_cuda_sources_compile(tmp_path, source):
    """nvcc must accept the CUDA kernels (they cannot run here, but they must build)."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (CUDA toolkit not installed)")
    cmd = [nvcc, "-c", "-std=c++17", "-O1", "-arch=sm_80", "-I", str(CSRC), str(CSRC / source),
           "-o", str(tmp_path / "kernel.o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"nvcc failed:\n{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"


@pytest.mark.parametrize("source", ["raycast_cuda_binding.cpp", "texture_cuda_binding.cpp"])
def test_cuda_binding_compiles(tmp_path, source):
    """The torch side of the CUDA build (g++ syntax check against torch's and CUDA's headers)."""
    nvcc = _nvcc()
    gxx = shutil.which("g++") or shutil.which("c++")
    if nvcc is None or gxx is None:
        pytest.skip("nvcc or a C++ compiler not found")
    from torch.utils.cpp_extension import include_paths
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), str(Path(nvcc).resolve().parents[1]),
             "/usr/local/cuda"]
    incs = [Path(h) / "include" for h in homes if h]
    cuda_inc = next((p for p in incs if (p / "cuda_runtime_api.h").exists()), None)
    if cuda_inc is None:
        pytest.skip(f"CUDA headers (cuda_runtime_api.h) not found in {[str(p) for p in incs]}")
    # CPU wheels of torch ship c10/cuda headers but not this generated one; CUDA builds do.
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = [gxx, "-std=c++20", "-fsyntax-only", "-w", *[f"-I{p}" for p in include_paths()],
           f"-I{tmp_path / 'stub'}", f"-I{cuda_inc}", f"-I{CSRC}", str(CSRC / source)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"compile failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}"
