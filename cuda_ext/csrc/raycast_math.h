// Per-pixel math of the Marionette raycast op, shared by the CPU (raycast_cpu.cpp) and CUDA
// (raycast_cuda.cu) kernels.  Plain C++ templates on raw values: no torch, no CUDA headers,
// so the .cu translation unit compiles quickly and the CPU tests exercise the exact code the
// GPU runs per pixel.  The contract is /work/notes/renderer_spec.md.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define MK_HD __host__ __device__ __forceinline__
#else
#define MK_HD inline
#endif

namespace mk {

enum Mode : int { kTransmittance = 0, kRochette = 1 };

constexpr double kRochetteBackgroundWeight = 1e-3;
constexpr double kDepthEps = 1e-6;
constexpr double kPi = 3.14159265358979323846;
constexpr int kTile = 16;            // pixels per tile side (CPU and CUDA)
constexpr float kNeverTheta = 100.f; // cone half-angle marking "never visible"

// Overloads so templates read like the math (expf/erfcf/... are host and device functions).
MK_HD float mk_exp(float x) { return expf(x); }
MK_HD double mk_exp(double x) { return exp(x); }
MK_HD float mk_expm1(float x) { return expm1f(x); }
MK_HD double mk_expm1(double x) { return expm1(x); }
MK_HD float mk_erfc(float x) { return erfcf(x); }
MK_HD double mk_erfc(double x) { return erfc(x); }
MK_HD float mk_sqrt(float x) { return sqrtf(x); }
MK_HD double mk_sqrt(double x) { return sqrt(x); }
MK_HD float mk_log(float x) { return logf(x); }
MK_HD double mk_log(double x) { return log(x); }
MK_HD float mk_acos(float x) { return acosf(x); }
MK_HD double mk_acos(double x) { return acos(x); }
MK_HD float mk_asin(float x) { return asinf(x); }
MK_HD double mk_asin(double x) { return asin(x); }
MK_HD float mk_cos(float x) { return cosf(x); }
MK_HD double mk_cos(double x) { return cos(x); }
MK_HD float mk_abs(float x) { return fabsf(x); }
MK_HD double mk_abs(double x) { return fabs(x); }
template <typename T> MK_HD T mk_min(T a, T b) { return a < b ? a : b; }
template <typename T> MK_HD T mk_max(T a, T b) { return a > b ? a : b; }

// Skipping thresholds.  A primitive is left out of a pixel when max(|rho|,1) * (tau/rho) is below
// cull(): its optical depth and its density gradient are then below that bound.  The bound is far
// below the spec's 1e-5 because depth = sum(w s)/(alpha + 1e-6) divides faint contributions by
// 1e-6 in nearly empty pixels (and Rochette mode normalises against a background weight of 1e-3).
// Transmittance compositing stops when T < t_stop (the spec's 1e-5 in float32; float64 uses
// tighter values so that finite-difference gradchecks never straddle a threshold).
template <typename T> struct Limits;
template <> struct Limits<float> {
  MK_HD static float cull(int) { return 1e-10f; }
  MK_HD static float t_stop() { return 1e-5f; }
  MK_HD static float eig_slack() { return 1e-5f; }
};
template <> struct Limits<double> {
  MK_HD static double cull(int) { return 1e-16; }
  MK_HD static double t_stop() { return 1e-10; }
  MK_HD static double eig_slack() { return 1e-12; }
};

// Camera of one batch element: K entries used by the spec, R row-major, centre o = -R^T t.
template <typename T> struct Cam {
  T fx, fy, cx, cy, skew;
  T r[9];
  T ox, oy, oz;
};

template <typename T> MK_HD void load_cam(const T* K, const T* R, const T* t, Cam<T>& cam) {
  cam.fx = K[0]; cam.skew = K[1]; cam.cx = K[2]; cam.fy = K[4]; cam.cy = K[5];
  for (int i = 0; i < 9; ++i) cam.r[i] = R[i];
  cam.ox = -(R[0] * t[0] + R[3] * t[1] + R[6] * t[2]);
  cam.oy = -(R[1] * t[0] + R[4] * t[1] + R[7] * t[2]);
  cam.oz = -(R[2] * t[0] + R[5] * t[1] + R[8] * t[2]);
}

// Unit world direction of the ray through image point (px, py) (integer pixel centres).
template <typename T> MK_HD void pixel_dir(const Cam<T>& cam, T px, T py, T d[3]) {
  const T y = (py - cam.cy) / cam.fy;
  const T x = (px - cam.cx - cam.skew * y) / cam.fx;
  const T n = mk_sqrt(x * x + y * y + T(1));
  const T c0 = x / n, c1 = y / n, c2 = T(1) / n;
  d[0] = cam.r[0] * c0 + cam.r[3] * c1 + cam.r[6] * c2;
  d[1] = cam.r[1] * c0 + cam.r[4] * c1 + cam.r[7] * c2;
  d[2] = cam.r[2] * c0 + cam.r[5] * c1 + cam.r[8] * c2;
}

// What a pixel needs of primitive k: a = d^T P d only sees the symmetric part of P,
// b = d . (P m), c = m^T P m is the same for every ray of the camera.
template <typename T> struct PrimGeom {
  T p00, p01, p02, p11, p12, p22;
  T pm0, pm1, pm2;
  T c, rho, rho_hat;
  T h_cut;        // beyond this squared Mahalanobis distance the primitive is below the cull bound
  int32_t index;  // primitive index in [0, N)
};

// Screen-space culling data: the lines within distance r of the mean form a double cone around
// +-axis of half-angle theta (theta < 0: the camera is inside, always visible; theta >= kNeverTheta:
// the primitive can never reach the cull bound).
template <typename T> struct PrimCull {
  T ax, ay, az, theta;
};

// Smallest eigenvalue of a symmetric 3x3 matrix (trigonometric closed form), lowered by a slack
// proportional to the spectrum's scale so rounding can only make culling more conservative.
template <typename T> MK_HD T min_eig_sym(T a00, T a01, T a02, T a11, T a12, T a22) {
  const T p1 = a01 * a01 + a02 * a02 + a12 * a12;
  const T q = (a00 + a11 + a22) / T(3);
  const T b00 = a00 - q, b11 = a11 - q, b22 = a22 - q;
  const T p2 = b00 * b00 + b11 * b11 + b22 * b22 + T(2) * p1;
  const T p = mk_sqrt(p2 / T(6));
  T lam;
  if (!(p > T(0))) {
    lam = q;
  } else {
    const T i = T(1) / p;
    const T c00 = b00 * i, c11 = b11 * i, c22 = b22 * i, c01 = a01 * i, c02 = a02 * i, c12 = a12 * i;
    T r = (c00 * (c11 * c22 - c12 * c12) - c01 * (c01 * c22 - c12 * c02) + c02 * (c01 * c12 - c11 * c02)) / T(2);
    r = mk_max(T(-1), mk_min(T(1), r));
    const T phi = mk_acos(r) / T(3);
    lam = q + T(2) * p * mk_cos(phi + T(2.0 * kPi / 3.0));
  }
  return lam - Limits<T>::eig_slack() * (mk_abs(q) + T(2) * p);
}

// Per-primitive setup: mean (3), P (9, row-major), density; camera centre from cam.
template <typename T>
MK_HD void setup_prim(const T* mean, const T* P, T rho, const Cam<T>& cam, T eps, int32_t index, PrimGeom<T>& g,
                      PrimCull<T>& cull) {
  const T m0 = mean[0] - cam.ox, m1 = mean[1] - cam.oy, m2 = mean[2] - cam.oz;
  g.p00 = P[0]; g.p11 = P[4]; g.p22 = P[8];
  g.p01 = T(0.5) * (P[1] + P[3]);
  g.p02 = T(0.5) * (P[2] + P[6]);
  g.p12 = T(0.5) * (P[5] + P[7]);
  g.pm0 = P[0] * m0 + P[1] * m1 + P[2] * m2;
  g.pm1 = P[3] * m0 + P[4] * m1 + P[5] * m2;
  g.pm2 = P[6] * m0 + P[7] * m1 + P[8] * m2;
  g.c = m0 * g.pm0 + m1 * g.pm1 + m2 * g.pm2;
  g.rho = rho;
  g.rho_hat = mk_max(mk_abs(rho), T(1));
  g.index = index;
  g.h_cut = T(1e30);

  // Along any line: a >= lam and h >= lam * dist(mean, line)^2, so
  // tau/rho <= sqrt(2 pi/lam) exp(-lam dist^2/2); below eps/rho_hat beyond distance r.
  const T dist = mk_sqrt(m0 * m0 + m1 * m1 + m2 * m2);
  cull.ax = dist > T(0) ? m0 / dist : T(0);
  cull.ay = dist > T(0) ? m1 / dist : T(0);
  cull.az = dist > T(0) ? m2 / dist : T(1);
  const T lam = min_eig_sym(g.p00, g.p01, g.p02, g.p11, g.p12, g.p22);
  if (!(lam > T(0)) || !(lam < T(1e30))) {
    cull.theta = T(-1);  // not positive definite (or NaN): never culled, the reference decides
    return;
  }
  const T peak = g.rho_hat * mk_sqrt(T(2.0 * kPi) / lam);
  if (!(peak > eps)) {
    cull.theta = T(kNeverTheta);
    return;
  }
  // Per pixel, h > h_cut already bounds tau/rho by eps/rho_hat (a >= lam), without exp or erfc.
  g.h_cut = T(2) * mk_log(peak / eps) * T(1.0001);
  const T r = mk_sqrt(T(2) * mk_log(peak / eps) / lam) * T(1.01) + T(1e-6);
  cull.theta = dist <= r ? T(-1) : mk_asin(r / dist);
}

// Can any ray within angle beta of the unit direction d0 pass within the cull radius?
template <typename T> MK_HD bool cone_hits(const PrimCull<T>& cull, const T d0[3], T beta) {
  if (cull.theta < T(0)) return true;
  if (cull.theta >= T(kNeverTheta)) return false;
  const T lim = cull.theta + beta;
  if (lim >= T(0.5 * kPi)) return true;
  const T cosang = mk_abs(d0[0] * cull.ax + d0[1] * cull.ay + d0[2] * cull.az);
  return cosang >= mk_cos(lim);  // both the front and the back cone (lines, not half-lines)
}

// Centre direction and angular radius of the rays of the pixels [x0, x1) x [y0, y1).
// The rays within a given angle of d0 meet the image plane in a convex set, so the largest
// angle over the tile's pixel centres is attained at a corner.
template <typename T>
MK_HD void tile_cone(const Cam<T>& cam, int x0, int y0, int x1, int y1, T d0[3], T& beta) {
  pixel_dir(cam, T(0.5) * T(x0 + x1 - 1), T(0.5) * T(y0 + y1 - 1), d0);
  T mincos = T(1);
  const int xs[2] = {x0, x1 - 1}, ys[2] = {y0, y1 - 1};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      T d[3];
      pixel_dir(cam, T(xs[i]), T(ys[j]), d);
      mincos = mk_min(mincos, d0[0] * d[0] + d0[1] * d[1] + d0[2] * d[2]);
    }
  beta = mk_acos(mk_max(T(-1), mk_min(T(1), mincos))) * T(1.01) + T(2e-3);
}

