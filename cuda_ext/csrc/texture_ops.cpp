// Schemas, input checks and CPU registration of the bone-texture op:
//
//   marionette::bone_texture_fwd(maps [N,C,A,S], weights [B,N,H,W], depth [B,1,H,W], K [B,3,3], R [B,3,3],
//                                t [B,3], frames [B,N,3,3], mid [B,N,3], length [B,N], min_weight, extent)
//       -> features [B,C,H,W]
//   marionette::bone_texture_bwd(grad_features, <the forward's inputs>) -> (grad_maps, grad_weights)
//
// Differentiable w.r.t. maps and weights; the coordinates (depth, cameras, bone geometry) are data.
// Autograd and fake kernels are registered from Python (engine/neural/render/kernels.py).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "texture_ops.h"

namespace mk {

TextureInputs prepare_texture_inputs(const at::Tensor& maps, const at::Tensor& weights, const at::Tensor& depth,
                                     const at::Tensor& K, const at::Tensor& R, const at::Tensor& t,
                                     const at::Tensor& frames, const at::Tensor& mid, const at::Tensor& length,
                                     double min_weight, double extent) {
  TORCH_CHECK(maps.dim() == 4, "marionette::bone_texture: maps must be [N,C,A,S], got ", maps.sizes());
  const int64_t N = maps.size(0), C = maps.size(1), A = maps.size(2), S = maps.size(3);
  TORCH_CHECK(C >= 1 && C <= kTextureMaxChannels && A >= 1 && S >= 1,
              "marionette::bone_texture: maps need 1-", kTextureMaxChannels, " channels and a non-empty map, got ",
              maps.sizes());
  TORCH_CHECK(weights.dim() == 4 && weights.size(1) == N, "marionette::bone_texture: weights must be [B,N,H,W] with N=",
              N, " (one map per bone), got ", weights.sizes());
  const int64_t B = weights.size(0), H = weights.size(2), W = weights.size(3);
  TORCH_CHECK(depth.dim() == 4 && depth.size(0) == B && depth.size(1) == 1 && depth.size(2) == H &&
                  depth.size(3) == W,
              "marionette::bone_texture: depth must be [B,1,H,W] = [", B, ",1,", H, ",", W, "], got ", depth.sizes());
  TORCH_CHECK(K.dim() == 3 && K.size(0) == B && K.size(1) == 3 && K.size(2) == 3,
              "marionette::bone_texture: K must be [B,3,3], got ", K.sizes());
  TORCH_CHECK(R.dim() == 3 && R.size(0) == B && R.size(1) == 3 && R.size(2) == 3,
              "marionette::bone_texture: R must be [B,3,3], got ", R.sizes());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == 3, "marionette::bone_texture: t must be [B,3], got ",
              t.sizes());
  TORCH_CHECK(frames.dim() == 4 && frames.size(0) == B && frames.size(1) == N && frames.size(2) == 3 &&
                  frames.size(3) == 3,
              "marionette::bone_texture: frames must be [B,N,3,3] = [", B, ",", N, ",3,3], got ", frames.sizes());
  TORCH_CHECK(mid.dim() == 3 && mid.size(0) == B && mid.size(1) == N && mid.size(2) == 3,
              "marionette::bone_texture: mid must be [B,N,3], got ", mid.sizes());
  TORCH_CHECK(length.dim() == 2 && length.size(0) == B && length.size(1) == N,
              "marionette::bone_texture: length must be [B,N], got ", length.sizes());
  TORCH_CHECK(extent > 0, "marionette::bone_texture: extent must be positive, got ", extent);
  TORCH_CHECK(B * H * W < (int64_t(1) << 31) && N * A * S * C < (int64_t(1) << 31),
              "marionette::bone_texture: images or maps too large");
  const auto dtype = maps.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "marionette::bone_texture: expected float32 or float64, got ", dtype);
  const at::Tensor* all[] = {&weights, &depth, &K, &R, &t, &frames, &mid, &length};
  const char* names[] = {"weights", "depth", "K", "R", "t", "frames", "mid", "length"};
  for (int i = 0; i < 8; ++i) {
    TORCH_CHECK(all[i]->scalar_type() == dtype, "marionette::bone_texture: ", names[i], " is ",
                all[i]->scalar_type(), " but maps are ", dtype, "; use one dtype");
    TORCH_CHECK(all[i]->device() == maps.device(), "marionette::bone_texture: ", names[i], " is on ",
                all[i]->device(), " but maps are on ", maps.device());
  }
  return TextureInputs{maps.permute({0, 2, 3, 1}).contiguous(), weights.contiguous(), depth.contiguous(),
                       K.contiguous(), R.contiguous(), t.contiguous(), frames.contiguous(), mid.contiguous(),
                       length.contiguous(), min_weight, extent};
}

