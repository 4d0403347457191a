// Direct convolution (conv_direct.hpp). Why not im2col + GEMM here: a CNN's 3x3 convs have few
// output channels (32-128), so the per-sample GEMMs are thin and Eigen runs them far below its
// peak, and the unfolded input is written and re-read nine times the input's size.
//
// Because the output plane has the input's width, both can be seen as 1-d arrays of H * W
// positions: output position p of tap t reads input position p + offset[t], and the reads that
// fall into the padding are just masked off. So a vector of 16 output positions (part of a row, a
// row, or several rows) reads its 16 inputs with one masked load, whatever the plane's width.
//
//   forward          acc[o][p] += w[o, c, t] * x[c, p + offset[t]]    (registers: 8 o x 48 p)
//   backward input   the same kernel on grad with the weight transposed and its taps reversed
//                    (a stride-1 'same' conv's adjoint is again one)
//   backward weight  acc[o .. o+16][c, t] += grad[p][o .. o+16] * xpad[c][p + t]: position-major
//                    gradient vectors times broadcast inputs (see the section below)
//
// GCC 12 warns about the deliberately undefined upper halves inside its own AVX-512 reduction
// intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "engine/cpu/conv_direct.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "engine/parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mg::cpu::direct {

#if defined(__AVX512F__)
namespace {

constexpr int64_t kLanes = 16;

// Register blocks are arrays of accumulators; GCC keeps them in registers only when the loops over
// them are unrolled before its scalar replacement runs, which its own heuristics do not do here
// (the kernels then store every accumulator on each step and run at a quarter of the speed).
#define MG_UNROLL _Pragma("GCC unroll 32")

struct Taps {
  int64_t kh = 0, kw = 0, taps = 0, vectors = 0, positions = 0;
  std::vector<int64_t> offset;    // [taps]
  std::vector<__mmask16> mask;    // [vectors][taps]: lanes whose read lies inside the input
  __mmask16 tail = 0xFFFF;        // lanes of the last vector that are output positions
  __mmask16 lanes(int64_t v) const { return v == vectors - 1 ? tail : __mmask16(0xFFFF); }
};

Taps make_taps(int64_t H, int64_t W, const Window2d& win) {
  Taps tp;
  tp.kh = win.kernel_h;
  tp.kw = win.kernel_w;
  tp.taps = tp.kh * tp.kw;
  tp.positions = H * W;
  tp.vectors = (tp.positions + kLanes - 1) / kLanes;
  if (const int64_t rem = tp.positions % kLanes) tp.tail = __mmask16((1u << rem) - 1);
  for (int64_t i = 0; i < win.kernel_h; ++i)
    for (int64_t j = 0; j < win.kernel_w; ++j) tp.offset.push_back((i - win.pad_h) * W + (j - win.pad_w));
  tp.mask.assign(tp.vectors * tp.taps, 0);
  for (int64_t v = 0; v < tp.vectors; ++v)
    for (int64_t i = 0; i < win.kernel_h; ++i)
      for (int64_t j = 0; j < win.kernel_w; ++j) {
        unsigned m = 0;
        for (int64_t l = 0; l < kLanes && v * kLanes + l < tp.positions; ++l) {
          const int64_t p = v * kLanes + l;
          const int64_t ih = p / W + i - win.pad_h, iw = p % W + j - win.pad_w;
          if (ih >= 0 && ih < H && iw >= 0 && iw < W) m |= 1u << l;
        }
        tp.mask[v * tp.taps + i * win.kernel_w + j] = __mmask16(m);
      }
  return tp;
}

// Output channels in register blocks: blocks of `widest`, then the rest as 4, 2, 1.
std::vector<std::pair<int64_t, int>> channel_blocks(int64_t O, int widest) {
  std::vector<std::pair<int64_t, int>> blocks;
  int64_t o = 0;
  for (; o + widest <= O; o += widest) blocks.emplace_back(o, widest);
  for (int b = widest / 2; b >= 1; b /= 2)
    if (O - o >= b) {
      blocks.emplace_back(o, b);
      o += b;
    }
  return blocks;
}

constexpr int kForwardO = 8;  // output channels per forward register block
constexpr int kForwardV = 3;  // 16-position vectors per forward register block
constexpr int kWeightOV = 2;  // 16-channel vectors per weight-gradient register block

// Weights for the forward kernel: block (o0, mb) holds [taps][C][mb] at offset o0 * taps * C, so
// the mb values one FMA step broadcasts are adjacent. get(o, c, t) reads the logical weight.
template <class Get>
std::vector<float> pack_weights(int64_t O, int64_t C, int64_t T, const Get& get) {
  std::vector<float> packed(O * C * T);
  for (const auto& [o0, mb] : channel_blocks(O, kForwardO)) {
    float* dst = packed.data() + o0 * T * C;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c)
        for (int m = 0; m < mb; ++m) dst[(t * C + c) * mb + m] = get(o0 + m, c, t);
  }
  return packed;
}