// One visible primitive of a pixel.  During backward a, b, tau, cum are reused by the CUDA
// kernel to hold the gradient w.r.t. a, b, c and rho (see store functors).
template <typename T> struct Vis {
  T s, tau, a, b, w, cum, q;
  int32_t k;  // position in the tile's primitive list
};

// Evaluate primitive g on unit ray d.  Returns false when it is below the cull bound.
template <typename T> MK_HD bool eval_prim(const PrimGeom<T>& g, const T d[3], T eps, Vis<T>& v) {
  const T a = g.p00 * d[0] * d[0] + g.p11 * d[1] * d[1] + g.p22 * d[2] * d[2] +
              T(2) * (g.p01 * d[0] * d[1] + g.p02 * d[0] * d[2] + g.p12 * d[1] * d[2]);
  const T b = g.pm0 * d[0] + g.pm1 * d[1] + g.pm2 * d[2];
  const T s = b / a;
  T h = g.c - b * s;
  if (h > g.h_cut) return false;
  h = h > T(0) ? h : T(0);
  const T ge = mk_sqrt(T(2.0 * kPi) / a) * mk_exp(T(-0.5) * h) * T(0.5) * mk_erfc(-s * mk_sqrt(T(0.5) * a));
  if (g.rho_hat * ge < eps) return false;  // NaN stays in, as in the reference
  v.a = a; v.b = b; v.s = s; v.tau = g.rho * ge;
  return true;
}

