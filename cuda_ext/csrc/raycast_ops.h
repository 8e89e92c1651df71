// Declarations shared by ops.cpp (schemas, CPU registration, gradient finishing), raycast_cpu.cpp
// and the CUDA binding.  Needs ATen; the CUDA kernels themselves live behind raycast_cuda.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <tuple>

namespace mk {

// Checks shapes/dtypes/devices of the op's inputs (TORCH_CHECK with clear messages).
// groups: int64 [N], each primitive's group in [0, num_groups), or empty with num_groups = 0.
void check_raycast_inputs(const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities,
                          const at::Tensor& features, const at::Tensor& background, const at::Tensor& K,
                          const at::Tensor& R, const at::Tensor& t, int64_t height, int64_t width, int64_t mode,
                          const at::Tensor& groups, int64_t num_groups);

// Forward on CPU: latent [B,C,H,W], alpha [B,1,H,W], depth [B,1,H,W], group weights [B,G,H,W] (the
// latent a one-hot feature of each primitive's group would give).  One floating dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> raycast_fwd_cpu_kernel(
    const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities, const at::Tensor& features,
    const at::Tensor& background, const at::Tensor& K, const at::Tensor& R, const at::Tensor& t, int64_t height,
    int64_t width, int64_t mode, const at::Tensor& groups, int64_t num_groups);

// Backward on CPU up to the per-primitive accumulators: geo [B,N,11] (see mk::geo_terms),
// grad_features [B,N,C], grad_background [B,C].
std::tuple<at::Tensor, at::Tensor, at::Tensor> raycast_bwd_cpu_kernel(
    const at::Tensor& grad_latent, const at::Tensor& grad_alpha, const at::Tensor& grad_depth,
    const at::Tensor& grad_weights, const at::Tensor& means, const at::Tensor& precisions,
    const at::Tensor& densities, const at::Tensor& features, const at::Tensor& background, const at::Tensor& K,
    const at::Tensor& R, const at::Tensor& t, int64_t height, int64_t width, int64_t mode, const at::Tensor& groups,
    int64_t num_groups);

// TORCH_CHECKs that the output gradients have the forward's output shapes.
void check_raycast_output_grads(const at::Tensor& grad_latent, const at::Tensor& grad_alpha,
                                const at::Tensor& grad_depth, const at::Tensor& grad_weights, const at::Tensor& means,
                                const at::Tensor& features, int64_t height, int64_t width, int64_t num_groups);

// Accumulators -> (grad_means, grad_precisions, grad_densities, grad_features, grad_background), any device.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish_raycast_grads(
    const at::Tensor& geo, const at::Tensor& grad_features, const at::Tensor& grad_background,
    const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& R, const at::Tensor& t);

}  // namespace mk
