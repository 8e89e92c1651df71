// Tensor-level glue of the bone-texture op shared by its CPU registration (texture_ops.cpp) and
// the CUDA binding (texture_cuda_binding.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include "texture_kernels.h"

namespace mk {

// The op's inputs made contiguous, maps moved to channels-last [N,A,S,C].
struct TextureInputs {
  at::Tensor maps_last, weights, depth, K, R, t, frames, mid, length;
  double min_weight, extent;
};

// Checks shapes, dtypes and devices (TORCH_CHECK with clear messages) and prepares the inputs.
TextureInputs prepare_texture_inputs(const at::Tensor& maps, const at::Tensor& weights, const at::Tensor& depth,
                                     const at::Tensor& K, const at::Tensor& R, const at::Tensor& t,
                                     const at::Tensor& frames, const at::Tensor& mid, const at::Tensor& length,
                                     double min_weight, double extent);

template <typename T> TextureArgs<T> texture_args_of(const TextureInputs& in) {
  TextureArgs<T> a;
  a.maps = in.maps_last.data_ptr<T>();
  a.weights = in.weights.data_ptr<T>();
  a.depth = in.depth.data_ptr<T>();
  a.K = in.K.data_ptr<T>();
  a.R = in.R.data_ptr<T>();
  a.t = in.t.data_ptr<T>();
  a.frames = in.frames.data_ptr<T>();
  a.mid = in.mid.data_ptr<T>();
  a.length = in.length.data_ptr<T>();
  a.min_weight = T(in.min_weight);
  a.extent = T(in.extent);
  a.B = int(in.weights.size(0));
  a.N = int(in.weights.size(1));
  a.H = int(in.weights.size(2));
  a.W = int(in.weights.size(3));
  a.A = int(in.maps_last.size(1));
  a.S = int(in.maps_last.size(2));
  a.C = int(in.maps_last.size(3));
  return a;
}

template <typename T> void bone_texture_fwd_cpu_kernel(const TextureArgs<T>& args, T* features);
template <typename T>
void bone_texture_bwd_cpu_kernel(const TextureArgs<T>& args, const T* grad_features, T* grad_maps, T* grad_weights);

}  // namespace mk
