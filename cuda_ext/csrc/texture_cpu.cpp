// CPU kernels of the bone-texture op: per pixel, every bone whose compositing weight exceeds
// min_weight is read bilinearly where the pixel's surface point lies round it (texture_math.h).
// Rows of pixels are shared out by at::parallel_for; within a row the bones are the outer loop,
// so each bone's weights are read as one contiguous run (most pixels see no bone at all).  The
// backward pass scatters into per-thread copies of the (small) map gradient, summed at the end,
// so no atomics are needed.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

#include "texture_kernels.h"
#include "texture_math.h"
#include "texture_ops.h"

namespace mk {
namespace {

// The surface points of one row (x-major, 3 per pixel), computed only where some bone has weight.
template <typename T>
void row_points(const TextureArgs<T>& a, const Cam<T>& cam, int64_t b, int64_t y, const std::vector<char>& used,
                std::vector<T>& pts) {
  const T* dep = a.depth + (b * a.H + y) * a.W;
  for (int64_t x = 0; x < a.W; ++x)
    if (used[x]) surface_point(cam, T(x), T(y), dep[x], &pts[3 * x]);
}

// Marks the pixels of row (b, y) that some bone has weight at; false when none has.
template <typename T> bool row_used(const TextureArgs<T>& a, int64_t b, int64_t y, std::vector<char>& used) {
  std::fill(used.begin(), used.end(), char(0));
  bool any = false;
  for (int64_t n = 0; n < a.N; ++n) {
    const T* wrow = a.weights + ((b * a.N + n) * a.H + y) * a.W;
    for (int64_t x = 0; x < a.W; ++x)
      if (wrow[x] > a.min_weight) used[x] = 1, any = true;
  }
  return any;
}

template <typename T> void fwd_impl(const TextureArgs<T>& a, T* out) {
  const int64_t HW = int64_t(a.H) * a.W, C = a.C, W = a.W, map_size = int64_t(a.A) * a.S * C;
  at::parallel_for(0, int64_t(a.B) * a.H, 4, [&](int64_t r0, int64_t r1) {
    std::vector<T> acc(W * C), pts(3 * W);
    std::vector<char> used(W);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / a.H, y = row % a.H;
      std::fill(acc.begin(), acc.end(), T(0));
      if (row_used(a, b, y, used)) {
        Cam<T> cam;
        load_cam(a.K + b * 9, a.R + b * 9, a.t + b * 3, cam);
        row_points(a, cam, b, y, used, pts);
        for (int64_t n = 0; n < a.N; ++n) {
          const int64_t bn = b * a.N + n;
          const T* wrow = a.weights + (bn * a.H + y) * W;
          const T* map = a.maps + n * map_size;
          for (int64_t x = 0; x < W; ++x) {
            const T w = wrow[x];
            if (!(w > a.min_weight)) continue;
            TexelTaps<T> tap;
            if (!bone_taps(a, bn, &pts[3 * x], tap)) continue;
            T* o = &acc[x * C];
            for (int k = 0; k < 4; ++k) {
              const T wk = w * tap.w[k];
              const T* texel = map + int64_t(tap.cell[k]) * C;
              for (int64_t c = 0; c < C; ++c) o[c] += wk * texel[c];
            }
          }
        }
      }
      T* orow = out + b * C * HW + y * W;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t x = 0; x < W; ++x) orow[c * HW + x] = acc[x * C + c];
    }
  });
}

template <typename T> void bwd_impl(const TextureArgs<T>& a, const T* grad, T* grad_maps, T* grad_weights) {
  const int64_t HW = int64_t(a.H) * a.W, C = a.C, W = a.W, map_size = int64_t(a.A) * a.S * C;
  const int64_t slots = std::max<int64_t>(1, at::get_num_threads());
  std::vector<std::vector<T>> partial(slots);  // allocated by the thread that uses it
  at::parallel_for(0, int64_t(a.B) * a.H, 4, [&](int64_t r0, int64_t r1) {
    std::vector<T>& gm = partial[at::get_thread_num() % slots];
    if (gm.empty()) gm.assign(a.N * map_size, T(0));
    std::vector<T> g(W * C), pts(3 * W);
    std::vector<char> used(W);
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / a.H, y = row % a.H;
      for (int64_t n = 0; n < a.N; ++n) std::fill_n(grad_weights + ((b * a.N + n) * a.H + y) * W, W, T(0));
      if (!row_used(a, b, y, used)) continue;
      Cam<T> cam;
      load_cam(a.K + b * 9, a.R + b * 9, a.t + b * 3, cam);
      row_points(a, cam, b, y, used, pts);
      const T* grow = grad + b * C * HW + y * W;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t x = 0; x < W; ++x) g[x * C + c] = grow[c * HW + x];
      for (int64_t n = 0; n < a.N; ++n) {
        const int64_t bn = b * a.N + n;
        const T* wrow = a.weights + (bn * a.H + y) * W;
        T* gwrow = grad_weights + (bn * a.H + y) * W;
        const T* map = a.maps + n * map_size;
        T* gmap = gm.data() + n * map_size;
        for (int64_t x = 0; x < W; ++x) {
          const T w = wrow[x];
          if (!(w > a.min_weight)) continue;
          TexelTaps<T> tap;
          if (!bone_taps(a, bn, &pts[3 * x], tap)) continue;
          const T* gx = &g[x * C];
          T dot = T(0);
          for (int k = 0; k < 4; ++k) {
            const T* texel = map + int64_t(tap.cell[k]) * C;
            T* gtexel = gmap + int64_t(tap.cell[k]) * C;
            const T wk = w * tap.w[k];
            T s = T(0);
            for (int64_t c = 0; c < C; ++c) {
              s += texel[c] * gx[c];
              gtexel[c] += wk * gx[c];
            }
            dot += tap.w[k] * s;
          }
          gwrow[x] = dot;
        }
      }
    }
  });
  const int64_t total = a.N * map_size;
  for (const auto& gm : partial)
    if (!gm.empty())
      for (int64_t i = 0; i < total; ++i) grad_maps[i] += gm[i];
}

}  // namespace

template <typename T> void bone_texture_fwd_cpu_kernel(const TextureArgs<T>& args, T* features) {
  fwd_impl(args, features);
}
template <typename T>
void bone_texture_bwd_cpu_kernel(const TextureArgs<T>& args, const T* grad_features, T* grad_maps, T* grad_weights) {
  bwd_impl(args, grad_features, grad_maps, grad_weights);
}

template void bone_texture_fwd_cpu_kernel<float>(const TextureArgs<float>&, float*);
template void bone_texture_fwd_cpu_kernel<double>(const TextureArgs<double>&, double*);
template void bone_texture_bwd_cpu_kernel<float>(const TextureArgs<float>&, const float*, float*, float*);
template void bone_texture_bwd_cpu_kernel<double>(const TextureArgs<double>&, const double*, double*, double*);

}  // namespace mk
