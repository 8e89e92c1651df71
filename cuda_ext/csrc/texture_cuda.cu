// CUDA kernels of the bone-texture op: one thread per pixel walks the bones (26 for BODY_25B),
// reading the maps (a few hundred kB, cache-resident) where its surface point lies round each bone
// with weight.  The backward pass writes each pixel's weight gradients itself and adds into the map
// gradient with atomics.  Same per-pair math as the CPU kernels (texture_math.h).
#include <cuda_runtime.h>

#include "texture_kernels.h"
#include "texture_math.h"

namespace mk {
namespace {

constexpr int kTextureThreads = 256;

// This thread's pixel: view b, pixel p (row-major) and the surface point it sees; false past the end.
template <typename T> __device__ bool thread_pixel(const TextureArgs<T>& a, int64_t& b, int64_t& p, T pt[3]) {
  const int64_t HW = int64_t(a.H) * a.W;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.B * HW) return false;
  b = i / HW;
  p = i % HW;
  view_surface_point(a, b, p, pt);
  return true;
}

template <typename T> __global__ void __launch_bounds__(kTextureThreads)
bone_texture_fwd_kernel(const TextureArgs<T> a, T* out) {
  const int64_t HW = int64_t(a.H) * a.W;
  int64_t b, p;
  T pt[3];
  if (!thread_pixel(a, b, p, pt)) return;
  T acc[kTextureMaxChannels];
  for (int c = 0; c < a.C; ++c) acc[c] = T(0);
  for (int n = 0; n < a.N; ++n) {
    const int64_t bn = b * a.N + n;
    const T w = a.weights[bn * HW + p];
    if (!(w > a.min_weight)) continue;
    TexelTaps<T> tap;
    if (!bone_taps(a, bn, pt, tap)) continue;
    const T* map = a.maps + int64_t(n) * a.A * a.S * a.C;
    for (int k = 0; k < 4; ++k) {
      const T wk = w * tap.w[k];
      const T* texel = map + int64_t(tap.cell[k]) * a.C;
      for (int c = 0; c < a.C; ++c) acc[c] += wk * texel[c];
    }
  }
  T* o = out + b * a.C * HW + p;
  for (int c = 0; c < a.C; ++c) o[c * HW] = acc[c];
}

template <typename T> __global__ void __launch_bounds__(kTextureThreads)
bone_texture_bwd_kernel(const TextureArgs<T> a, const T* grad, T* grad_maps, T* grad_weights) {
  const int64_t HW = int64_t(a.H) * a.W;
  int64_t b, p;
  T pt[3];
  if (!thread_pixel(a, b, p, pt)) return;
  T g[kTextureMaxChannels];
  bool any = false;
  for (int c = 0; c < a.C; ++c) any |= (g[c] = grad[(b * a.C + c) * HW + p]) != T(0);
  for (int n = 0; n < a.N; ++n) {
    const int64_t bn = b * a.N + n;
    const T w = a.weights[bn * HW + p];
    T dot = T(0);
    TexelTaps<T> tap;
    if (any && w > a.min_weight && bone_taps(a, bn, pt, tap)) {
      const int64_t base = int64_t(n) * a.A * a.S * a.C;
      for (int k = 0; k < 4; ++k) {
        const T* texel = a.maps + base + int64_t(tap.cell[k]) * a.C;
        T* gtexel = grad_maps + base + int64_t(tap.cell[k]) * a.C;
        const T wk = w * tap.w[k];
        T s = T(0);
        for (int c = 0; c < a.C; ++c) {
          s += texel[c] * g[c];
          if (wk != T(0)) atomicAdd(gtexel + c, wk * g[c]);
        }
        dot += tap.w[k] * s;
      }
    }
    grad_weights[bn * HW + p] = dot;
  }
}

inline unsigned blocks_for(int64_t pixels) { return unsigned((pixels + kTextureThreads - 1) / kTextureThreads); }

}  // namespace

template <typename T> int bone_texture_fwd_cuda(const TextureArgs<T>& args, T* features, void* stream) {
  const int64_t pixels = int64_t(args.B) * args.H * args.W;
  if (pixels == 0) return 0;
  if (args.C > kTextureMaxChannels) return int(cudaErrorInvalidValue);
  bone_texture_fwd_kernel<T><<<blocks_for(pixels), kTextureThreads, 0, (cudaStream_t)stream>>>(args, features);
  return int(cudaGetLastError());
}

template <typename T>
int bone_texture_bwd_cuda(const TextureArgs<T>& args, const T* grad_features, T* grad_maps, T* grad_weights,
                          void* stream) {
  const int64_t pixels = int64_t(args.B) * args.H * args.W;
  if (pixels == 0) return 0;
  if (args.C > kTextureMaxChannels) return int(cudaErrorInvalidValue);
  bone_texture_bwd_kernel<T><<<blocks_for(pixels), kTextureThreads, 0, (cudaStream_t)stream>>>(
      args, grad_features, grad_maps, grad_weights);
  return int(cudaGetLastError());
}

template int bone_texture_fwd_cuda<float>(const TextureArgs<float>&, float*, void*);
template int bone_texture_fwd_cuda<double>(const TextureArgs<double>&, double*, void*);
template int bone_texture_bwd_cuda<float>(const TextureArgs<float>&, const float*, float*, float*, void*);
template int bone_texture_bwd_cuda<double>(const TextureArgs<double>&, const double*, double*, double*, void*);

}  // namespace mk
