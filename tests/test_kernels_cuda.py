"""The CUDA kernels (raycast and bone texture) against the CPU reference, on a GPU.

Marked ``gpu`` and skipped without a CUDA device with the kernels built for it; ``scripts/gpu_check.sh``
runs them (``pytest -m gpu``). The sources' compilation is checked on every machine with nvcc
(tests/test_kernels.py::test_cuda_sources_compile / test_cuda_binding_compiles).
"""

from __future__ import annotations

import pytest
import torch

from engine.neural.render import kernels
from engine.neural.render.raycast import raycast_reference
from tests.test_bone_texture import _render_inputs
from tests.test_kernels import MODES, _assert_close, _grouped_outputs_and_grads, _outputs_and_grads, _random_scene

CUDA = torch.device("cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    pytest.mark.skipif(not kernels.available(CUDA), reason="marionette_kernels built without CUDA"),
]


def _to(xs, device):
    return [x.to(device) if isinstance(x, torch.Tensor) else x for x in xs]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("degenerate", [None, "zero_length", "behind", "outside"])
def test_raycast_cuda_matches_reference(mode, dtype, degenerate):
    scene = _random_scene(3, dtype=dtype, degenerate=degenerate)
    ref = _outputs_and_grads(raycast_reference, scene, mode)
    ker = _outputs_and_grads(kernels.raycast_kernel, _to(scene, CUDA), mode)
    ker = ([o.cpu() for o in ker[0]], [g.cpu() for g in ker[1]])
    tol = 1e-4 if dtype == torch.float64 else 2e-3
    _assert_close(ref[0], ker[0], ref[1], ker[1], atol=tol, grad_rtol=tol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_raycast_cuda_group_weights_match_reference(mode, dtype):
    scene = _random_scene(12, N=9, dtype=dtype)
    groups = torch.tensor([0, 2, 2, 1, 3, 3, 3, 0, 1])
    ref = _grouped_outputs_and_grads("reference", scene, mode, groups, 4)
    ker = _grouped_outputs_and_grads("kernel", _to(scene, CUDA), mode, groups.to(CUDA), 4)
    tol = 1e-4 if dtype == torch.float64 else 2e-3
    for name, r, k in zip(("latent", "alpha", "depth", "weights"), ref[0], ker[0]):
        assert (r - k.cpu()).abs().max().item() <= tol, name
    for name, r, k in zip(("means", "precisions", "densities", "features", "background"), ref[1], ker[1]):
        assert (r - k.cpu()).abs().max().item() <= tol * max(1.0, r.abs().max().item()), name


def test_raycast_cuda_gradcheck_float64():
    scene = _to(_random_scene(4, B=1, N=3, C=2, H=6, W=7), CUDA)
    inputs = [x.detach().clone().requires_grad_(True) for x in scene[:5]]
    assert torch.autograd.gradcheck(lambda *xs: kernels.raycast_kernel(*xs, *scene[5:], mode="transmittance"),
                                    inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bone_texture_cuda_matches_reference(dtype):
    tex, J, depth, weights, K, R, t = _render_inputs(dtype=dtype)
    grads = {}
    for dev in ("cpu", "cuda"):
        tex.to(dev)
        w = weights.to(dev).clone().requires_grad_(True)
        tex.maps.grad = None
        args = _to([J, depth, w, K, R, t], dev)
        out = tex.forward_reference(*args) if dev == "cpu" else tex.forward(*args, backend="kernel")
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype, device=dev).reshape(out.shape)).sum().backward()
        grads[dev] = (out.detach().cpu(), tex.maps.grad.cpu(), w.grad.cpu())
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for a, b in zip(grads["cpu"], grads["cuda"]):
        assert torch.allclose(a, b, atol=tol, rtol=tol)


def test_actor_renders_on_cuda_like_on_cpu():
    tex, J, depth, weights, K, R, t = _render_inputs(dtype=torch.float32)
    cpu = tex(J, depth, weights, K, R, t)
    tex.to(CUDA)
    assert torch.allclose(tex(*_to([J, depth, weights, K, R, t], CUDA)).cpu(), cpu, atol=1e-4)
