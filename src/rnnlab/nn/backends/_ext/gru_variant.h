// The GRU variants' time loop (rnnlab/nn/variant_gru.py: LayerNorm, recurrent dropout, zoneout)
// forward and with hand-written backpropagation through time: the compiled fast path of
// VariantGRUCell (rnnlab/nn/backends/gru_variant_compiled.py wraps it).
//
// Shape legend: B batch, T time, I input, H hidden units, G = 3H (gate rows r, z, n, torch's
// layout).
//
// One step, every option on (the cell's docstring has the same lines):
//   h_in = h * m_rec ;  a_x = LN(x W_ih^T) g_ih ;  a_h = LN(h_in W_hh^T) g_hh
//   r = sigmoid(a_x_r + a_h_r + b_r) ;  z = sigmoid(a_x_z + a_h_z + b_z)
//   n = tanh(a_x_n + b_n + r (a_h_n + b_hn)) ;  h_new = (1 - z) n + z h
//   h_t = d h + (1 - d) h_new                                         (zoneout)
// Without LayerNorm a gain is one (a row of ones: the product is exact), without dropout m_rec
// is one, without zoneout d is zero: one loop serves every combination.
//
// The algorithm is the fused path's (rnnlab/nn/backends/variant_fused.py):
// * forward: x W_ih^T for all steps in one GEMM, and its LayerNorm over all T*B rows at once;
//   then per step one recurrent GEMM and one pass over the gates (the recurrent product's
//   LayerNorm inside it, row by row). Training keeps the activated gates r, z, n, the
//   normalised products and their 1/std (LayerNorm), a_h_n + b_hn (which r multiplied), h_in
//   (dropout) and the states; inference keeps nothing beyond the step it is on.
// * backward, per step going back in time: one pass over the gates (giving dL/dA_x and, through
//   the recurrent LayerNorm, dL/d(h_in W_hh^T)), then dL/dh_in = dA_h W_hh (a GEMM). The
//   gradients of b, b_hn and g_hh are summed by each row block as it goes (rows still in
//   cache); after the loop the input LayerNorm's backward runs over all T*B rows at once, and
//   dx, dW_ih and dW_hh are single GEMMs over all T*B rows.
//
// Threads and GEMMs, as lstm_variant.h: batch rows are independent sequences, so each thread
// can run its own block of rows through every step with single-threaded oneDNN ukernel GEMMs
// (cpublas::brgemm, "row blocks"), never waiting for another. Where W_hh (3H x H float32) is
// over kRowBlockWeightBytes (recurrent.h: 2 MiB, H > 418) each step instead makes one GEMM over
// all rows through ATen (MKL, multi-threaded) and splits its gate pass over the row blocks
// ("per step"). Measured on the 2-core AVX-512 host, one thread, LayerNorm GRU forward +
// backward, CPU time, the core shared with other benchmarks: at (B, T, I, H) = (64, 128, 64,
// 512) per step took 212 + 306 ms where row blocks took 239 + 437; at H = 128 ((128, 28, 128,
// 128) and (64, 200, 128, 128)) the two were within the noise (fastest runs 8.3-8.6 + 13.6-14.0
// ms and 33.0-33.2 + 51.7-53.1 ms). float64 (only the gradient checks use it) runs in row
// blocks on one thread, its GEMMs through ATen.
//
// Layouts: x, out (B, T, .) and the zoneout mask (B, T, H) batch first in real time order;
// inside, time-major (T, B, .) buffers in real time order, and the carried h in the slots of
// recurrent.h (Slots: training keeps T + 1 of them, inference alternates between two). Padded
// steps (mask false) carry h and output zero; their gates get no gradient and the state
// gradient passes straight through.
//
// This header holds what both halves share (the GEMM path, LayerNorm, the call's sizes and
// pointers); gru_variant.cpp has the forward, gru_variant_backward.cpp the backward.
#pragma once

#include <type_traits>

#include "recurrent.h"