// y[m][p] for MO output channels and NV vectors from vector v0 on.
template <int MO, int NV>
void forward_tile(const float* x, int64_t C, const float* wp, const Taps& tp, int64_t v0,
                  const float* bias, float* y) {
  __m512 acc[MO][NV];
  MG_UNROLL for (int m = 0; m < MO; ++m)
    MG_UNROLL for (int n = 0; n < NV; ++n) acc[m][n] = _mm512_set1_ps(bias ? bias[m] : 0.f);
  const int64_t plane = tp.positions;
  for (int64_t t = 0; t < tp.taps; ++t) {
    __mmask16 k[NV];
    unsigned any = 0;
    MG_UNROLL for (int n = 0; n < NV; ++n) any |= k[n] = tp.mask[(v0 + n) * tp.taps + t];
    if (any == 0) continue;
    const float* xt = x + v0 * kLanes + tp.offset[t];
    const float* wt = wp + t * C * MO;
    // unrolled by two: the loop's own overhead otherwise shows with C = 32 (5% of the layer)
#pragma GCC unroll 2
    for (int64_t c = 0; c < C; ++c) {
      __m512 xv[NV];
      MG_UNROLL for (int n = 0; n < NV; ++n) xv[n] = _mm512_maskz_loadu_ps(k[n], xt + c * plane + n * kLanes);
      MG_UNROLL for (int m = 0; m < MO; ++m) {
        const __m512 wb = _mm512_set1_ps(wt[c * MO + m]);
        MG_UNROLL for (int n = 0; n < NV; ++n) acc[m][n] = _mm512_fmadd_ps(wb, xv[n], acc[m][n]);
      }
    }
  }
  // masked stores are slow on some AVX-512 CPUs (AMD Zen): only the plane's last vector takes one
  MG_UNROLL for (int m = 0; m < MO; ++m)
    MG_UNROLL for (int n = 0; n < NV; ++n) {
      const __mmask16 lanes = tp.lanes(v0 + n);
      if (lanes == __mmask16(0xFFFF)) _mm512_storeu_ps(y + m * plane + (v0 + n) * kLanes, acc[m][n]);
      else _mm512_mask_storeu_ps(y + m * plane + (v0 + n) * kLanes, lanes, acc[m][n]);
    }
}

template <int NV>
void forward_tile_any(int mb, const float* x, int64_t C, const float* wp, const Taps& tp,
                      int64_t v0, const float* bias, float* y) {
  switch (mb) {
    case 8: return forward_tile<8, NV>(x, C, wp, tp, v0, bias, y);
    case 4: return forward_tile<4, NV>(x, C, wp, tp, v0, bias, y);
    case 2: return forward_tile<2, NV>(x, C, wp, tp, v0, bias, y);
    default: return forward_tile<1, NV>(x, C, wp, tp, v0, bias, y);
  }
}

// y [N, O, positions] = the conv of x [N, C, positions] with packed weights; one task per
// (sample, channel block), so a batch smaller than the thread count still spreads.
void run_forward(const float* x, const float* packed, const float* bias, float* y, int64_t N,
                 int64_t C, int64_t O, const Taps& tp) {
  const auto blocks = channel_blocks(O, kForwardO);
  const int64_t nb = static_cast<int64_t>(blocks.size()), P = tp.positions;
  parallel_for(N * nb, N * O * C * tp.taps * P, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / nb;
      const auto [o0, mb] = blocks[i % nb];
      const float* xs = x + n * C * P;
      const float* wp = packed + o0 * tp.taps * C;
      const float* b = bias ? bias + o0 : nullptr;
      float* ys = y + (n * O + o0) * P;
      // blocks of 3 vectors; a remainder of 1 is taken as 2 + 2 instead of 3 + 1 (a 1-vector
      // block has too few independent accumulators to keep the FMA units busy)
      const int64_t threes = tp.vectors / kForwardV -
                             (tp.vectors % kForwardV == 1 && tp.vectors > 1 ? 1 : 0);
      int64_t v = 0;
      for (int64_t k = 0; k < threes; ++k, v += kForwardV)
        forward_tile_any<kForwardV>(mb, xs, C, wp, tp, v, b, ys);
      for (; v + 2 <= tp.vectors; v += 2) forward_tile_any<2>(mb, xs, C, wp, tp, v, b, ys);
      for (; v < tp.vectors; ++v) forward_tile_any<1>(mb, xs, C, wp, tp, v, b, ys);
    }
  });
}