// Insert keeping ascending s; equal s keeps insertion order (callers insert by ascending index).
template <typename T> MK_HD void insert_sorted(Vis<T>* vis, int& n, const Vis<T>& e) {
  int i = n;
  while (i > 0 && vis[i - 1].s > e.s) {
    vis[i] = vis[i - 1];
    --i;
  }
  vis[i] = e;
  ++n;
}

// Gather the visible primitives of ray d (sorted by s in transmittance mode, by list order otherwise).
template <typename T>
MK_HD int collect(const PrimGeom<T>* list, int n_list, const T d[3], int mode, T eps, Vis<T>* vis) {
  int n = 0;
  for (int j = 0; j < n_list; ++j) {
    Vis<T> v;
    if (!eval_prim(list[j], d, eps, v)) continue;
    v.k = j;
    if (mode == kTransmittance) insert_sorted(vis, n, v); else vis[n++] = v;
  }
  return n;
}

// Weights w of the visible primitives and the pixel's scalars.
template <typename T> struct PixelSums {
  int used;    // entries composited (transmittance stops early)
  T t_final;   // transmittance left for the background (transmittance mode)
  T alpha;     // alpha output
  T depth;     // depth output
  T bg_w;      // weight of the background in the latent
  T inv_z;     // latent = (sum w f + bg_w' bg) * inv_z (1 in transmittance mode)
  T total;     // Rochette: sum of w
  T dsum;      // sum of w * s (s clamped at 0 in Rochette mode)
};

