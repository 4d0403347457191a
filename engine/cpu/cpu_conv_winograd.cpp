// Winograd F(2x2, 3x3) for the 3x3 'same' convolutions of CNNs (Lavin & Gray, 2016), float32 with
// AVX-512: the forward, the input gradient (the same conv with the weight transposed and flipped)
// and the weight gradient (the chain rule through the forward). Each 2x2 block of outputs comes
// from a 4x4 tile of input in 16 products instead of 36, so the multiplications drop 2.25 times;
// they run as 16 GEMMs per unit of work (gemm_f32).
//
//   V = B^T d B   (input tiles)      U = G g G^T   (weights)      Y = A^T (U . V) A   (outputs)
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1]
//
// The transforms use only additions (and halvings in G), so the results stay within a few ulp of
// the direct sum. Lanes are the tiles of one row of tiles (a plane up to 32 wide); the work goes in
// fixed units (blocks of tile rows, or of samples), so the forward and input gradient do not
// depend on the thread count, and the weight gradient (per-thread partial sums) only on it.
//
// GCC 12 warns about the deliberately undefined operands inside its own AVX-512 intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <algorithm>
#include <vector>

#include "engine/cpu/conv_direct.hpp"
#include "engine/cpu/gemm_f32.hpp"
#include "engine/parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mg::cpu::winograd {

#if defined(__AVX512F__)
namespace {

// Tiles per unit of work: a few samples of a small plane, or a block of tile rows of a large one.
// Enough to make the GEMMs wide; few enough that the unit's transformed input and products
// (16 x channels x tiles each) stay in L2: written out to L3 and read back, they cost more than
// the multiplications Winograd saves.
constexpr int64_t kTiles = 96;

struct Plan {
  int64_t H, W, th, tw;  // th x tw tiles per sample
  int64_t S;             // samples per unit
  int64_t R;             // tile rows per unit (th when S > 1)
  int64_t blocks;        // units per group of S samples: ceil(th / R)
};

// U [16][O][C] from w [O][C][3][3], or from w [C][O][3][3] read transposed and flipped.
std::vector<float> transform_weights(const float* w, int64_t O, int64_t C, bool adjoint) {
  std::vector<float> u(16 * O * C);
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c) {
      float g[3][3];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
          g[i][j] = adjoint ? w[((c * O + o) * 3 + 2 - i) * 3 + 2 - j] : w[((o * C + c) * 3 + i) * 3 + j];
      float gg[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        gg[0][j] = g[0][j];
        gg[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
        gg[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
        gg[3][j] = g[2][j];
      }
      for (int i = 0; i < 4; ++i) {  // (G g) G^T
        const float r[4] = {gg[i][0], 0.5f * (gg[i][0] + gg[i][1] + gg[i][2]),
                            0.5f * (gg[i][0] - gg[i][1] + gg[i][2]), gg[i][2]};
        for (int j = 0; j < 4; ++j) u[((4 * i + j) * O + o) * C + c] = r[j];
      }
    }
  return u;
}

// Columns 2b .. 2b + 3 - 1 of input row `row` for the tiles b of a tile row, with B^T applied
// along them: u[j][b] for j = 0..3. Lanes b >= tw come out 0.
inline void row_transform(const float* row, int64_t W, __m512 (&u)[4]) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __mmask16 k_lo = W >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << W) - 1);
  const __mmask16 k_hi = W > 16 ? __mmask16((1u << (W - 16)) - 1) : __mmask16(0);
  // (plain loads where the row fills the vector: a masked load that misses the cache waits for
  // memory before anything after it, on AMD Zen at least)
  const __m512 lo = W >= 16 ? _mm512_loadu_ps(row) : _mm512_maskz_loadu_ps(k_lo, row);
  const __m512 hi = W == 32 ? _mm512_loadu_ps(row + 16)
                            : W > 16 ? _mm512_maskz_loadu_ps(k_hi, row + 16) : _mm512_setzero_ps();
  const __m512 e = _mm512_permutex2var_ps(lo, even, hi);  // x[2b]
  const __m512 o = _mm512_permutex2var_ps(lo, odd, hi);   // x[2b + 1]
  const __m512 zero = _mm512_setzero_ps();
  const __m512 d0 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(zero), 15));  // x[2b - 1]
  const __m512 d3 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(zero), _mm512_castps_si512(e), 1));   // x[2b + 2]
  u[0] = _mm512_sub_ps(d0, o);
  u[1] = _mm512_add_ps(e, o);
  u[2] = _mm512_sub_ps(o, e);
  u[3] = _mm512_sub_ps(e, d3);
}

