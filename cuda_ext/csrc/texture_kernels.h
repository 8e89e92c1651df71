// Raw-pointer arguments of the bone-texture op and the host entry points of its CUDA kernels
// (texture_cuda.cu).  No torch or CUDA headers, so the .cu compiles quickly and stand-alone.
#pragma once

#include <stdint.h>

namespace mk {

constexpr int kTextureMaxChannels = 64;  // ActorConfig allows 0-64 texture channels

template <typename T> struct TextureArgs {
  const T* maps;     // [N,A,S,C]: channels last, so a texel's features are contiguous
  const T* weights;  // [B,N,H,W]: the renderer's compositing weight of each bone at each pixel
  const T* depth;    // [B,1,H,W]: the renderer's depth (metres along each pixel's unit ray)
  const T* K;        // [B,3,3], R [B,3,3], t [B,3]: the cameras (OpenCV, integer pixel centres)
  const T* R;
  const T* t;
  const T* frames;   // [B,N,3,3]: bone frames, columns along, side, front
  const T* mid;      // [B,N,3]
  const T* length;   // [B,N]
  T min_weight;      // pairs with weight <= this are left out
  T extent;          // the map spans +-extent bone lengths from the midpoint
  int B, N, C, A, S, H, W;
};

// Both return a cudaError_t value (0 on success); stream is a cudaStream_t.
// features [B,C,H,W] is written whole; grad_maps [N,A,S,C] is accumulated into (zeroed by the
// caller) and grad_weights [B,N,H,W] written whole.
template <typename T> int bone_texture_fwd_cuda(const TextureArgs<T>& args, T* features, void* stream);
template <typename T>
int bone_texture_bwd_cuda(const TextureArgs<T>& args, const T* grad_features, T* grad_maps, T* grad_weights,
                          void* stream);

}  // namespace mk