template <typename T> MK_HD void pixel_weights(Vis<T>* vis, int n, int mode, PixelSums<T>& ps) {
  if (mode == kTransmittance) {
    const T t_stop = Limits<T>::t_stop();
    T cum = T(0), dsum = T(0);
    int used = 0;
    for (; used < n; ++used) {
      const T tk = mk_exp(-cum);
      if (tk < t_stop) break;
      Vis<T>& v = vis[used];
      v.w = tk * (-mk_expm1(-v.tau));  // T_k alpha_k
      cum += v.tau;
      v.cum = cum;
      dsum += v.w * v.s;
    }
    ps.used = used;
    ps.t_final = mk_exp(-cum);
    ps.alpha = -mk_expm1(-cum);
    ps.depth = dsum / (ps.alpha + T(kDepthEps));
    ps.bg_w = ps.t_final;
    ps.inv_z = T(1);
    ps.total = T(0);
    ps.dsum = dsum;
  } else {
    T total = T(0), dsum = T(0);
    for (int i = 0; i < n; ++i) {
      Vis<T>& v = vis[i];
      const T sp = v.s > T(0) ? v.s : T(0);
      const T sp2 = sp * sp;
      v.w = v.tau / (T(1) + sp2 * sp2);
      total += v.w;
      dsum += v.w * sp;
    }
    const T z = total + T(kRochetteBackgroundWeight);
    ps.used = n;
    ps.t_final = T(0);
    ps.inv_z = T(1) / z;
    ps.alpha = total / z;
    ps.depth = dsum / (total + T(kDepthEps));
    ps.bg_w = T(kRochetteBackgroundWeight) / z;  // already divided by z
    ps.total = total;
    ps.dsum = dsum;
  }
}

// d tau / d(a, b, c, rho) chained with the upstream gradients g_tau (of tau) and g_s (of s = b/a).
template <typename T> struct PrimGrad {
  T ga, gb, gc, grho;
};

template <typename T>
MK_HD PrimGrad<T> tau_backward(const PrimGeom<T>& g, const Vis<T>& v, T g_tau, T g_s) {
  const T a = v.a, b = v.b, s = v.s;
  const T hraw = g.c - b * s;
  const bool hpos = hraw >= T(0);  // clamp_min passes the gradient at 0, as torch does
  const T h = hpos ? hraw : T(0);
  const T sqa = mk_sqrt(T(0.5) * a);
  const T g0 = mk_sqrt(T(2.0 * kPi) / a) * mk_exp(T(-0.5) * h);
  const T z = -s * sqa;  // = -b / sqrt(2a)
  const T e = T(0.5) * mk_erfc(z);
  const T tau = g.rho * g0 * e;
  const T dedz = -mk_exp(-z * z) * T(0.56418958354775628695);  // 1/sqrt(pi)
  const T dz_da = -z / (T(2) * a);
  const T dz_db = T(-0.5) / sqa;
  const T dh_da = hpos ? s * s : T(0);
  const T dh_db = hpos ? T(-2) * s : T(0);
  const T dh_dc = hpos ? T(1) : T(0);
  const T rg0de = g.rho * g0 * dedz;
  const T dtau_da = tau * (T(-0.5) / a - T(0.5) * dh_da) + rg0de * dz_da;
  const T dtau_db = T(-0.5) * tau * dh_db + rg0de * dz_db;
  const T dtau_dc = T(-0.5) * tau * dh_dc;
  PrimGrad<T> out;
  out.ga = g_tau * dtau_da - g_s * s / a;
  out.gb = g_tau * dtau_db + g_s / a;
  out.gc = g_tau * dtau_dc;
  out.grho = g_tau * g0 * e;
  return out;
}

