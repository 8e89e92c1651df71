// CPU kernels of the raycast op.  Work is split into 16x16 pixel tiles handed out dynamically to
// at::parallel_for's threads (tiles over a body cost far more than empty ones).  Per tile the
// primitives are culled against the tile's cone of rays; per pixel the visible primitives live in
// a small per-thread buffer (insertion-sorted by depth), so nothing of size [pixels, N] is ever
// materialised.  Backward recomputes the pixel's forward and walks back-to-front; gradients go to
// per-thread buffers that are summed at the end (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "raycast_math.h"
#include "raycast_ops.h"

namespace mk {
namespace {

struct Dims {
  int64_t B, N, C, H, W;
  int64_t G;  // bone groups whose summed weights are output per pixel (0: none)
};

template <typename T> struct Scene {
  std::vector<Cam<T>> cams;       // [B]
  std::vector<PrimGeom<T>> geo;   // [B*N]
  std::vector<PrimCull<T>> cull;  // [B*N]
};

template <typename T>
Scene<T> make_scene(const T* means, const T* prec, const T* dens, const T* K, const T* R, const T* t, const Dims& dm,
                    T eps) {
  Scene<T> sc;
  sc.cams.resize(dm.B);
  sc.geo.resize(dm.B * dm.N);
  sc.cull.resize(dm.B * dm.N);
  for (int64_t b = 0; b < dm.B; ++b) {
    load_cam(K + 9 * b, R + 9 * b, t + 3 * b, sc.cams[b]);
    for (int64_t n = 0; n < dm.N; ++n) {
      const int64_t bn = b * dm.N + n;
      setup_prim(means + 3 * bn, prec + 9 * bn, dens[bn], sc.cams[b], eps, int32_t(n), sc.geo[bn], sc.cull[bn]);
    }
  }
  return sc;
}

struct TileGrid {
  int64_t tiles_x, tiles_y, count;
  TileGrid(const Dims& dm)
      : tiles_x((dm.W + kTile - 1) / kTile), tiles_y((dm.H + kTile - 1) / kTile), count(dm.B * tiles_x * tiles_y) {}
};

struct TileBox {
  int64_t b;
  int x0, y0, x1, y1;
};

inline TileBox tile_box(const TileGrid& g, const Dims& dm, int64_t item) {
  TileBox tb;
  tb.b = item / (g.tiles_x * g.tiles_y);
  const int64_t r = item % (g.tiles_x * g.tiles_y);
  tb.y0 = int((r / g.tiles_x) * kTile);
  tb.x0 = int((r % g.tiles_x) * kTile);
  tb.x1 = int(std::min<int64_t>(tb.x0 + kTile, dm.W));
  tb.y1 = int(std::min<int64_t>(tb.y0 + kTile, dm.H));
  return tb;
}

// Primitives whose cull cone meets the tile's cone of rays, in ascending index order.
template <typename T>
int tile_list(const Scene<T>& sc, const Dims& dm, const TileBox& tb, PrimGeom<T>* list) {
  T d0[3], beta;
  tile_cone(sc.cams[tb.b], tb.x0, tb.y0, tb.x1, tb.y1, d0, beta);
  int n = 0;
  for (int64_t k = 0; k < dm.N; ++k) {
    const int64_t bk = tb.b * dm.N + k;
    if (cone_hits(sc.cull[bk], d0, beta)) list[n++] = sc.geo[bk];
  }
  return n;
}

// Runs body(slot, item) over all tiles with dynamic hand-out; slot is unique per concurrently running
// worker and < slots (the size of the per-thread buffers).
template <typename Body> void run_tiles(int64_t count, int64_t slots, const Body& body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, slots, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t slot = s0; slot < s1; ++slot)
      for (int64_t item = next.fetch_add(1); item < count; item = next.fetch_add(1)) body(slot, item);
  });
}