// ---- weight gradient, in channels-last form: the reduction over positions runs as FMAs of 16
// output channels (a vector of the position-major gradient) by one broadcast input value. No
// read needs a mask, and no 64-byte load straddles cache lines (which costs this CPU as much as a
// second load: the plane-major form of this reduction ran at 40% of peak).

// In-register transpose of a 16 x 16 block of floats (rows r[i] become columns).
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  MG_UNROLL for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  MG_UNROLL for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // now 128-bit lane L of r[4g + k] holds column 4L + k of rows 4g .. 4g + 3
  MG_UNROLL for (int k = 0; k < 4; ++k) {
    const __m512 p = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44), q = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE);
    const __m512 u = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44), w = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
    t[k] = _mm512_shuffle_f32x4(p, u, 0x88);
    t[4 + k] = _mm512_shuffle_f32x4(p, u, 0xDD);
    t[8 + k] = _mm512_shuffle_f32x4(q, w, 0x88);
    t[12 + k] = _mm512_shuffle_f32x4(q, w, 0xDD);
  }
  MG_UNROLL for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// One sample's operands for the weight-gradient kernel:
//   gt [P][O]       the gradient, position-major
//   xp [C][Hp][Wp]  the input with its zero padding made explicit
void prepare_weight_sample(const float* x, const float* gy, int64_t C, int64_t O, int64_t H,
                           int64_t W, const Window2d& win, float* gt, float* xp) {
  const int64_t P = H * W, Hp = H + 2 * win.pad_h, Wp = W + 2 * win.pad_w;
  const int64_t O16 = O / kLanes * kLanes, P16 = P / kLanes * kLanes;
  for (int64_t o0 = 0; o0 < O16; o0 += kLanes)
    for (int64_t p0 = 0; p0 < P16; p0 += kLanes) {
      __m512 r[16];
      MG_UNROLL for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(gy + (o0 + i) * P + p0);
      transpose16(r);
      MG_UNROLL for (int i = 0; i < 16; ++i) _mm512_storeu_ps(gt + (p0 + i) * O + o0, r[i]);
    }
  for (int64_t o = 0; o < O; ++o)  // the edges that do not fill a 16 x 16 block
    for (int64_t p = o < O16 ? P16 : 0; p < P; ++p) gt[p * O + o] = gy[o * P + p];
  std::fill_n(xp, C * Hp * Wp, 0.f);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < H; ++h)
      std::copy_n(x + (c * H + h) * W, W, xp + (c * Hp + h + win.pad_h) * Wp + win.pad_w);
}

struct WeightGeometry {
  int64_t C, O, H, W, Wp, Pp, kh, kw;
};

// acc[v][u * KW + j] += sum over positions of gt[p][16 v + lanes] * xp[c0 + u][row i + j of p's
// window], for one sample.
template <int OV, int CB, int KW>
void weight_tile(const float* gt, const float* xp, const WeightGeometry& g, int64_t c0, int64_t i,
                 __mmask16 last, __m512 (&acc)[OV][CB * KW]) {
  const float* base[CB];
  MG_UNROLL for (int u = 0; u < CB; ++u) base[u] = xp + (c0 + u) * g.Pp + i * g.Wp;
  for (int64_t oh = 0; oh < g.H; ++oh) {
    const float* grow = gt + oh * g.W * g.O;
    const float* xrow[CB];
    MG_UNROLL for (int u = 0; u < CB; ++u) xrow[u] = base[u] + oh * g.Wp;
    for (int64_t ow = 0; ow < g.W; ++ow) {
      __m512 gv[OV];
      MG_UNROLL for (int v = 0; v < OV; ++v)
        gv[v] = _mm512_maskz_loadu_ps(v == OV - 1 ? last : __mmask16(0xFFFF), grow + ow * g.O + v * kLanes);
      MG_UNROLL for (int u = 0; u < CB; ++u)
        MG_UNROLL for (int j = 0; j < KW; ++j) {
          const __m512 xb = _mm512_set1_ps(xrow[u][ow + j]);
          MG_UNROLL for (int v = 0; v < OV; ++v)
            acc[v][u * KW + j] = _mm512_fmadd_ps(gv[v], xb, acc[v][u * KW + j]);
        }
    }
  }
}

