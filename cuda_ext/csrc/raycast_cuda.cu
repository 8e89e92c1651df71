// CUDA kernels of the raycast op.  One block per 16x16 pixel tile and batch element, one thread
// per pixel.  The block first culls the frame's primitives against the tile's cone of rays (the
// screen-space bounds of each primitive's cull sphere, see mk::setup_prim) and keeps the survivors
// in shared memory; each thread then composites its pixel front-to-back from a depth-sorted local
// list, stopping once T < t_stop.  Backward recomputes the pixel, walks back-to-front, and reduces
// each primitive's gradient over the block (warp shuffles, then across warps in shared memory)
// before one global atomicAdd per value and block.
#include <cuda_runtime.h>

#include "raycast_cuda.h"
#include "raycast_math.h"

namespace mk {
namespace {

constexpr int kWarps = kCudaThreads / 32;
static_assert(kCudaThreads == kTile * kTile, "one thread per pixel of a tile");
static_assert(kCudaMaxPrims <= kCudaThreads, "tile culling gives each thread one primitive");
static_assert(kCudaMaxPrims <= 255, "slot map stores uint8 positions");

template <typename T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}

// Fills s_list with the primitives that may reach this block's tile, in ascending index order
// (ballot + per-warp prefix, so the order is deterministic).  Contains __syncthreads.
template <typename T>
__device__ int build_tile_list(const RaycastArgs<T>& a, const Cam<T>& cam, int b, T eps, PrimGeom<T>* s_list,
                               int* s_warp, int tid) {
  const int x0 = blockIdx.x * kTile, y0 = blockIdx.y * kTile;
  const int x1 = min(x0 + kTile, a.W), y1 = min(y0 + kTile, a.H);
  T d0[3], beta;
  tile_cone(cam, x0, y0, x1, y1, d0, beta);
  const int lane = tid & 31, warp = tid >> 5;
  PrimGeom<T> g;
  PrimCull<T> cull;
  bool hit = false;
  if (tid < a.N) {
    const int bn = b * a.N + tid;
    setup_prim(a.means + 3 * bn, a.precisions + 9 * bn, a.densities[bn], cam, eps, tid, g, cull);
    hit = cone_hits(cull, d0, beta);
  }
  const unsigned mask = __ballot_sync(0xffffffffu, hit);
  if (lane == 0) s_warp[warp] = __popc(mask);
  __syncthreads();
  int offset = 0, total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    offset += w < warp ? s_warp[w] : 0;
    total += s_warp[w];
  }
  if (hit) s_list[offset + __popc(mask & ((1u << lane) - 1u))] = g;
  __syncthreads();
  return total;
}

template <typename T>
__global__ void __launch_bounds__(kCudaThreads)
    raycast_fwd_kernel(RaycastArgs<T> a, T* __restrict__ latent, T* __restrict__ alpha, T* __restrict__ depth,
                       T* __restrict__ weights) {
  __shared__ PrimGeom<T> s_list[kCudaMaxPrims];
  __shared__ int s_warp[kWarps];
  const int b = blockIdx.z;
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int px = blockIdx.x * kTile + threadIdx.x, py = blockIdx.y * kTile + threadIdx.y;
  const bool inside = px < a.W && py < a.H;
  Cam<T> cam;
  load_cam(a.K + 9 * b, a.R + 9 * b, a.t + 3 * b, cam);
  const T eps = Limits<T>::cull(a.mode);
  const int n_list = build_tile_list(a, cam, b, eps, s_list, s_warp, tid);
  if (!inside) return;  // no barrier below

  T d[3];
  pixel_dir(cam, T(px), T(py), d);
  Vis<T> vis[kCudaMaxPrims];
  const int n = collect(s_list, n_list, d, a.mode, eps, vis);
  PixelSums<T> ps;
  pixel_weights(vis, n, a.mode, ps);

  const int64_t HW = int64_t(a.H) * a.W, p = int64_t(py) * a.W + px;
  const T* feat_b = a.features + int64_t(b) * a.N * a.C;
  const T* bg_b = a.background + int64_t(b) * a.C;
  T* lat = latent + int64_t(b) * a.C * HW + p;
  for (int c = 0; c < a.C; ++c) {
    T acc = T(0);
    for (int i = 0; i < ps.used; ++i) acc += vis[i].w * __ldg(feat_b + int64_t(s_list[vis[i].k].index) * a.C + c);
    lat[c * HW] = acc * ps.inv_z + ps.bg_w * __ldg(bg_b + c);
  }
  // the pixel is this thread's alone: plain adds (a primitive's group weight = its one-hot latent)
  for (int i = 0; i < (a.G > 0 ? ps.used : 0); ++i)
    weights[(int64_t(b) * a.G + __ldg(a.groups + s_list[vis[i].k].index)) * HW + p] += vis[i].w * ps.inv_z;
  alpha[int64_t(b) * HW + p] = ps.alpha;
  depth[int64_t(b) * HW + p] = ps.depth;
}