template <typename T>
void fwd_impl(const T* means, const T* prec, const T* dens, const T* feat, const T* bg, const int64_t* groups,
              const T* K, const T* R, const T* t, const Dims& dm, int mode, T* latent, T* alpha, T* depth,
              T* weights /*[B,G,H,W], zeroed*/) {
  const T eps = Limits<T>::cull(mode);
  const Scene<T> sc = make_scene(means, prec, dens, K, R, t, dm, eps);
  const TileGrid grid(dm);
  const int64_t HW = dm.H * dm.W, C = dm.C;
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), grid.count));
  std::vector<std::vector<PrimGeom<T>>> lists(slots, std::vector<PrimGeom<T>>(dm.N));
  std::vector<std::vector<Vis<T>>> viss(slots, std::vector<Vis<T>>(dm.N));
  std::vector<std::vector<T>> accs(slots, std::vector<T>(C));

  run_tiles(grid.count, slots, [&](int64_t slot, int64_t item) {
    PrimGeom<T>* list = lists[slot].data();
    Vis<T>* vis = viss[slot].data();
    T* acc = accs[slot].data();
    const TileBox tb = tile_box(grid, dm, item);
    const Cam<T>& cam = sc.cams[tb.b];
    const int n_list = tile_list(sc, dm, tb, list);
    const T* bgb = bg + tb.b * C;
    const T* featb = feat + tb.b * dm.N * C;
    T* lat_b = latent + tb.b * C * HW;
    for (int py = tb.y0; py < tb.y1; ++py)
      for (int px = tb.x0; px < tb.x1; ++px) {
        T d[3];
        pixel_dir(cam, T(px), T(py), d);
        const int n = collect(list, n_list, d, mode, eps, vis);
        PixelSums<T> ps;
        pixel_weights(vis, n, mode, ps);
        std::fill(acc, acc + C, T(0));
        for (int i = 0; i < ps.used; ++i) {
          const T w = vis[i].w;
          const T* f = featb + int64_t(list[vis[i].k].index) * C;
          for (int64_t c = 0; c < C; ++c) acc[c] += w * f[c];  // vectorised over channels
        }
        const int64_t p = int64_t(py) * dm.W + px;
        for (int64_t c = 0; c < C; ++c) lat_b[c * HW + p] = acc[c] * ps.inv_z + ps.bg_w * bgb[c];
        // a group's weight is the latent of a one-hot feature with zero background: one add per entry
        // instead of G mostly-zero channels
        if (dm.G > 0)
          for (int i = 0; i < ps.used; ++i)
            weights[(tb.b * dm.G + groups[list[vis[i].k].index]) * HW + p] += vis[i].w * ps.inv_z;
        alpha[tb.b * HW + p] = ps.alpha;
        depth[tb.b * HW + p] = ps.depth;
      }
  });
}

template <typename T>
void bwd_impl(const T* gl_all, const T* ga_all, const T* gd_all, const T* gw_all, const T* means, const T* prec,
              const T* dens, const T* feat, const T* bg, const int64_t* groups, const T* K, const T* R, const T* t,
              const Dims& dm, int mode,
              double* geo_acc /*[slots,B,N,11]*/, double* gfeat_acc /*[slots,B,N,C]*/,
              double* gbg_acc /*[slots,B,C]*/, int64_t slots) {
  const T eps = Limits<T>::cull(mode);
  const Scene<T> sc = make_scene(means, prec, dens, K, R, t, dm, eps);
  const TileGrid grid(dm);
  const int64_t HW = dm.H * dm.W, C = dm.C, N = dm.N, B = dm.B;
  std::vector<std::vector<PrimGeom<T>>> lists(slots, std::vector<PrimGeom<T>>(N));
  std::vector<std::vector<Vis<T>>> viss(slots, std::vector<Vis<T>>(N));
  std::vector<std::vector<T>> gls(slots, std::vector<T>(C));

  run_tiles(grid.count, slots, [&](int64_t slot, int64_t item) {
    PrimGeom<T>* list = lists[slot].data();
    Vis<T>* vis = viss[slot].data();
    T* gl = gls[slot].data();
    const TileBox tb = tile_box(grid, dm, item);
    const Cam<T>& cam = sc.cams[tb.b];
    const int n_list = tile_list(sc, dm, tb, list);
    const T* bgb = bg + tb.b * C;
    const T* featb = feat + tb.b * N * C;
    double* geo_b = geo_acc + (slot * B + tb.b) * N * kGeoAcc;
    double* gfeat_b = gfeat_acc + (slot * B + tb.b) * N * C;
    double* gbg_b = gbg_acc + (slot * B + tb.b) * C;
    for (int py = tb.y0; py < tb.y1; ++py)
      for (int px = tb.x0; px < tb.x1; ++px) {
        const int64_t p = int64_t(py) * dm.W + px;
        T d[3];
        pixel_dir(cam, T(px), T(py), d);
        for (int64_t c = 0; c < C; ++c) gl[c] = gl_all[(tb.b * C + c) * HW + p];
        T gbg_dot = T(0);
        for (int64_t c = 0; c < C; ++c) gbg_dot += gl[c] * bgb[c];
        const int n = collect(list, n_list, d, mode, eps, vis);
        PixelSums<T> ps;
        pixel_weights(vis, n, mode, ps);
        for (int i = 0; i < ps.used; ++i) {
          const T* f = featb + int64_t(list[vis[i].k].index) * C;
          T q = T(0);
          for (int64_t c = 0; c < C; ++c) q += gl[c] * f[c];
          if (dm.G > 0) q += gw_all[(tb.b * dm.G + groups[list[vis[i].k].index]) * HW + p];
          vis[i].q = q;
        }
        T fscale, bgscale;
        auto sink = [&](int i, const PrimGrad<T>& pg) {
          double terms[kGeoAcc];
          geo_terms(pg, d, terms);
          double* dst = geo_b + int64_t(list[vis[i].k].index) * kGeoAcc;
          for (int j = 0; j < kGeoAcc; ++j) dst[j] += terms[j];
        };
        pixel_backward(list, vis, ps, mode, ga_all[tb.b * HW + p], gd_all[tb.b * HW + p], gbg_dot, fscale, bgscale,
                       sink);
        for (int i = 0; i < ps.used; ++i) {
          const double coef = double(vis[i].w) * double(fscale);
          double* dst = gfeat_b + int64_t(list[vis[i].k].index) * C;
          for (int64_t c = 0; c < C; ++c) dst[c] += coef * double(gl[c]);
        }
        for (int64_t c = 0; c < C; ++c) gbg_b[c] += double(bgscale) * double(gl[c]);
      }
  });
}