namespace {

at::Tensor bone_texture_fwd_cpu(const at::Tensor& maps, const at::Tensor& weights, const at::Tensor& depth,
                                const at::Tensor& K, const at::Tensor& R, const at::Tensor& t, const at::Tensor& frames, const at::Tensor& mid, const at::Tensor& length,
                                double min_weight, double extent) {
  const TextureInputs in = prepare_texture_inputs(maps, weights, depth, K, R, t, frames, mid, length, min_weight, extent);
  at::Tensor out = at::empty({weights.size(0), maps.size(1), weights.size(2), weights.size(3)}, maps.options());
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "bone_texture_fwd_cpu", [&] {
    bone_texture_fwd_cpu_kernel<scalar_t>(texture_args_of<scalar_t>(in), out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> bone_texture_bwd_cpu(const at::Tensor& grad, const at::Tensor& maps,
                                                        const at::Tensor& weights, const at::Tensor& depth,
                                                        const at::Tensor& K, const at::Tensor& R,
                                                        const at::Tensor& t, const at::Tensor& frames, const at::Tensor& mid,
                                                        const at::Tensor& length, double min_weight, double extent) {
  const TextureInputs in = prepare_texture_inputs(maps, weights, depth, K, R, t, frames, mid, length, min_weight, extent);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef({weights.size(0), maps.size(1), weights.size(2), weights.size(3)}),
              "marionette::bone_texture_bwd: the gradient must match the forward's features, got ", grad.sizes());
  const at::Tensor g = grad.to(maps.scalar_type()).contiguous();
  at::Tensor grad_maps_last = at::zeros(in.maps_last.sizes(), maps.options());
  at::Tensor grad_weights = at::empty(in.weights.sizes(), maps.options());
  AT_DISPATCH_FLOATING_TYPES(maps.scalar_type(), "bone_texture_bwd_cpu", [&] {
    bone_texture_bwd_cpu_kernel<scalar_t>(texture_args_of<scalar_t>(in), g.data_ptr<scalar_t>(),
                                          grad_maps_last.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>());
  });
  return {grad_maps_last.permute({0, 3, 1, 2}).contiguous(), grad_weights};
}

}  // namespace
}  // namespace mk

TORCH_LIBRARY_FRAGMENT(marionette, m) {
  m.def(
      "bone_texture_fwd(Tensor maps, Tensor weights, Tensor depth, Tensor K, Tensor R, Tensor t, Tensor frames, "
      "Tensor mid, Tensor length, float min_weight, float extent) -> Tensor");
  m.def(
      "bone_texture_bwd(Tensor grad_features, Tensor maps, Tensor weights, Tensor depth, Tensor K, Tensor R, Tensor t, "
      "Tensor frames, Tensor mid, Tensor length, float min_weight, float extent) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(marionette, CPU, m) {
  m.impl("bone_texture_fwd", &mk::bone_texture_fwd_cpu);
  m.impl("bone_texture_bwd", &mk::bone_texture_bwd_cpu);
}