// Keeps a pixel's per-primitive gradients in its own Vis entries (a, b, tau, cum are no longer
// needed once pixel_backward has passed them).
template <typename T> struct StoreGrad {
  Vis<T>* vis;
  __device__ void operator()(int i, const PrimGrad<T>& g) const {
    vis[i].a = g.ga;
    vis[i].b = g.gb;
    vis[i].tau = g.gc;
    vis[i].cum = g.grho;
  }
};

template <typename T>
__global__ void __launch_bounds__(kCudaThreads)
    raycast_bwd_kernel(RaycastArgs<T> a, const T* __restrict__ grad_latent, const T* __restrict__ grad_alpha,
                       const T* __restrict__ grad_depth, const T* __restrict__ grad_weights, T* __restrict__ geo,
                       T* __restrict__ grad_features,
                       T* __restrict__ grad_background) {
  __shared__ PrimGeom<T> s_list[kCudaMaxPrims];
  __shared__ int s_warp[kWarps];
  extern __shared__ __align__(16) unsigned char s_dyn[];
  T* red = reinterpret_cast<T*>(s_dyn);  // [kWarps][kGeoAcc + C] partial sums of one primitive
  const int stride = kGeoAcc + a.C;

  const int b = blockIdx.z;
  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int px = blockIdx.x * kTile + threadIdx.x, py = blockIdx.y * kTile + threadIdx.y;
  const bool inside = px < a.W && py < a.H;
  Cam<T> cam;
  load_cam(a.K + 9 * b, a.R + 9 * b, a.t + 3 * b, cam);
  const T eps = Limits<T>::cull(a.mode);
  const int n_list = build_tile_list(a, cam, b, eps, s_list, s_warp, tid);

  const int64_t HW = int64_t(a.H) * a.W;
  const int64_t p = inside ? int64_t(py) * a.W + px : 0;
  const T* feat_b = a.features + int64_t(b) * a.N * a.C;
  const T* bg_b = a.background + int64_t(b) * a.C;
  const T* gl = grad_latent + int64_t(b) * a.C * HW + p;

  T d[3];
  pixel_dir(cam, T(px), T(py), d);
  Vis<T> vis[kCudaMaxPrims];
  unsigned char slot[kCudaMaxPrims];
  for (int j = 0; j < n_list; ++j) slot[j] = 0xff;
  T fscale = T(0), bgscale = T(0);
  if (inside) {
    const int n = collect(s_list, n_list, d, a.mode, eps, vis);
    PixelSums<T> ps;
    pixel_weights(vis, n, a.mode, ps);
    T gbg_dot = T(0);
    for (int i = 0; i < ps.used; ++i) vis[i].q = T(0);
    for (int c = 0; c < a.C; ++c) {
      const T g = gl[c * HW];
      gbg_dot += g * __ldg(bg_b + c);
      for (int i = 0; i < ps.used; ++i) vis[i].q += g * __ldg(feat_b + int64_t(s_list[vis[i].k].index) * a.C + c);
    }
    for (int i = 0; i < (a.G > 0 ? ps.used : 0); ++i)
      vis[i].q += grad_weights[(int64_t(b) * a.G + __ldg(a.groups + s_list[vis[i].k].index)) * HW + p];
    StoreGrad<T> sink{vis};
    pixel_backward(s_list, vis, ps, a.mode, grad_alpha[int64_t(b) * HW + p], grad_depth[int64_t(b) * HW + p],
                   gbg_dot, fscale, bgscale, sink);
    for (int i = 0; i < ps.used; ++i) slot[vis[i].k] = (unsigned char)i;
  }

  // Per primitive of the tile: warp shuffle sums, then across warps, then one atomic per value.
  for (int j = 0; j < n_list; ++j) {
    const int i = slot[j];
    const bool mine = i != 0xff;
    if (!__syncthreads_or(mine)) continue;  // uniform: nobody in the block sees primitive j
    T terms[kGeoAcc];
    if (mine) {
      PrimGrad<T> pg;
      pg.ga = vis[i].a;
      pg.gb = vis[i].b;
      pg.gc = vis[i].tau;
      pg.grho = vis[i].cum;
      geo_terms(pg, d, terms);
    } else {
#pragma unroll
      for (int v = 0; v < kGeoAcc; ++v) terms[v] = T(0);
    }
#pragma unroll
    for (int v = 0; v < kGeoAcc; ++v) {
      const T x = warp_sum(terms[v]);
      if (lane == 0) red[warp * stride + v] = x;
    }
    const T coef = mine ? vis[i].w * fscale : T(0);
    for (int c = 0; c < a.C; ++c) {
      const T x = warp_sum(mine ? coef * gl[c * HW] : T(0));
      if (lane == 0) red[warp * stride + kGeoAcc + c] = x;
    }
    __syncthreads();
    const int64_t prim = int64_t(b) * a.N + s_list[j].index;
    for (int v = tid; v < stride; v += kCudaThreads) {
      T s = T(0);
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += red[w * stride + v];
      if (v < kGeoAcc) atomicAdd(geo + prim * kGeoAcc + v, s);
      else atomicAdd(grad_features + prim * a.C + (v - kGeoAcc), s);
    }
    __syncthreads();  // red is reused by the next primitive
  }

  // Background gradient, same reduction.
  for (int c = 0; c < a.C; ++c) {
    const T x = warp_sum(inside ? bgscale * gl[c * HW] : T(0));
    if (lane == 0) red[warp * stride + c] = x;
  }
  __syncthreads();
  for (int c = tid; c < a.C; c += kCudaThreads) {
    T s = T(0);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += red[w * stride + c];
    atomicAdd(grad_background + int64_t(b) * a.C + c, s);
  }
}