// V[xi][c][s T + (a - a0) tw + b] for tile rows a in [a0, a1) of plane x [H][W] (channel c of
// sample s; T the unit's tiles per sample).
void input_transform(const float* x, const Plan& p, int64_t a0, int64_t a1, float* v, int64_t ld_xi) {
  for (int64_t a = a0; a < a1; ++a) {
    __m512 u[4][4];  // u[i][j]: row i of the tile (input row 2a - 1 + i), column combination j
    for (int i = 0; i < 4; ++i) {
      const int64_t r = 2 * a - 1 + i;
      if (r < 0 || r >= p.H) {
        for (int j = 0; j < 4; ++j) u[i][j] = _mm512_setzero_ps();
      } else {
        row_transform(x + r * p.W, p.W, u[i]);
      }
    }
    for (int j = 0; j < 4; ++j) {
      const __m512 col[4] = {_mm512_sub_ps(u[0][j], u[2][j]), _mm512_add_ps(u[1][j], u[2][j]),
                             _mm512_sub_ps(u[2][j], u[1][j]), _mm512_sub_ps(u[1][j], u[3][j])};
      // Whole vectors: lanes past tw spill into the next tile row's slots, written after this
      // (the caller goes through channels, samples and tile rows in memory order; V has a pad).
      for (int i = 0; i < 4; ++i) _mm512_storeu_ps(v + (4 * i + j) * ld_xi + (a - a0) * p.tw, col[i]);
    }
  }
}

// Rows [2 a0, 2 a1) of plane y [H][W] (+ bias) from M[xi][s T + (a - a0) tw + b] of one output
// channel of one sample.
void output_transform(const float* m, int64_t ld_xi, const Plan& p, int64_t a0, int64_t a1,
                      float bias, float* y) {
  const __mmask16 lanes = __mmask16((1u << p.tw) - 1);
  const __m512i lo_idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i hi_idx = _mm512_add_epi32(lo_idx, _mm512_set1_epi32(8));
  const int64_t W = p.W;
  const __mmask16 k_lo = W >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << W) - 1);
  const __mmask16 k_hi = W > 16 ? __mmask16((1u << (W - 16)) - 1) : __mmask16(0);
  const __m512 vb = _mm512_set1_ps(bias);
  for (int64_t a = a0; a < a1; ++a) {
    __m512 t[4][4];
    for (int xi = 0; xi < 16; ++xi) {
      const float* src = m + xi * ld_xi + (a - a0) * p.tw;
      t[xi / 4][xi % 4] = p.tw == 16 ? _mm512_loadu_ps(src) : _mm512_maskz_loadu_ps(lanes, src);
    }
    for (int r = 0; r < 2; ++r) {
      __m512 s[4];  // A^T along the tile's rows
      for (int j = 0; j < 4; ++j)
        s[j] = r == 0 ? _mm512_add_ps(_mm512_add_ps(t[0][j], t[1][j]), t[2][j])
                      : _mm512_sub_ps(_mm512_sub_ps(t[1][j], t[2][j]), t[3][j]);
      const __m512 y0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]), vb);
      const __m512 y1 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]), vb);
      float* out = y + (2 * a + r) * W;
      const __m512 first = _mm512_permutex2var_ps(y0, lo_idx, y1);
      if (W >= 16) _mm512_storeu_ps(out, first);  // (masked stores are slow on AMD Zen)
      else _mm512_mask_storeu_ps(out, k_lo, first);
      if (W == 32) _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(y0, hi_idx, y1));
      else if (W > 16) _mm512_mask_storeu_ps(out + 16, k_hi, _mm512_permutex2var_ps(y0, hi_idx, y1));
    }
  }
}