// Backward of one pixel.  Inputs: vis[0..ps.used) with q = sum_c gL_c f_kc, gbg_dot = sum_c gL_c bg_c,
// the upstream alpha and depth gradients.  Calls sink(entry, PrimGrad) for every composited entry and
// returns via fscale/bgscale the factors of the feature gradient (w * fscale * gL_c) and of the
// background gradient (bgscale * gL_c).
template <typename T, typename Sink>
MK_HD void pixel_backward(const PrimGeom<T>* list, Vis<T>* vis, const PixelSums<T>& ps, int mode, T g_alpha,
                          T g_depth, T gbg_dot, T& fscale, T& bgscale, Sink& sink) {
  if (mode == kTransmittance) {
    const T den = ps.alpha + T(kDepthEps);
    const T g_dsum = g_depth / den;
    const T g_alpha_tot = g_alpha - g_depth * ps.dsum / (den * den);
    const T g_t = gbg_dot - g_alpha_tot;  // d loss / d T_final
    T bk = g_t;                            // B_k of the back-to-front recursion (no division by 1-alpha)
    for (int i = ps.used - 1; i >= 0; --i) {
      Vis<T>& v = vis[i];
      const T qk = v.q + g_dsum * v.s;
      const T alpha_k = -mk_expm1(-v.tau);
      const T t_next = mk_exp(-v.cum);  // T_{k+1}
      const T g_tau = t_next * (qk - bk);
      bk = qk * alpha_k + (T(1) - alpha_k) * bk;
      sink(i, tau_backward(list[v.k], v, g_tau, g_dsum * v.w));
    }
    fscale = T(1);
    bgscale = ps.t_final;
  } else {
    const T inv_z = ps.inv_z;
    const T total = ps.total;
    T wq = T(0);
    for (int i = 0; i < ps.used; ++i) wq += vis[i].w * vis[i].q;
    // latent_c = (sum w f_c + wbg bg_c)/z  ->  sum_c gL_c latent_c = (sum w q + wbg gbg_dot)/z
    const T gl_dot_lat = (wq + T(kRochetteBackgroundWeight) * gbg_dot) * inv_z;
    const T g_z = -gl_dot_lat * inv_z - g_alpha * total * inv_z * inv_z;
    const T den = total + T(kDepthEps);
    const T g_dsum = g_depth / den;
    const T g_total = g_alpha * inv_z + g_z - g_depth * ps.dsum / (den * den);
    for (int i = 0; i < ps.used; ++i) {
      Vis<T>& v = vis[i];
      const T sp = v.s > T(0) ? v.s : T(0);
      const T sp2 = sp * sp;
      const T den4 = T(1) + sp2 * sp2;
      const T g_w = v.q * inv_z + g_total + g_dsum * sp;
      const T g_sp = g_dsum * v.w - g_w * v.tau * T(4) * sp2 * sp / (den4 * den4);
      const T g_s = v.s >= T(0) ? g_sp : T(0);
      sink(i, tau_backward(list[v.k], v, g_w / den4, g_s));
    }
    fscale = inv_z;
    bgscale = T(kRochetteBackgroundWeight) * inv_z;
  }
}

// Number of per-primitive gradient accumulators: a-term outer product (6: d0d0 d0d1 d0d2 d1d1 d1d2 d2d2),
// b-term (3: gb * d), c-term (1), density (1).  Turned into grad_means/grad_precisions by ops.cpp.
constexpr int kGeoAcc = 11;

template <typename T, typename A>
MK_HD void geo_terms(const PrimGrad<T>& pg, const T d[3], A out[kGeoAcc]) {
  out[0] = A(pg.ga * d[0] * d[0]);
  out[1] = A(pg.ga * d[0] * d[1]);
  out[2] = A(pg.ga * d[0] * d[2]);
  out[3] = A(pg.ga * d[1] * d[1]);
  out[4] = A(pg.ga * d[1] * d[2]);
  out[5] = A(pg.ga * d[2] * d[2]);
  out[6] = A(pg.gb * d[0]);
  out[7] = A(pg.gb * d[1]);
  out[8] = A(pg.gb * d[2]);
  out[9] = A(pg.gc);
  out[10] = A(pg.grho);
}

}  // namespace mk