// dw[o0 .. o0 + 16 OV)[c0 .. c0 + CB)[i][0 .. KW) += the products over `samples` prepared
// samples.
template <int OV, int CB, int KW>
void weight_block(const float* gt, const float* xp, int64_t samples, const WeightGeometry& g,
                  int64_t o0, int64_t c0, int64_t i, float* dw) {
  const int64_t valid = std::min<int64_t>(OV * kLanes, g.O - o0);
  const int64_t rem = valid - (OV - 1) * kLanes;
  const __mmask16 last = rem >= kLanes ? __mmask16(0xFFFF) : __mmask16((1u << rem) - 1);
  __m512 acc[OV][CB * KW];
  MG_UNROLL for (int v = 0; v < OV; ++v)
    MG_UNROLL for (int b = 0; b < CB * KW; ++b) acc[v][b] = _mm512_setzero_ps();
  const int64_t gt_size = g.H * g.W * g.O, xp_size = g.C * g.Pp;
  for (int64_t n = 0; n < samples; ++n)
    weight_tile<OV, CB, KW>(gt + n * gt_size + o0, xp + n * xp_size, g, c0, i, last, acc);
  const int64_t T = g.kh * g.kw;
  alignas(64) float lanes[kLanes];
  MG_UNROLL for (int v = 0; v < OV; ++v)
    MG_UNROLL for (int b = 0; b < CB * KW; ++b) {
      _mm512_store_ps(lanes, acc[v][b]);
      const int64_t c = c0 + b / KW, t = i * g.kw + b % KW;
      for (int64_t l = 0; l < kLanes && o0 + v * kLanes + l < g.O; ++l)
        dw[((o0 + v * kLanes + l) * g.C + c) * T + t] += lanes[l];
    }
}

constexpr int weight_channels_per_block(int64_t kw) { return kw == 3 ? 4 : kw == 5 ? 2 : 1; }

template <int OV, int KW>
void weight_block_cb(int cb, const float* gt, const float* xp, int64_t samples,
                     const WeightGeometry& g, int64_t o0, int64_t c0, int64_t i, float* dw) {
  if constexpr (KW == 3) {
    if (cb == 4) return weight_block<OV, 4, KW>(gt, xp, samples, g, o0, c0, i, dw);
    if (cb == 3) return weight_block<OV, 3, KW>(gt, xp, samples, g, o0, c0, i, dw);
  }
  if constexpr (KW <= 5) {
    if (cb == 2) return weight_block<OV, 2, KW>(gt, xp, samples, g, o0, c0, i, dw);
  }
  weight_block<OV, 1, KW>(gt, xp, samples, g, o0, c0, i, dw);
}

template <int OV>
void weight_block_any(int cb, const float* gt, const float* xp, int64_t samples,
                      const WeightGeometry& g, int64_t o0, int64_t c0, int64_t i, float* dw) {
  switch (g.kw) {
    case 3: return weight_block_cb<OV, 3>(cb, gt, xp, samples, g, o0, c0, i, dw);
    case 5: return weight_block_cb<OV, 5>(cb, gt, xp, samples, g, o0, c0, i, dw);
    default: return weight_block_cb<OV, 7>(cb, gt, xp, samples, g, o0, c0, i, dw);
  }
}

}  // namespace

bool applicable(const Window2d& win, int64_t groups, int64_t H, int64_t W) {
  // widths the weight-gradient kernel is instantiated for (a 1x1 conv is a plain GEMM: Eigen's)
  const bool width_ok = win.kernel_w == 3 || win.kernel_w == 5 || win.kernel_w == 7;
  return width_ok && groups == 1 && win.stride_h == 1 && win.stride_w == 1 &&
         win.dilation_h == 1 && win.dilation_w == 1 && 2 * win.pad_h == win.kernel_h - 1 &&
         2 * win.pad_w == win.kernel_w - 1 && win.out_h == H && win.out_w == W && H * W > 0;
}