Dims dims_of(const at::Tensor& means, const at::Tensor& features, int64_t height, int64_t width,
             int64_t num_groups) {
  return Dims{means.size(0), means.size(1), features.size(2), height, width, num_groups};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> raycast_fwd_cpu_kernel(
    const at::Tensor& means, const at::Tensor& precisions, const at::Tensor& densities, const at::Tensor& features,
    const at::Tensor& background, const at::Tensor& K, const at::Tensor& R, const at::Tensor& t, int64_t height,
    int64_t width, int64_t mode, const at::Tensor& groups, int64_t num_groups) {
  const Dims dm = dims_of(means, features, height, width, num_groups);
  auto opts = means.options();
  at::Tensor latent = at::empty({dm.B, dm.C, height, width}, opts);
  at::Tensor alpha = at::empty({dm.B, 1, height, width}, opts);
  at::Tensor depth = at::empty({dm.B, 1, height, width}, opts);
  at::Tensor weights = at::zeros({dm.B, dm.G, height, width}, opts);
  at::Tensor mc = means.contiguous(), pc = precisions.contiguous(), dc = densities.contiguous(),
             fc = features.contiguous(), bc = background.contiguous(), Kc = K.contiguous(), Rc = R.contiguous(),
             tc = t.contiguous(), gc = groups.contiguous();
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "raycast_fwd_cpu", [&] {
    fwd_impl<scalar_t>(mc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(),
                       fc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(), gc.data_ptr<int64_t>(),
                       Kc.data_ptr<scalar_t>(), Rc.data_ptr<scalar_t>(), tc.data_ptr<scalar_t>(), dm, int(mode),
                       latent.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
                       weights.data_ptr<scalar_t>());
  });
  return {latent, alpha, depth, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> raycast_bwd_cpu_kernel(
    const at::Tensor& grad_latent, const at::Tensor& grad_alpha, const at::Tensor& grad_depth,
    const at::Tensor& grad_weights, const at::Tensor& means, const at::Tensor& precisions,
    const at::Tensor& densities, const at::Tensor& features, const at::Tensor& background, const at::Tensor& K,
    const at::Tensor& R, const at::Tensor& t, int64_t height, int64_t width, int64_t mode, const at::Tensor& groups,
    int64_t num_groups) {
  const Dims dm = dims_of(means, features, height, width, num_groups);
  const TileGrid grid(dm);
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), grid.count));
  auto dopts = means.options().dtype(at::kDouble);
  at::Tensor geo = at::zeros({slots, dm.B, dm.N, kGeoAcc}, dopts);
  at::Tensor gfeat = at::zeros({slots, dm.B, dm.N, dm.C}, dopts);
  at::Tensor gbg = at::zeros({slots, dm.B, dm.C}, dopts);
  at::Tensor glc = grad_latent.contiguous(), gac = grad_alpha.contiguous(), gdc = grad_depth.contiguous(),
             gwc = grad_weights.contiguous();
  at::Tensor mc = means.contiguous(), pc = precisions.contiguous(), dc = densities.contiguous(),
             fc = features.contiguous(), bc = background.contiguous(), Kc = K.contiguous(), Rc = R.contiguous(),
             tc = t.contiguous(), gc = groups.contiguous();
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "raycast_bwd_cpu", [&] {
    bwd_impl<scalar_t>(glc.data_ptr<scalar_t>(), gac.data_ptr<scalar_t>(), gdc.data_ptr<scalar_t>(),
                       gwc.data_ptr<scalar_t>(), mc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(),
                       dc.data_ptr<scalar_t>(), fc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(),
                       gc.data_ptr<int64_t>(), Kc.data_ptr<scalar_t>(), Rc.data_ptr<scalar_t>(),
                       tc.data_ptr<scalar_t>(), dm, int(mode), geo.data_ptr<double>(), gfeat.data_ptr<double>(),
                       gbg.data_ptr<double>(), slots);
  });
  // Per-thread buffers reduced once here.
  return {geo.sum(0), gfeat.sum(0), gbg.sum(0)};
}

}  // namespace mk
