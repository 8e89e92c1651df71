// Per-pair math of the bone-texture op (marionette::bone_texture_fwd/bwd), shared by the CPU
// (texture_cpu.cpp) and CUDA (texture_cuda.cu) kernels.  The contract is the PyTorch lookup in
// engine/neural/render/texture.py (BoneTexture.forward_reference): a surface point's cylindrical
// coordinates round a bone -> the four texels of a bilinear read, rows clamped along the bone,
// columns wrapping round it (grid_sample, align_corners=False, border padding).
#pragma once

#include "raycast_math.h"
#include "texture_kernels.h"

namespace mk {

MK_HD float mk_atan2(float y, float x) { return atan2f(y, x); }
MK_HD double mk_atan2(double y, double x) { return atan2(y, x); }
MK_HD float mk_floor(float x) { return floorf(x); }
MK_HD double mk_floor(double x) { return floor(x); }

// The four texels (offsets of [along, around] cells in one bone's map) and their bilinear weights.
template <typename T> struct TexelTaps {
  int cell[4];  // (r0,c0), (r0,c1), (r1,c0), (r1,c1) as row * S + col
  T w[4];
};

// Bone frame F (row-major 3x3, columns: along, side, front), midpoint m, length L; a map of A rows
// (along the bone, spanning +-extent lengths from the midpoint) by S columns (round it).
// Returns false when the point gives no finite coordinate (the pair is then left out, as a zero).
// The point is the one the pixel sees: camera centre + depth * unit ray (pixel_dir, raycast_math.h).
template <typename T>
MK_HD bool texel_taps(T px, T py, T pz, const T* F, const T* m, T L, T extent, int A, int S, TexelTaps<T>& out) {
  const T r0 = px - m[0], r1 = py - m[1], r2 = pz - m[2];
  const T local_along = F[0] * r0 + F[3] * r1 + F[6] * r2;  // F^T (p - m)
  const T local_side = F[1] * r0 + F[4] * r1 + F[7] * r2;
  const T local_front = F[2] * r0 + F[5] * r1 + F[8] * r2;
  T along = local_along / (extent * L);
  along = along < T(-1) ? T(-1) : (along > T(1) ? T(1) : along);
  const T around = mk_atan2(local_front, local_side) / T(kPi);
  T row = ((along + T(1)) * T(A) - T(1)) / T(2);
  row = row < T(0) ? T(0) : (row > T(A - 1) ? T(A - 1) : row);
  const T col = ((around + T(1)) * T(S) - T(1)) / T(2);
  if (!(row == row) || !(col == col)) return false;  // NaN
  const T rf = mk_floor(row), cf = mk_floor(col);
  const T fr = row - rf, fc = col - cf;
  const int ra = int(rf), rb = ra + 1 < A ? ra + 1 : A - 1;
  const int ca = ((int(cf) % S) + S) % S, cb = (ca + 1) % S;
  out.cell[0] = ra * S + ca;
  out.cell[1] = ra * S + cb;
  out.cell[2] = rb * S + ca;
  out.cell[3] = rb * S + cb;
  out.w[0] = (T(1) - fr) * (T(1) - fc);
  out.w[1] = (T(1) - fr) * fc;
  out.w[2] = fr * (T(1) - fc);
  out.w[3] = fr * fc;
  return true;
}

// The surface point pixel (x, y) of camera cam sees at depth z.
template <typename T> MK_HD void surface_point(const Cam<T>& cam, T x, T y, T z, T p[3]) {
  T d[3];
  pixel_dir(cam, x, y, d);
  p[0] = cam.ox + z * d[0];
  p[1] = cam.oy + z * d[1];
  p[2] = cam.oz + z * d[2];
}

// The surface point pixel p (row-major index) of view b sees.
template <typename T> MK_HD void view_surface_point(const TextureArgs<T>& a, int64_t b, int64_t p, T pt[3]) {
  Cam<T> cam;
  load_cam(a.K + b * 9, a.R + b * 9, a.t + b * 3, cam);
  surface_point(cam, T(p % a.W), T(p / a.W), a.depth[b * int64_t(a.H) * a.W + p], pt);
}

// texel_taps of bone pair bn (= view * N + bone) at point pt.
template <typename T> MK_HD bool bone_taps(const TextureArgs<T>& a, int64_t bn, const T* pt, TexelTaps<T>& tap) {
  return texel_taps(pt[0], pt[1], pt[2], a.frames + bn * 9, a.mid + bn * 3, a.length[bn], a.extent, a.A, a.S, tap);
}

}  // namespace mk
