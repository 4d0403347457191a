// Float32 GEMM (gemm_f32.hpp). C is computed in register blocks of 8 rows x 48 columns: per step
// of k, three 16-column vectors of B are loaded and each of the 8 values of A's column is
// broadcast against them (24 FMAs for 11 loads). B is packed into panels of 192 x 48 that stay in
// L1 (zero-padded on the right, so no load is masked); A is read in place with its own strides.
// Work is split over threads by rows of C (or by column panels when C has few rows); every
// element's k-sum runs on one thread in panel order.
#include "engine/cpu/gemm_f32.hpp"

#include <algorithm>
#include <cstring>

#include "engine/parallel.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace mg::cpu {

#if defined(__AVX512F__)
namespace {

// GCC keeps arrays of accumulators in registers only when the loops over them are unrolled
// before its scalar replacement runs (see cpu_conv_direct.cpp).
#define MG_UNROLL _Pragma("GCC unroll 32")

constexpr int64_t kLanes = 16;
constexpr int kMR = 8;                 // rows of C per register block
constexpr int kNV = 3;                 // 16-column vectors per register block
constexpr int64_t kNR = kNV * kLanes;  // columns per panel
constexpr int64_t kKC = 192;           // depth of a panel: 192 x 48 floats = 36 KiB

struct Operands {
  const float* A;
  int64_t a_row, a_col;
  const float* B;
  int64_t b_row, b_col;
  float* C;
  int64_t ldc, K;
  bool accumulate;
};

// panel[k][j] = B[k0 + k][n0 + j] for j < nb, 0 up to the vectors used.
void pack_panel(const Operands& o, int64_t k0, int64_t kc, int64_t n0, int64_t nb, int nv, float* panel) {
  const int64_t width = nv * kLanes;
  if (o.b_col == 1) {
    for (int64_t k = 0; k < kc; ++k) {
      std::memcpy(panel + k * kNR, o.B + (k0 + k) * o.b_row + n0, nb * sizeof(float));
      std::fill(panel + k * kNR + nb, panel + k * kNR + width, 0.f);
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k) std::fill(panel + k * kNR + nb, panel + k * kNR + width, 0.f);
  for (int64_t j = 0; j < nb; ++j) {  // a transposed B: read along its contiguous k
    const float* src = o.B + k0 * o.b_row + (n0 + j) * o.b_col;
    for (int64_t k = 0; k < kc; ++k) panel[k * kNR + j] = src[k * o.b_row];
  }
}

// C[0:MR, 0:16 NV] = (accumulate ? C : 0) + A[0:MR, 0:kc] @ panel.
template <int MR, int NV>
void tile(const float* A, int64_t a_row, int64_t a_col, const float* panel, int64_t ldp, int64_t kc,
          float* C, int64_t ldc, __mmask16 last, bool accumulate) {
  // masked loads and stores are slow on some AVX-512 CPUs (AMD Zen): only a partial vector
  // takes them
  const bool partial = last != __mmask16(0xFFFF);
  __m512 acc[MR][NV];
  MG_UNROLL for (int m = 0; m < MR; ++m)
    MG_UNROLL for (int v = 0; v < NV; ++v) {
      const float* c = C + m * ldc + v * kLanes;
      acc[m][v] = !accumulate ? _mm512_setzero_ps()
                  : v == NV - 1 && partial ? _mm512_maskz_loadu_ps(last, c) : _mm512_loadu_ps(c);
    }
  const float* a[MR];
  MG_UNROLL for (int m = 0; m < MR; ++m) a[m] = A + m * a_row;
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[NV];
    MG_UNROLL for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(panel + k * ldp + v * kLanes);
    MG_UNROLL for (int m = 0; m < MR; ++m) {
      const __m512 am = _mm512_set1_ps(a[m][k * a_col]);
      MG_UNROLL for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(am, b[v], acc[m][v]);
    }
  }
  MG_UNROLL for (int m = 0; m < MR; ++m)
    MG_UNROLL for (int v = 0; v < NV; ++v) {
      if (v == NV - 1 && partial) _mm512_mask_storeu_ps(C + m * ldc + v * kLanes, last, acc[m][v]);
      else _mm512_storeu_ps(C + m * ldc + v * kLanes, acc[m][v]);
    }
}

template <int NV>
void tile_rows(int mr, const float* A, int64_t a_row, int64_t a_col, const float* panel, int64_t ldp,
               int64_t kc, float* C, int64_t ldc, __mmask16 last, bool accumulate) {
  switch (mr) {
    case 8: return tile<8, NV>(A, a_row, a_col, panel, ldp, kc, C, ldc, last, accumulate);
    case 4: return tile<4, NV>(A, a_row, a_col, panel, ldp, kc, C, ldc, last, accumulate);
    case 2: return tile<2, NV>(A, a_row, a_col, panel, ldp, kc, C, ldc, last, accumulate);
    default: return tile<1, NV>(A, a_row, a_col, panel, ldp, kc, C, ldc, last, accumulate);
  }
}

// C[m0:m1, n0:n1], n0 a multiple of the panel width.
void gemm_block(const Operands& o, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  alignas(64) thread_local float panel[kKC * kNR];
  for (int64_t nc = n0; nc < n1; nc += kNR) {
    const int64_t nb = std::min(kNR, n1 - nc);
    const int nv = static_cast<int>((nb + kLanes - 1) / kLanes);
    const int64_t rem = nb - (nv - 1) * kLanes;
    const __mmask16 last = rem == kLanes ? __mmask16(0xFFFF) : __mmask16((1u << rem) - 1);
    for (int64_t k0 = 0; k0 < o.K; k0 += kKC) {
      const int64_t kc = std::min(kKC, o.K - k0);
      // A panel of whole vectors of a B with contiguous rows is read in place (when few rows of
      // C would not repay the copy, or B's rows are short enough to stay cached anyway).
      const bool in_place = o.b_col == 1 && nb % kLanes == 0 && (m1 - m0 <= 64 || o.b_row <= 1024);
      const float* bp = in_place ? o.B + k0 * o.b_row + nc : panel;
      const int64_t ldp = in_place ? o.b_row : kNR;
      if (!in_place) pack_panel(o, k0, kc, nc, nb, nv, panel);
      for (int64_t m = m0; m < m1;) {
        const int mr = m1 - m >= 8 ? 8 : m1 - m >= 4 ? 4 : m1 - m >= 2 ? 2 : 1;
        const float* a = o.A + m * o.a_row + k0 * o.a_col;
        float* c = o.C + m * o.ldc + nc;
        const bool add = k0 > 0 || o.accumulate;
        if (nv == 3) tile_rows<3>(mr, a, o.a_row, o.a_col, bp, ldp, kc, c, o.ldc, last, add);
        else if (nv == 2) tile_rows<2>(mr, a, o.a_row, o.a_col, bp, ldp, kc, c, o.ldc, last, add);
        else tile_rows<1>(mr, a, o.a_row, o.a_col, bp, ldp, kc, c, o.ldc, last, add);
        m += mr;
      }
    }
  }
}

}  // namespace