inline dim3 grid_of(int B, int H, int W) { return dim3((W + kTile - 1) / kTile, (H + kTile - 1) / kTile, B); }

}  // namespace

template <typename T>
int raycast_fwd_cuda(const RaycastArgs<T>& args, T* latent, T* alpha, T* depth, T* weights, void* stream) {
  if (args.B == 0 || args.H == 0 || args.W == 0) return 0;
  if (args.N > kCudaMaxPrims || args.C > kCudaMaxChannels) return int(cudaErrorInvalidValue);
  raycast_fwd_kernel<T><<<grid_of(args.B, args.H, args.W), dim3(kTile, kTile), 0, (cudaStream_t)stream>>>(
      args, latent, alpha, depth, weights);
  return int(cudaGetLastError());
}

template <typename T>
int raycast_bwd_cuda(const RaycastArgs<T>& args, const T* grad_latent, const T* grad_alpha, const T* grad_depth,
                     const T* grad_weights, T* geo, T* grad_features, T* grad_background, void* stream) {
  if (args.B == 0 || args.H == 0 || args.W == 0) return 0;
  if (args.N > kCudaMaxPrims || args.C > kCudaMaxChannels) return int(cudaErrorInvalidValue);
  const size_t shmem = size_t(kWarps) * size_t(kGeoAcc + args.C) * sizeof(T);
  raycast_bwd_kernel<T><<<grid_of(args.B, args.H, args.W), dim3(kTile, kTile), shmem, (cudaStream_t)stream>>>(
      args, grad_latent, grad_alpha, grad_depth, grad_weights, geo, grad_features, grad_background);
  return int(cudaGetLastError());
}

const char* cuda_error_string(int code) { return cudaGetErrorString(cudaError_t(code)); }

template int raycast_fwd_cuda<float>(const RaycastArgs<float>&, float*, float*, float*, float*, void*);
template int raycast_fwd_cuda<double>(const RaycastArgs<double>&, double*, double*, double*, double*, void*);
template int raycast_bwd_cuda<float>(const RaycastArgs<float>&, const float*, const float*, const float*,
                                     const float*, float*, float*, float*, void*);
template int raycast_bwd_cuda<double>(const RaycastArgs<double>&, const double*, const double*, const double*,
                                      const double*, double*, double*, double*, void*);

}  // namespace mk
