// Operator schemas (TORCH_LIBRARY), the CPU implementations, the gradient finishing shared by
// all devices, and the Python module entry point of marionette_kernels._C.
//
//   marionette::raycast_fwd(means, precisions, densities, features, background, K, R, t,
//                           height, width, mode, groups, num_groups) -> (latent, alpha, depth, weights)
//   marionette::raycast_bwd(grad_latent, grad_alpha, grad_depth, grad_weights, <the forward's inputs>)
//       -> (grad_means, grad_precisions, grad_densities, grad_features, grad_background)
//
// mode: 0 = transmittance, 1 = rochette.  groups (int64 [N], or empty with num_groups 0) assigns each
// primitive to a group (a bone); weights [B, num_groups, H, W] is what a one-hot feature per group would
// render, without num_groups extra channels in every per-pixel loop.
// Autograd and fake (meta) kernels are registered from Python (engine/render/kernels.py) with torch.library.
#include <Python.h>

#include <ATen/TensorOperators.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/stack.h>
#include <torch/library.h>

#include "raycast_math.h"
#include "raycast_ops.h"

#include <vector>

namespace mk {

void check_raycast_inputs(const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities,
                          const at::Tensor& features, const at::Tensor& background, const at::Tensor& K,
                          const at::Tensor& R, const at::Tensor& t, int64_t height, int64_t width, int64_t mode,
                          const at::Tensor& groups, int64_t num_groups) {
  TORCH_CHECK(mode == kTransmittance || mode == kRochette,
              "marionette::raycast: mode must be 0 (transmittance) or 1 (rochette), got ", mode);
  TORCH_CHECK(height > 0 && width > 0, "marionette::raycast: height and width must be positive, got ", height, "x",
              width);
  TORCH_CHECK(means.dim() == 3 && means.size(2) == 3, "marionette::raycast: means must be [B,N,3], got ",
              means.sizes());
  const int64_t B = means.size(0), N = means.size(1);
  TORCH_CHECK(precisions.dim() == 4 && precisions.size(0) == B && precisions.size(1) == N &&
                  precisions.size(2) == 3 && precisions.size(3) == 3,
              "marionette::raycast: precisions must be [B,N,3,3] = [", B, ",", N, ",3,3], got ", precisions.sizes());
  TORCH_CHECK(densities.dim() == 2 && densities.size(0) == B && densities.size(1) == N,
              "marionette::raycast: densities must be [B,N] = [", B, ",", N, "], got ", densities.sizes());
  TORCH_CHECK(features.dim() == 3 && features.size(0) == B && features.size(1) == N,
              "marionette::raycast: features must be [B,N,C] with B=", B, ", N=", N, ", got ", features.sizes());
  const int64_t C = features.size(2);
  TORCH_CHECK(background.dim() == 2 && background.size(0) == B && background.size(1) == C,
              "marionette::raycast: background must be [B,C] = [", B, ",", C, "], got ", background.sizes());
  TORCH_CHECK(K.dim() == 3 && K.size(0) == B && K.size(1) == 3 && K.size(2) == 3,
              "marionette::raycast: K must be [B,3,3], got ", K.sizes());
  TORCH_CHECK(R.dim() == 3 && R.size(0) == B && R.size(1) == 3 && R.size(2) == 3,
              "marionette::raycast: R must be [B,3,3], got ", R.sizes());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == 3, "marionette::raycast: t must be [B,3], got ",
              t.sizes());
  const auto dtype = means.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "marionette::raycast: expected float32 or float64, got ",
              dtype);
  const at::Tensor* all[] = {&precisions, &densities, &features, &background, &K, &R, &t};
  const char* names[] = {"precisions", "densities", "features", "background", "K", "R", "t"};
  for (int i = 0; i < 7; ++i) {
    TORCH_CHECK(all[i]->scalar_type() == dtype, "marionette::raycast: ", names[i], " is ", all[i]->scalar_type(),
                " but means are ", dtype, "; use one dtype");
    TORCH_CHECK(all[i]->device() == means.device(), "marionette::raycast: ", names[i], " is on ", all[i]->device(),
                " but means are on ", means.device());
  }
  TORCH_CHECK(groups.scalar_type() == at::kLong && groups.device() == means.device(),
              "marionette::raycast: groups must be int64 on ", means.device(), ", got ", groups.scalar_type(), " on ",
              groups.device());
  TORCH_CHECK(num_groups >= 0, "marionette::raycast: num_groups must be >= 0, got ", num_groups);
  if (num_groups == 0) {
    TORCH_CHECK(groups.numel() == 0, "marionette::raycast: groups given but num_groups is 0");
  } else {
    TORCH_CHECK(groups.dim() == 1 && groups.size(0) == N, "marionette::raycast: groups must be [N] = [", N,
                "], got ", groups.sizes());
    if (N > 0 && groups.is_cpu()) {  // on CUDA a range check would cost a sync; kernels.raycast_kernel checks
      const auto lo = groups.min().item<int64_t>(), hi = groups.max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < num_groups, "marionette::raycast: groups must lie in [0, ", num_groups,
                  "), got [", lo, ", ", hi, "]");
    }
  }
}