bool gemm_f32_available() { return true; }

void gemm_f32(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_row, int64_t a_col,
              const float* B, int64_t b_row, int64_t b_col, float* C, int64_t ldc, bool parallel,
              bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m) std::fill_n(C + m * ldc, N, 0.f);
    return;
  }
  const Operands o{A, a_row, a_col, B, b_row, b_col, C, ldc, K, accumulate};
  const int64_t work = M * N * K;
  const int64_t row_blocks = (M + kMR - 1) / kMR, panels = (N + kNR - 1) / kNR;
  if (!parallel || work < (int64_t{1} << 18)) return gemm_block(o, 0, M, 0, N);
  if (row_blocks >= 2 * get_num_threads() || row_blocks >= panels) {
    parallel_for(row_blocks, work, [&](int64_t b0, int64_t b1) {
      gemm_block(o, b0 * kMR, std::min(M, b1 * kMR), 0, N);
    });
  } else {
    parallel_for(panels, work, [&](int64_t p0, int64_t p1) {
      gemm_block(o, 0, M, p0 * kNR, std::min(N, p1 * kNR));
    });
  }
}

#else  // no AVX-512: cpu_matmul.cpp keeps Eigen

bool gemm_f32_available() { return false; }
void gemm_f32(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t,
              int64_t, float*, int64_t, bool, bool) {}

#endif

}  // namespace mg::cpu
