// Host-side entry points of the CUDA kernels (raycast_cuda.cu).  Raw pointers only: neither torch
// nor CUDA headers are needed to include this, so the .cu compiles quickly and stand-alone
// (tests/test_kernels.py::test_cuda_sources_compile runs nvcc on it).
#pragma once

#include <stdint.h>

namespace mk {

// One 16x16 tile per block holds every primitive of the frame that can reach it in shared memory,
// and every pixel keeps its visible primitives in a local array of this size.
constexpr int kCudaMaxPrims = 128;
constexpr int kCudaMaxChannels = 256;
constexpr int kCudaThreads = 256;  // kTile * kTile

template <typename T> struct RaycastArgs {
  const T* means;       // [B,N,3]
  const T* precisions;  // [B,N,3,3]
  const T* densities;   // [B,N]
  const T* features;    // [B,N,C]
  const T* background;  // [B,C]
  const T* K;           // [B,3,3]
  const T* R;           // [B,3,3]
  const T* t;           // [B,3]
  const int64_t* groups;  // [N] group of each primitive, or null when G == 0
  int B, N, C, H, W, mode, G;
};

// Both return a cudaError_t value (0 on success); stream is a cudaStream_t.  No host
// synchronisation and no allocation, so they can be captured in CUDA graphs.
// weights [B,G,H,W] must be zeroed by the caller.
template <typename T>
int raycast_fwd_cuda(const RaycastArgs<T>& args, T* latent, T* alpha, T* depth, T* weights, void* stream);

// Accumulates into geo [B,N,11], grad_features [B,N,C], grad_background [B,C] (zeroed by the caller).
template <typename T>
int raycast_bwd_cuda(const RaycastArgs<T>& args, const T* grad_latent, const T* grad_alpha, const T* grad_depth,
                     const T* grad_weights, T* geo, T* grad_features, T* grad_background, void* stream);

const char* cuda_error_string(int code);

}  // namespace mk