void check_raycast_output_grads(const at::Tensor& grad_latent, const at::Tensor& grad_alpha,
                                const at::Tensor& grad_depth, const at::Tensor& grad_weights, const at::Tensor& means,
                                const at::Tensor& features, int64_t height, int64_t width, int64_t num_groups) {
  const int64_t B = means.size(0), C = features.size(2);
  TORCH_CHECK(grad_latent.sizes() == at::IntArrayRef({B, C, height, width}) &&
                  grad_alpha.sizes() == at::IntArrayRef({B, 1, height, width}) &&
                  grad_depth.sizes() == at::IntArrayRef({B, 1, height, width}) &&
                  grad_weights.sizes() == at::IntArrayRef({B, num_groups, height, width}),
              "marionette::raycast_bwd: output gradients must match the forward's outputs");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish_raycast_grads(
    const at::Tensor& geo, const at::Tensor& grad_features, const at::Tensor& grad_background,
    const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& R, const at::Tensor& t) {
  // Accumulated over pixels: GA = sum g_a d d^T (6 unique), GB = sum g_b d, GC = sum g_c, GR = sum g_rho.
  // With m = mean - o, a = d^T P d, b = d^T P m, c = m^T P m:
  //   dP = GA + GB m^T + GC m m^T,   dmean = P^T GB + (P + P^T) m GC.
  const auto dtype = means.scalar_type();
  at::Tensor g = geo.to(dtype);
  at::Tensor o = -R.transpose(1, 2).matmul(t.unsqueeze(-1)).squeeze(-1);  // [B,3]
  at::Tensor m = means - o.unsqueeze(1);                                      // [B,N,3]
  auto sizes = means.sizes().vec();  // [B,N,3]
  const int sym[9] = {0, 1, 2, 1, 3, 4, 2, 4, 5};  // 3x3 entry -> unique accumulator
  std::vector<at::Tensor> entries;
  for (int i = 0; i < 9; ++i) entries.push_back(g.select(-1, sym[i]));
  at::Tensor ga = at::stack(entries, -1).reshape({sizes[0], sizes[1], 3, 3});
  at::Tensor gb = g.slice(-1, 6, 9);
  at::Tensor gc = g.select(-1, 9);
  at::Tensor grho = g.select(-1, 10).contiguous();
  at::Tensor mm = m.unsqueeze(-1) * m.unsqueeze(-2);
  at::Tensor grad_prec = ga + gb.unsqueeze(-1) * m.unsqueeze(-2) + gc.unsqueeze(-1).unsqueeze(-1) * mm;
  at::Tensor pt = precisions.transpose(-1, -2);
  at::Tensor grad_means = pt.matmul(gb.unsqueeze(-1)).squeeze(-1) +
                          (precisions + pt).matmul(m.unsqueeze(-1)).squeeze(-1) * gc.unsqueeze(-1);
  return {grad_means, grad_prec, grho, grad_features.to(dtype), grad_background.to(dtype)};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> raycast_fwd_cpu(
    const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities, const at::Tensor& features,
    const at::Tensor& background, const at::Tensor& K, const at::Tensor& R, const at::Tensor& t, int64_t height,
    int64_t width, int64_t mode, const at::Tensor& groups, int64_t num_groups) {
  check_raycast_inputs(means, precisions, densities, features, background, K, R, t, height, width, mode, groups,
                       num_groups);
  return raycast_fwd_cpu_kernel(means, precisions, densities, features, background, K, R, t, height, width, mode,
                                groups, num_groups);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> raycast_bwd_cpu(
    const at::Tensor& grad_latent, const at::Tensor& grad_alpha, const at::Tensor& grad_depth,
    const at::Tensor& grad_weights, const at::Tensor& means, const at::Tensor& precisions,
    const at::Tensor& densities, const at::Tensor& features, const at::Tensor& background, const at::Tensor& K,
    const at::Tensor& R, const at::Tensor& t, int64_t height, int64_t width, int64_t mode, const at::Tensor& groups,
    int64_t num_groups) {
  check_raycast_inputs(means, precisions, densities, features, background, K, R, t, height, width, mode, groups,
                       num_groups);
  check_raycast_output_grads(grad_latent, grad_alpha, grad_depth, grad_weights, means, features, height, width,
                             num_groups);
  const auto dtype = means.scalar_type();
  auto acc = raycast_bwd_cpu_kernel(grad_latent.to(dtype), grad_alpha.to(dtype), grad_depth.to(dtype),
                                    grad_weights.to(dtype), means, precisions, densities, features, background, K, R,
                                    t, height, width, mode, groups, num_groups);
  return finish_raycast_grads(std::get<0>(acc), std::get<1>(acc), std::get<2>(acc), means, precisions, R, t);
}

}  // namespace
}  // namespace mk

TORCH_LIBRARY(marionette, m) {
  m.def(
      "raycast_fwd(Tensor means, Tensor precisions, Tensor densities, Tensor features, Tensor background, "
      "Tensor K, Tensor R, Tensor t, int height, int width, int mode, Tensor groups, int num_groups) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "raycast_bwd(Tensor grad_latent, Tensor grad_alpha, Tensor grad_depth, Tensor grad_weights, Tensor means, "
      "Tensor precisions, Tensor densities, Tensor features, Tensor background, Tensor K, Tensor R, Tensor t, "
      "int height, int width, int mode, Tensor groups, int num_groups) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(marionette, CPU, m) {
  m.impl("raycast_fwd", &mk::raycast_fwd_cpu);
  m.impl("raycast_bwd", &mk::raycast_bwd_cpu);
}

// Importing marionette_kernels._C loads this library, which runs the registrations above.
static struct PyModuleDef mk_module = {PyModuleDef_HEAD_INIT, "_C", "Marionette renderer kernels (torch ops).", -1,
                                       nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&mk_module); }