// In-register transpose of a 16 x 16 block of floats (rows r[i] become columns).
inline void transpose16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // now 128-bit lane L of r[4g + k] holds column 4L + k of rows 4g .. 4g + 3
  for (int k = 0; k < 4; ++k) {
    const __m512 p = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44), q = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE);
    const __m512 u = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44), w = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
    t[k] = _mm512_shuffle_f32x4(p, u, 0x88);
    t[4 + k] = _mm512_shuffle_f32x4(p, u, 0xDD);
    t[8 + k] = _mm512_shuffle_f32x4(q, w, 0x88);
    t[12 + k] = _mm512_shuffle_f32x4(q, w, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Z[xi][s T + (a - a0) tw + b] = A g A^T of the 2x2 gradient tiles g in tile rows [a0, a1) of
// plane gy [H][W] (one output channel of one sample): the gradient of the forward's products M.
void gradient_transform(const float* gy, const Plan& p, int64_t a0, int64_t a1, float* z, int64_t ld_xi) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const int64_t W = p.W;
  const __mmask16 k_lo = W >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << W) - 1);
  const __mmask16 k_hi = W > 16 ? __mmask16((1u << (W - 16)) - 1) : __mmask16(0);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t a = a0; a < a1; ++a) {
    __m512 h[2][4];  // h[r][j]: gradient row 2a + r, column combination j of A
    for (int r = 0; r < 2; ++r) {
      const float* row = gy + (2 * a + r) * W;
      const __m512 lo = W >= 16 ? _mm512_loadu_ps(row) : _mm512_maskz_loadu_ps(k_lo, row);
      const __m512 hi = W == 32 ? _mm512_loadu_ps(row + 16)
                                : W > 16 ? _mm512_maskz_loadu_ps(k_hi, row + 16) : zero;
      const __m512 e = _mm512_permutex2var_ps(lo, even, hi), o = _mm512_permutex2var_ps(lo, odd, hi);
      h[r][0] = e;
      h[r][1] = _mm512_add_ps(e, o);
      h[r][2] = _mm512_sub_ps(e, o);
      h[r][3] = _mm512_sub_ps(zero, o);
    }
    for (int j = 0; j < 4; ++j) {
      const __m512 col[4] = {h[0][j], _mm512_add_ps(h[0][j], h[1][j]), _mm512_sub_ps(h[0][j], h[1][j]),
                             _mm512_sub_ps(zero, h[1][j])};
      // whole vectors, spilling into slots written later (as input_transform)
      for (int i = 0; i < 4; ++i) _mm512_storeu_ps(z + (4 * i + j) * ld_xi + (a - a0) * p.tw, col[i]);
    }
  }
}

Plan plan_for(int64_t N, int64_t H, int64_t W) {
  Plan p{H, W, H / 2, W / 2, 1, H / 2, 1};
  const int64_t T = p.th * p.tw;
  if (T >= kTiles) {
    p.R = std::max<int64_t>(1, kTiles / p.tw);
    p.blocks = (p.th + p.R - 1) / p.R;
  } else {
    p.S = std::clamp<int64_t>((kTiles + T - 1) / T, 1, std::max<int64_t>(N, 1));
  }
  return p;
}