void forward(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t C,
             int64_t O, int64_t H, int64_t W, const Window2d& win) {
  const Taps tp = make_taps(H, W, win);
  const int64_t T = tp.taps;
  const auto packed = pack_weights(O, C, T, [&](int64_t o, int64_t c, int64_t t) { return w[(o * C + c) * T + t]; });
  run_forward(x, packed.data(), bias, y, N, C, O, tp);
}

void backward_input(const float* gy, const float* w, float* dx, int64_t N, int64_t C, int64_t O,
                    int64_t H, int64_t W, const Window2d& win) {
  // dx[c, p] = sum over o, t of w[o, c, t] * gy[o, p - offset[t]]; -offset[t] = offset[T-1-t]
  // for a symmetric padding, so this is the forward with taps reversed and channels swapped.
  const Taps tp = make_taps(H, W, win);
  const int64_t T = tp.taps;
  const auto packed = pack_weights(C, O, T, [&](int64_t c, int64_t o, int64_t t) { return w[(o * C + c) * T + (T - 1 - t)]; });
  run_forward(gy, packed.data(), nullptr, dx, N, O, C, tp);
}

void backward_weight(const float* x, const float* gy, float* dw, int64_t N, int64_t C, int64_t O,
                     int64_t H, int64_t W, const Window2d& win) {
  WeightGeometry g{C, O, H, W, W + 2 * win.pad_w, (H + 2 * win.pad_h) * (W + 2 * win.pad_w),
                   win.kernel_h, win.kernel_w};
  const int64_t K = C * g.kh * g.kw, gt_size = H * W * O, xp_size = C * g.Pp;
  // Samples per chunk: the chunk's rearranged operands stay in L2 (~1 MiB) while every register
  // block sweeps them.
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 20) / ((gt_size + xp_size) * 4), 1,
                                            std::max<int64_t>(N, 1));
  const int cbw = weight_channels_per_block(g.kw);
  const int64_t vectors = (O + kLanes - 1) / kLanes;
  std::vector<std::vector<float>> partial(std::max<int64_t>(N, 1));
  parallel_for(N, N * O * K * H * W, [&](int64_t n0, int64_t n1) {
    std::vector<float>& acc = partial[n0];
    acc.assign(O * K, 0.f);
    // kept per thread across calls: fresh megabytes would be page-faulted in on every call
    thread_local std::vector<float> gt, xp;
    gt.resize(std::max<size_t>(gt.size(), chunk * gt_size));
    xp.resize(std::max<size_t>(xp.size(), chunk * xp_size));
    for (int64_t s0 = n0; s0 < n1; s0 += chunk) {
      const int64_t samples = std::min(n1 - s0, chunk);
      for (int64_t n = 0; n < samples; ++n)
        prepare_weight_sample(x + (s0 + n) * C * H * W, gy + (s0 + n) * O * H * W, C, O, H, W, win,
                              gt.data() + n * gt_size, xp.data() + n * xp_size);
      for (int64_t v0 = 0; v0 < vectors; v0 += kWeightOV) {
        const int64_t o0 = v0 * kLanes;
        for (int64_t c0 = 0; c0 < C; c0 += cbw) {
          const int cb = static_cast<int>(std::min<int64_t>(cbw, C - c0));
          for (int64_t i = 0; i < g.kh; ++i) {
            if (vectors - v0 >= 2) weight_block_any<2>(cb, gt.data(), xp.data(), samples, g, o0, c0, i, acc.data());
            else weight_block_any<1>(cb, gt.data(), xp.data(), samples, g, o0, c0, i, acc.data());
          }
        }
      }
    }
  });
  std::fill_n(dw, O * K, 0.f);
  for (const auto& p : partial)
    for (size_t i = 0; i < p.size(); ++i) dw[i] += p[i];
}

#else  // no AVX-512: cpu_conv.cpp keeps im2col + GEMM

bool applicable(const Window2d&, int64_t, int64_t, int64_t) { return false; }
void forward(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
             int64_t, const Window2d&) {}
void backward_input(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                    int64_t, const Window2d&) {}
void backward_weight(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                     int64_t, const Window2d&) {}

#endif

}  // namespace mg::cpu::direct
