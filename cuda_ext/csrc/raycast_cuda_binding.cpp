// CUDA implementations of marionette::raycast_fwd / raycast_bwd: checks, allocation on the
// current stream's device, launch of the raw-pointer kernels in raycast_cuda.cu, and the shared
// gradient finishing.  Compiled only for CUDA builds (setup.py, MARIONETTE_WITH_CUDA).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "raycast_cuda.h"
#include "raycast_math.h"
#include "raycast_ops.h"

namespace mk {
namespace {

struct Inputs {
  at::Tensor means, precisions, densities, features, background, K, R, t, groups;
  int64_t num_groups;
};

Inputs prepare(const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities,
               const at::Tensor& features, const at::Tensor& background, const at::Tensor& K, const at::Tensor& R,
               const at::Tensor& t, int64_t height, int64_t width, int64_t mode, const at::Tensor& groups,
               int64_t num_groups) {
  check_raycast_inputs(means, precisions, densities, features, background, K, R, t, height, width, mode, groups,
                       num_groups);
  TORCH_CHECK(means.is_cuda(), "marionette::raycast (CUDA): tensors must be on a CUDA device");
  TORCH_CHECK(means.size(1) <= kCudaMaxPrims, "marionette::raycast (CUDA): at most ", kCudaMaxPrims,
              " primitives per frame, got ", means.size(1), "; use the reference renderer");
  TORCH_CHECK(features.size(2) <= kCudaMaxChannels, "marionette::raycast (CUDA): at most ", kCudaMaxChannels,
              " channels, got ", features.size(2));
  TORCH_CHECK(height * width < (int64_t(1) << 31) && means.size(0) <= 65535,
              "marionette::raycast (CUDA): image or batch too large");
  return Inputs{means.contiguous(), precisions.contiguous(), densities.contiguous(), features.contiguous(),
                background.contiguous(), K.contiguous(), R.contiguous(), t.contiguous(), groups.contiguous(),
                num_groups};
}

template <typename T> RaycastArgs<T> args_of(const Inputs& in, int64_t height, int64_t width, int64_t mode) {
  RaycastArgs<T> a;
  a.means = in.means.data_ptr<T>();
  a.precisions = in.precisions.data_ptr<T>();
  a.densities = in.densities.data_ptr<T>();
  a.features = in.features.data_ptr<T>();
  a.background = in.background.data_ptr<T>();
  a.K = in.K.data_ptr<T>();
  a.R = in.R.data_ptr<T>();
  a.t = in.t.data_ptr<T>();
  a.groups = in.num_groups > 0 ? in.groups.data_ptr<int64_t>() : nullptr;
  a.G = int(in.num_groups);
  a.B = int(in.means.size(0));
  a.N = int(in.means.size(1));
  a.C = int(in.features.size(2));
  a.H = int(height);
  a.W = int(width);
  a.mode = int(mode);
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> raycast_fwd_cuda_op(
    const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities, const at::Tensor& features,
    const at::Tensor& background, const at::Tensor& K, const at::Tensor& R, const at::Tensor& t, int64_t height,
    int64_t width, int64_t mode, const at::Tensor& groups, int64_t num_groups) {
  const Inputs in = prepare(means, precisions, densities, features, background, K, R, t, height, width, mode, groups,
                            num_groups);
  const c10::cuda::CUDAGuard guard(means.device());
  const int64_t B = means.size(0), C = features.size(2);
  auto opts = means.options();
  at::Tensor latent = at::empty({B, C, height, width}, opts);
  at::Tensor alpha = at::empty({B, 1, height, width}, opts);
  at::Tensor depth = at::empty({B, 1, height, width}, opts);
  at::Tensor weights = at::zeros({B, num_groups, height, width}, opts);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "raycast_fwd_cuda", [&] {
    const int err = raycast_fwd_cuda<scalar_t>(args_of<scalar_t>(in, height, width, mode),
                                               latent.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(),
                                               depth.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(),
                                               c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "marionette::raycast_fwd (CUDA): ", cuda_error_string(err));
  });
  return {latent, alpha, depth, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> raycast_bwd_cuda_op(
    const at::Tensor& grad_latent, const at::Tensor& grad_alpha, const at::Tensor& grad_depth,
    const at::Tensor& grad_weights, const at::Tensor& means, const at::Tensor& precisions,
    const at::Tensor& densities, const at::Tensor& features, const at::Tensor& background, const at::Tensor& K,
    const at::Tensor& R, const at::Tensor& t, int64_t height, int64_t width, int64_t mode, const at::Tensor& groups,
    int64_t num_groups) {
  const Inputs in = prepare(means, precisions, densities, features, background, K, R, t, height, width, mode, groups,
                            num_groups);
  const c10::cuda::CUDAGuard guard(means.device());
  const int64_t B = means.size(0), N = means.size(1), C = features.size(2);
  check_raycast_output_grads(grad_latent, grad_alpha, grad_depth, grad_weights, means, features, height, width,
                             num_groups);
  const auto dtype = means.scalar_type();
  at::Tensor gl = grad_latent.to(dtype).contiguous(), ga = grad_alpha.to(dtype).contiguous(),
             gd = grad_depth.to(dtype).contiguous(), gw = grad_weights.to(dtype).contiguous();
  auto opts = means.options();
  at::Tensor geo = at::zeros({B, N, kGeoAcc}, opts);
  at::Tensor gfeat = at::zeros({B, N, C}, opts);
  at::Tensor gbg = at::zeros({B, C}, opts);
  AT_DISPATCH_FLOATING_TYPES(dtype, "raycast_bwd_cuda", [&] {
    const int err = raycast_bwd_cuda<scalar_t>(args_of<scalar_t>(in, height, width, mode), gl.data_ptr<scalar_t>(),
                                               ga.data_ptr<scalar_t>(), gd.data_ptr<scalar_t>(),
                                               gw.data_ptr<scalar_t>(), geo.data_ptr<scalar_t>(), gfeat.data_ptr<scalar_t>(),
                                               gbg.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == 0, "marionette::raycast_bwd (CUDA): ", cuda_error_string(err));
  });
  return finish_raycast_grads(geo, gfeat, gbg, in.means, in.precisions, in.R, in.t);
}

}  // namespace
}  // namespace mk

TORCH_LIBRARY_IMPL(marionette, CUDA, m) {
  m.impl("raycast_fwd", &mk::raycast_fwd_cuda_op);
  m.impl("raycast_bwd", &mk::raycast_bwd_cuda_op);
}