// y [N, O, H, W] = the conv of x [N, C, H, W] with transformed weights U [16][O][C].
void run(const float* x, const std::vector<float>& u, const float* bias, float* y, int64_t N,
         int64_t C, int64_t O, int64_t H, int64_t W) {
  const Plan p = plan_for(N, H, W);
  const int64_t units = (N + p.S - 1) / p.S * p.blocks;
  parallel_for(units, N * O * C * H * W * 4, [&](int64_t k0, int64_t k1) {
    thread_local std::vector<float> v, m;  // kept: fresh megabytes would be faulted in per call
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t n0 = k / p.blocks * p.S, S = std::min(p.S, N - n0);
      const int64_t a0 = k % p.blocks * p.R, a1 = std::min(p.th, a0 + p.R);
      const int64_t T = (a1 - a0) * p.tw, cols = S * T;
      // The 16 planes of V and M are apart by a stride off the powers of two: a tile's 16 values
      // at power-of-two distances would all land in one L1 set.
      const int64_t ld_v = C * cols + 16, ld_m = O * cols + 16;
      v.resize(std::max<size_t>(v.size(), 16 * ld_v));
      m.resize(std::max<size_t>(m.size(), 16 * ld_m));
      // The unit reads a band of rows from each of its input planes: short runs that start cold,
      // which the hardware prefetcher hardly follows (the transform then waits on memory at a
      // few GB/s). Request the bands a few planes ahead into L2.
      const int64_t row0 = std::max<int64_t>(2 * a0 - 1, 0), row1 = std::min(H, 2 * a1 + 1);
      const int64_t band_bytes = (row1 - row0) * W * 4;
      auto prefetch_band = [&](int64_t i) {  // i: the i-th plane of the unit, channel-major
        if (i >= C * S) return;
        const char* band = reinterpret_cast<const char*>(x + ((n0 + i % S) * C + i / S) * H * W + row0 * W);
        for (int64_t b = 0; b < band_bytes; b += 64) _mm_prefetch(band + b, _MM_HINT_T1);
      };
      constexpr int64_t kAhead = 4;
      for (int64_t i = 0; i < kAhead; ++i) prefetch_band(i);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t s = 0; s < S; ++s) {
          prefetch_band(c * S + s + kAhead);
          input_transform(x + ((n0 + s) * C + c) * H * W, p, a0, a1, v.data() + c * cols + s * T, ld_v);
        }
      for (int xi = 0; xi < 16; ++xi)
        gemm_f32(O, cols, C, u.data() + xi * O * C, C, 1, v.data() + xi * ld_v, cols, 1,
                 m.data() + xi * ld_m, cols, false);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t o = 0; o < O; ++o)
          output_transform(m.data() + o * cols + s * T, ld_m, p, a0, a1, bias ? bias[o] : 0.f,
                           y + ((n0 + s) * O + o) * H * W);
    }
  });
}

}  // namespace

