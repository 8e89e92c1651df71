// CUDA implementations of marionette::bone_texture_fwd / bone_texture_bwd: checks (shared with the
// CPU op), allocation on the current stream's device and launch of the kernels in texture_cuda.cu.
// Compiled only for CUDA builds (setup.py, MARIONETTE_WITH_CUDA).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "raycast_cuda.h"
#include "texture_ops.h"

namespace mk {
namespace {

at::Tensor bone_texture_fwd_cuda_op(const at::Tensor& maps, const at::Tensor& weights, const at::Tensor& depth,
                                    const at::Tensor& K, const at::Tensor& R, const at::Tensor& t,
                                    const at::Tensor& frames, const at::Tensor& mid, const at::Tensor& length,
                                    double min_weight, double extent) {
  const TextureInputs in = prepare_texture_inputs(maps, weights, depth, K, R, t, frames, mid, length, min_weight, extent);
  TORCH_CHECK(maps.is_cuda(), "marionette::bone_texture (CUDA): tensors must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(maps.device());
  at::Tensor out = at::empty({weights.size(0), maps.size(1), weights.size(2), weights.size(3)}, maps.options());
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "bone_texture_fwd_cuda", [&] {
    const int err = bone_texture_fwd_cuda<scalar_t>(texture_args_of<scalar_t>(in), out.data_ptr<scalar_t>(),
                                                    c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "marionette::bone_texture_fwd (CUDA): ", cuda_error_string(err));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bone_texture_bwd_cuda_op(const at::Tensor& grad, const at::Tensor& maps,
                                                            const at::Tensor& weights, const at::Tensor& depth,
                                                            const at::Tensor& K, const at::Tensor& R,
                                                            const at::Tensor& t, const at::Tensor& frames, const at::Tensor& mid,
                                                            const at::Tensor& length, double min_weight,
                                                            double extent) {
  const TextureInputs in = prepare_texture_inputs(maps, weights, depth, K, R, t, frames, mid, length, min_weight, extent);
  TORCH_CHECK(maps.is_cuda(), "marionette::bone_texture (CUDA): tensors must be on a CUDA device");
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({weights.size(0), maps.size(1), weights.size(2), weights.size(3)}),
              "marionette::bone_texture_bwd: the gradient must match the forward's features, got ", grad.sizes());
  const c10::cuda::CUDAGuard guard(maps.device());
  const at::Tensor g = grad.to(maps.scalar_type()).contiguous();
  at::Tensor grad_maps_last = at::zeros(in.maps_last.sizes(), maps.options());
  at::Tensor grad_weights = at::empty(in.weights.sizes(), maps.options());
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "bone_texture_bwd_cuda", [&] {
    const int err = bone_texture_bwd_cuda<scalar_t>(texture_args_of<scalar_t>(in), g.data_ptr<scalar_t>(),
                                                    grad_maps_last.data_ptr<scalar_t>(),
                                                    grad_weights.data_ptr<scalar_t>(),
                                                    c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "marionette::bone_texture_bwd (CUDA): ", cuda_error_string(err));
  });
  return {grad_maps_last.permute({0, 3, 1, 2}).contiguous(), grad_weights};
}

}  // namespace
}  // namespace mk

TORCH_LIBRARY_IMPL(marionette, CUDA, m) {
  m.impl("bone_texture_fwd", &mk::bone_texture_fwd_cuda_op);
  m.impl("bone_texture_bwd", &mk::bone_texture_bwd_cuda_op);
}