namespace rnnlab_ext {
namespace gru_variant {


inline bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

// gru_variant_forward's `mode`: 0 chooses, 1 forces row blocks, 2 per-step ATen GEMMs (the
// tests run both).
constexpr int64_t kAuto = 0, kRowBlocks = 1, kPerStep = 2;

inline bool use_row_blocks(bool is_float, int64_t H, int64_t mode) {
  if (!is_float || mode == kRowBlocks) return true;
  if (mode == kPerStep) return false;
  return 3 * H * H * int64_t(sizeof(float)) <= kRowBlockWeightBytes;
}

// c (M, N) (+)= a (M, K) @ b (K, N), row-major with leading dimensions: brgemm in the calling
// thread (float32 row blocks), else ATen.
template <typename S>
inline void mm(bool rows, int64_t M, const S* a, int64_t lda, const Tensor& b, S* c, int64_t ldc,
        bool acc) {
  if (M == 0) return;
  const int64_t K = b.size(0), N = b.size(1);
  if constexpr (std::is_same_v<S, float>) {
    if (rows) {
      gemm_rows(M, N, K, a, lda, b.data_ptr<float>(), N, c, ldc, acc);
      return;
    }
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  Tensor A = at::from_blob(const_cast<S*>(a), {M, K}, {lda, 1}, opts);
  Tensor C = at::from_blob(c, {M, N}, {ldc, 1}, opts);
  if (acc) {
    C.addmm_(A, b);
  } else {
    at::mm_out(C, A, b);
  }
}

// v (n) <- (v - mean(v)) / sqrt(var(v) + eps), biased variance (F.layer_norm's); returns
// 1 / sqrt(var + eps).
template <typename S>
S normalise(S* v, int64_t n, S eps) {
  S sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += v[j];
  const S mean = sum / S(n);
  S sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) {
    const S d = v[j] - mean;
    sq += d * d;
  }
  const S rstd = S(1) / std::sqrt(sq / S(n) + eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = (v[j] - mean) * rstd;
  return rstd;
}

// LayerNorm's backward for one row of y = xhat g, xhat = LN(v), rstd = 1 / std: from dy,
// dv = rstd (dy g - mean(dy g) - xhat mean(dy g xhat)). dv may be dy. Not inlined (gcc left
// the reductions scalar when they were inlined into the callers' loops).
template <typename S>
__attribute__((noinline)) void ln_backward(const S* dy, const S* xhat, const S* g, S rstd,
                                           int64_t n, S* dv) {
  S s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    const S v = dy[j] * g[j];
    s1 += v;
    s2 += v * xhat[j];
  }
  const S m1 = s1 / S(n), m2 = s2 / S(n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dv[j] = rstd * (dy[j] * g[j] - m1 - xhat[j] * m2);
}

// Everything one call shares: sizes, parameters and noise as raw pointers.
template <typename S>
struct Problem {
  int64_t B, T, H, G;
  bool ln, train;
  S eps;
  Slots slots;
  const S *bias, *b_hn;   // (G), (H)
  const S *g_ih, *g_hh;   // LN gains (G), or ones
  const S *m_rec, *z_h;   // (B, H) or ones, (B, T, H) or zeros
  const bool* mask;       // (B, T) or nullptr
  bool padded(int64_t b, int64_t t) const { return mask && !mask[b * T + t]; }
};

// consts: zeros (H), then ones (G): what an option that is off multiplies by.
template <typename S>
Problem<S> problem(int64_t B, int64_t T, int64_t H, const std::vector<OptTensor>& params,
                   const std::vector<OptTensor>& noise, const OptTensor& mask,
                   const Tensor& consts, bool reverse, double eps, bool train) {
  Problem<S> q;
  q.B = B;
  q.T = T;
  q.H = H;
  q.G = 3 * H;
  q.ln = present(params[4]);
  q.train = train;
  q.eps = S(eps);
  q.slots = Slots{T, reverse, train};
  const S *zeros = consts.data_ptr<S>(), *ones = zeros + H;
  q.bias = params[2]->data_ptr<S>();
  q.b_hn = params[3]->data_ptr<S>();
  q.g_ih = q.ln ? params[4]->data_ptr<S>() : ones;
  q.g_hh = q.ln ? params[5]->data_ptr<S>() : ones;
  q.m_rec = present(noise[0]) ? noise[0]->data_ptr<S>() : nullptr;
  q.z_h = present(noise[1]) ? noise[1]->data_ptr<S>() : nullptr;
  q.mask = present(mask) ? mask->data_ptr<bool>() : nullptr;
  return q;
}

inline Tensor constants(const Tensor& like, int64_t H) {
  Tensor c = at::zeros({4 * H}, like.options());
  c.narrow(0, H, 3 * H).fill_(1);
  return c;
}

inline void check_contiguous(const char* what, const std::vector<OptTensor>& tensors) {
  for (const OptTensor& t : tensors)
    TORCH_CHECK(!present(t) || t->is_contiguous(), what, " expected contiguous tensors, got "
                "strides ", t->strides());
}

}  // namespace gru_variant
}  // namespace rnnlab_ext