void backward_weight(const float* x, const float* gy, float* dw, int64_t N, int64_t C, int64_t O,
                     int64_t H, int64_t W) {
  // dL/dU[xi][o][c] = sum over tiles of Z[xi][o][t] V[xi][c][t]: 16 GEMMs whose depth is the
  // tiles, then dW = G^T (dL/dU) G (the chain rule through the forward's U = G w G^T). The GEMM
  // wants V tile-major ([t][c], channels contiguous): each block of 16 channels is transformed
  // into a staging block and transposed 16 x 16 in registers on the way out.
  const Plan p = plan_for(N, H, W);
  const int64_t units = (N + p.S - 1) / p.S * p.blocks;
  std::vector<std::vector<float>> partial(std::max<int64_t>(units, 1));  // per thread, by first unit
  parallel_for(units, N * O * C * H * W * 4, [&](int64_t k0, int64_t k1) {
    std::vector<float>& du = partial[k0];
    du.assign(16 * O * C, 0.f);
    thread_local std::vector<float> v, z, stage;
    stage.resize(16 * 16 * 16 * p.R * p.S + 16);
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t n0 = k / p.blocks * p.S, S = std::min(p.S, N - n0);
      const int64_t a0 = k % p.blocks * p.R, a1 = std::min(p.th, a0 + p.R);
      const int64_t T = (a1 - a0) * p.tw, cols = S * T;
      const int64_t ld_v = cols * C + 16, ld_z = O * cols + 16, ld_s = 16 * cols + 16;
      v.resize(std::max<size_t>(v.size(), 16 * ld_v));
      z.resize(std::max<size_t>(z.size(), 16 * ld_z));
      stage.resize(std::max<size_t>(stage.size(), 16 * ld_s));
      for (int64_t c0 = 0; c0 < C; c0 += 16) {
        // stage[xi][c - c0][t], then V[xi][t][c0 .. c0 + 16)
        for (int64_t c = c0; c < c0 + 16; ++c)
          for (int64_t s = 0; s < S; ++s)
            input_transform(x + ((n0 + s) * C + c) * H * W, p, a0, a1, stage.data() + (c - c0) * cols + s * T, ld_s);
        for (int xi = 0; xi < 16; ++xi)
          for (int64_t t0 = 0; t0 < cols; t0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(stage.data() + xi * ld_s + i * cols + t0);
            transpose16(r);
            for (int64_t t = t0; t < std::min(cols, t0 + 16); ++t)
              _mm512_storeu_ps(v.data() + xi * ld_v + t * C + c0, r[t - t0]);
          }
      }
      for (int64_t o = 0; o < O; ++o)
        for (int64_t s = 0; s < S; ++s)
          gradient_transform(gy + ((n0 + s) * O + o) * H * W, p, a0, a1, z.data() + o * cols + s * T, ld_z);
      for (int xi = 0; xi < 16; ++xi)  // du[xi] [O, C] += Z[xi] [O, cols] @ V[xi] [cols, C]
        gemm_f32(O, C, cols, z.data() + xi * ld_z, cols, 1, v.data() + xi * ld_v, C, 1,
                 du.data() + xi * O * C, C, false, true);
    }
  });
  std::vector<float> du(16 * O * C, 0.f);
  for (const auto& part : partial)
    for (size_t i = 0; i < part.size(); ++i) du[i] += part[i];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c) {
      float d[4][4], t[3][4];
      for (int xi = 0; xi < 16; ++xi) d[xi / 4][xi % 4] = du[(xi * O + o) * C + c];
      for (int q = 0; q < 4; ++q) {  // G^T along the rows
        t[0][q] = d[0][q] + 0.5f * (d[1][q] + d[2][q]);
        t[1][q] = 0.5f * (d[1][q] - d[2][q]);
        t[2][q] = 0.5f * (d[1][q] + d[2][q]) + d[3][q];
      }
      float* out = dw + (o * C + c) * 9;
      for (int i = 0; i < 3; ++i) {  // and G along the columns
        out[i * 3 + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
        out[i * 3 + 1] = 0.5f * (t[i][1] - t[i][2]);
        out[i * 3 + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
      }
    }
}

bool applicable(const Window2d& win, int64_t groups, int64_t C, int64_t O, int64_t H, int64_t W) {
  // Few channels make the GEMMs too shallow to gain (the first conv of a network).
  return gemm_f32_available() && groups == 1 && win.kernel_h == 3 && win.kernel_w == 3 &&
         win.stride_h == 1 && win.stride_w == 1 && win.pad_h == 1 && win.pad_w == 1 &&
         win.dilation_h == 1 && win.dilation_w == 1 && H % 2 == 0 && W % 2 == 0 && H >= 2 &&
         W >= 2 && W <= 32 && std::min(C, O) >= 16;
}

void forward(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t C,
             int64_t O, int64_t H, int64_t W) {
  run(x, transform_weights(w, O, C, false), bias, y, N, C, O, H, W);
}

void backward_input(const float* gy, const float* w, float* dx, int64_t N, int64_t C, int64_t O,
                    int64_t H, int64_t W) {
  run(gy, transform_weights(w, C, O, true), nullptr, dx, N, O, C, H, W);
}

#else

bool applicable(const Window2d&, int64_t, int64_t, int64_t, int64_t, int64_t) { return false; }
void forward(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
             int64_t) {}
void backward_input(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                    int64_t) {}
void backward_weight(const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                     int64_t) {}

#endif

}  // namespace mg::cpu::winograd
