// The LSTM variants' time loop (rnnlab/nn/variants.py: LayerNorm, projection, peepholes,
// recurrent dropout, zoneout) forward and with hand-written backpropagation through time: the
// compiled fast path of VariantLSTMCell (rnnlab/nn/backends/variant_compiled.py wraps it).
//
// Shape legend: B batch, T time, I input, H cell units, P projection size, R = P if P > 0 else
// H (the width of h), G = 4H (gate rows i, f, g, o).
//
// One step, every option on (the cell's docstring has the same lines):
//   h_in = h * m_rec ;  a = LN(x W_ih^T) g_ih + LN(h_in W_hh^T) g_hh + b
//   i = sigmoid(a_i + p_i c) ; f = sigmoid(a_f + p_f c) ; g = tanh(a_g)
//   c_new = f c + i g ;  o = sigmoid(a_o + p_o c_new)
//   m = o tanh(LN(c_new) g_c + b_c) ;  h_new = m W_hr^T
//   c_t = d_c c + (1 - d_c) c_new ;  h_t = d_h h + (1 - d_h) h_new      (zoneout)
//
// The algorithm is the fused path's (rnnlab/nn/backends/fused.py):
// * forward: x W_ih^T for all steps in one GEMM; then per step one recurrent GEMM, one pass
//   over the gates (with LayerNorm, the normalisation of both products and of c_new inside it,
//   row by row: ln_gate_row), and with a projection a second GEMM and a short pass for zoneout
//   of h. Per step without LayerNorm and with a small W_ih, the recurrent GEMM makes the input
//   projection too ([x_t, h_in] [W_ih, W_hh]^T, see fuse_input), and dW_ih, dW_hh are then
//   one GEMM; with LayerNorm and a small W_ih, x_t W_ih^T is its own per-step GEMM instead
//   (see step_input);
// * the forward keeps the activated gates, the normalised LayerNorm inputs and their 1/std, m
//   (projection) and the states; the backward recomputes only tanh of the cell state;
// * backward, per step: a pass for dh (zoneout), with a projection dm = dh_new W_hr (a GEMM),
//   one pass over the gates (giving the gate gradients and, through the LayerNorms, those of
//   both products), then dL/dh_in = dA_h W_hh (a GEMM). The gradients of b, the LayerNorm
//   gains and biases and the peepholes are summed by each row block as it goes (rows still in
//   cache); dx, dW_ih, dW_hh and dW_hr are single GEMMs over all T*B rows after the loop
//   (per-step input: dW_ih is summed per step).
//
// Threads and GEMMs: batch rows are independent sequences, so (as lstm.cpp) each thread can
// run its own block of rows through every step with single-threaded oneDNN ukernel GEMMs
// (cpublas::brgemm) and never wait for another ("row blocks"). Where the per-step weights
// (W_hh and W_hr) are over 2 MiB (kRowBlockWeightBytes in recurrent.h), each step instead
// makes one GEMM over all rows through ATen (MKL, multi-threaded) and splits its passes over
// the row blocks ("per step"). Measured on the 2-core AVX-512 host (Sapphire Rapids, 2 MiB L2
// per core), one thread, LayerNorm LSTM forward + backward, CPU time: at H = 512 (workload F,
// 4 MiB of W_hh) per step took 580-630 ms where row blocks took 930-990 (per step through
// oneDNN 650-690), at H = 650 (G) 147-155 against 200-216; at H = 128 (A) row blocks 34-35
// ms, per step 36-39. MKL also beat oneDNN on this host at the whole-sequence GEMMs (input
// projection, weight gradients: e.g. 145 against 104 GFLOP/s at (8192, 512) x (512, 2048)),
// so those run through ATen too. float64 (only the gradient checks use it) runs in row blocks
// on one thread, its GEMMs through ATen.
//
// bf16 mode (float32 only): every GEMM takes bf16 operands (the a operand rounded as it is
// written, the weights once), accumulating in float32; parameters, gates, states and every
// elementwise step stay float32. It runs in row blocks, brgemm on bf16 operands (VNNI
// layout, pack_bf16), so R and H must be even; an odd I is handled by a float32 GEMM of the
// same bf16 values for the input projection. The weight gradients and dx come from bf16
// GEMMs with bf16 results, as autograd gives them under autocast.
//
// Layouts: x, out (B, T, .) and the zoneout masks (B, T, .) batch first in real time order;
// inside, time-major (T, B, .) buffers in real time order, and the carried states in the
// slots of recurrent.h (Slots, train layout: the state before time t in slot t, or t + 1 when
// reversed). Padded steps (mask false) carry h and c and output zero; their gates get no
// gradient and the state gradients pass straight through.
//
// This header holds what both halves share (operands, the per-step GEMM, the call's sizes and
// pointers, and the choice of GEMM path); lstm_variant.cpp has the forward,
// lstm_variant_backward.cpp the backward.
#pragma once

#include <type_traits>

#include "recurrent.h"

namespace rnnlab_ext {
namespace lstm_variant {

// dst (K, N), row stride ld <- src (K, N) of any strides (float32/float64), in 32 x 32
// tiles. ATen's copy of a transposed view goes element by element: at workload F (one thread)
// W_hh^T (512, 2048) took 10 ms that way and 1.2 ms in tiles.
template <typename S>
void copy_tiled(const Tensor& src, S* dst, int64_t ld) {
  const int64_t K = src.size(0), N = src.size(1), s0 = src.stride(0), s1 = src.stride(1);
  const S* a = src.data_ptr<S>();
  constexpr int64_t kTile = 32;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    const int64_t k1 = std::min(K, k0 + kTile);
    for (int64_t n0 = 0; n0 < N; n0 += kTile) {
      const int64_t n1 = std::min(N, n0 + kTile);
      for (int64_t k = k0; k < k1; ++k)
        for (int64_t n = n0; n < n1; ++n) dst[k * ld + n] = a[k * s0 + n * s1];
    }
  }
}

// src as a contiguous tensor (copy_tiled where it is not one already).
inline Tensor contiguous_tiled(const Tensor& src) {
  if (src.is_contiguous() || src.dim() != 2) return src.contiguous();
  Tensor out = at::empty(src.sizes(), src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "contiguous_tiled", [&] {
    copy_tiled<scalar_t>(src, out.data_ptr<scalar_t>(), src.size(1));
  });
  return out;
}

// A GEMM's b operand (K, N), prepared once per call: float32/float64 row-major, and in bf16
// mode also the same values in bf16, VNNI-packed for brgemm (K even) or rounded to bf16 and
// kept in float32 (K odd). With `pad` (the per-step MKL/oneDNN GEMMs), rows whose length is
// a multiple of 4 KiB get one cache line more (ld = N + 64 bytes): at workload F (one
// thread, MKL) 128 steps of (64, 320) x (320, 2048) took 96 ms with b's rows 8 KiB apart (its
// K rows on the same few cache sets) and 70 ms padded; of (64, 256) x (256, 2048), beta = 1,
// 81 and 62 ms.
template <typename S>
struct Weight {
  Tensor full, packed;  // (K, N) with row stride ld; bf16 (K/2, N, 2) or undefined
  int64_t K = 0, N = 0, ld = 0;
  Weight() = default;
  Weight(const Tensor& kn, bool bf16, bool pad = false) : K(kn.size(0)), N(kn.size(1)), ld(N) {
    if (pad && !bf16 && (N * int64_t(sizeof(S))) % 4096 == 0) {
      ld = N + 64 / int64_t(sizeof(S));
      full = at::empty({K, ld}, kn.options()).narrow(1, 0, N);
      copy_tiled<S>(kn, full.template data_ptr<S>(), ld);
    } else if (bf16 && could_pack_bf16(K)) {
      packed = pack_bf16(kn);
      full = kn.contiguous();
    } else if (bf16) {
      full = kn.to(at::kBFloat16).to(kn.scalar_type()).contiguous();  // bf16 values in fp32
    } else {
      full = contiguous_tiled(kn);
    }
  }
  bool vnni() const { return packed.defined(); }
};

// How the per-step GEMMs run: in the calling thread (brgemm, the row blocks), or over all rows
// through oneDNN or ATen (MKL), both multi-threaded.
enum GemmKind : int64_t { kRowGemm = 0, kOneDnnGemm = 1, kAtenGemm = 2 };

// c (M, N) (+)= a (M, K) @ b (K, N), row-major, as `kind` says (float64 always through ATen).
// In bf16 mode with a VNNI-packed b, `ab` is a's bf16 copy (same layout) and brgemm runs bf16
// operands.
template <typename S>
void mm(GemmKind kind, int64_t M, const S* a, int64_t lda, const at::BFloat16* ab,
        const Weight<S>& w, S* c, int64_t ldc, bool acc) {
  if (M == 0) return;
  const int64_t N = w.N, K = w.K;
  if constexpr (std::is_same_v<S, float>) {
    if (w.vnni()) {
      gemm_rows(M, N, K, ab, lda, w.packed.template data_ptr<at::BFloat16>(), N, c, ldc, acc);
      return;
    }
    if (kind == kRowGemm) {
      gemm_rows(M, N, K, a, lda, w.full.template data_ptr<float>(), w.ld, c, ldc, acc);
      return;
    }
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  Tensor A = at::from_blob(const_cast<S*>(a), {M, K}, {lda, 1}, opts);
  Tensor C = at::from_blob(c, {M, N}, {ldc, 1}, opts);
  if (kind == kOneDnnGemm && std::is_same_v<S, float>) {
    gemm(A, w.full, C, acc ? 1.0f : 0.0f);
  } else if (acc) {
    C.addmm_(A, w.full);
  } else {
    at::mm_out(C, A, w.full);
  }
}

// dst (n) <- bf16(src) where dst is set (bf16 mode), else nothing.
template <typename S>
inline void shadow(const S* src, at::BFloat16* dst, int64_t n) {
  if (dst) to_bf16(src, dst, n);
}

// Everything one call shares: sizes, options, parameters and noise as raw pointers.
template <typename S>
struct Problem {
  int64_t B, T, H, R, P, G;
  bool ln, proj, reverse;
  S eps;
  Slots slots;
  const S *bias, *g_ih, *g_hh, *g_c, *b_c;  // (G), LN gains (G), (G), (H), (H) or nullptr
  const S *p_i, *p_f, *p_o;                 // peephole rows (H) each, or zeros
  const S *m_rec, *z_c, *z_h;               // (B, R), (B, T, H), (B, T, R) or nullptr
  const bool* mask;                         // (B, T) or nullptr
  const S *zeros, *ones;                    // at least max(H, R) long
  bool plain;  // no LayerNorm, peepholes or zoneout of c: the gate passes' short loops
  bool padded(int64_t b, int64_t t) const { return mask && !mask[b * T + t]; }
};

template <typename S>
Problem<S> problem(const Tensor& x, int64_t H, int64_t R, int64_t P, const Tensor& bias,
                   const OptTensor& ln_ih, const OptTensor& ln_hh, const OptTensor& ln_cw,
                   const OptTensor& ln_cb, const OptTensor& peep, const OptTensor& rec,
                   const OptTensor& zc, const OptTensor& zh, const OptTensor& mask,
                   const Tensor& consts, bool reverse, double eps) {
  Problem<S> q;
  q.B = x.size(0);
  q.T = x.size(1);
  q.H = H;
  q.R = R;
  q.P = P;
  q.G = 4 * H;
  q.ln = ln_ih.has_value() && ln_ih->defined();
  q.proj = P > 0;
  q.reverse = reverse;
  q.eps = S(eps);
  q.slots = Slots{q.T, reverse, true};
  q.bias = bias.data_ptr<S>();
  q.g_ih = ptr<S>(ln_ih);
  q.g_hh = ptr<S>(ln_hh);
  q.g_c = ptr<S>(ln_cw);
  q.b_c = ptr<S>(ln_cb);
  const S* zeros = consts.data_ptr<S>();  // consts: zeros (max(3H, R)), then ones (R)
  const S* p = ptr<S>(peep);
  q.p_i = p ? p : zeros;
  q.p_f = p ? p + H : zeros;
  q.p_o = p ? p + 2 * H : zeros;
  q.m_rec = ptr<S>(rec);
  q.plain = !q.ln && !p && !(zc.has_value() && zc->defined());
  q.z_c = ptr<S>(zc);
  q.z_h = ptr<S>(zh);
  q.mask = mask.has_value() && mask->defined() ? mask->data_ptr<bool>() : nullptr;
  q.zeros = zeros;
  q.ones = zeros + std::max(3 * H, R);
  return q;
}

inline Tensor constants(const Tensor& x, int64_t H, int64_t R) {
  const int64_t nz = std::max(3 * H, R);
  Tensor c = at::zeros({nz + R}, x.options());
  c.narrow(0, nz, R).fill_(1);
  return c;
}

// Row blocks (each thread its rows through every step) or per step (multi-threaded GEMMs),
// see the top: `mode` 1, 2 and 3 force row blocks, per step through oneDNN and per step through
// ATen (the tests run all three); 0 chooses. bf16 mode runs in row blocks (its bf16 ukernel).
inline GemmKind gemm_kind(bool is_float, bool bf16, int64_t H, int64_t R, int64_t P, int64_t mode) {
  if (!is_float || bf16 || mode == 1) return kRowGemm;
  if (mode == 2) return kOneDnnGemm;
  if (mode == 3) return kAtenGemm;
  const int64_t bytes = (4 * H * R + H * P) * int64_t(sizeof(float));
  return bytes <= kRowBlockWeightBytes ? kRowGemm : kAtenGemm;
}

// Whether the per-step GEMM also makes the input projection ("fused input"): acts[t] =
// [x_t, h_in] [W_ih, W_hh]^T, K = I + R, instead of one (T*B, I) x (I, G) GEMM before the loop
// and a per-step GEMM that reads it back (beta = 1); the backward then makes dW_ih and dW_hh
// in one GEMM too. Only per step in float32 without LayerNorm (which normalises the two
// products apart) or bf16, and where W_ih is small next to W_hh (at most kFuseInputBytes): at
// workload F (LSTMP, I = 64, W_ih 512 KiB; one thread) the input projection (K = 64, 114
// GFLOP/s) and the recurrent GEMMs took 27 + 75 ms a sequence, fused 3 + 70 (padded b, see
// Weight), and dW_ih + dW_hh 25 + 58 ms, merged 69; at G (I = 650, 20 rows) W_ih alone is
// 6.8 MB, which each step would stream.
constexpr int64_t kFuseInputBytes = int64_t(1) << 20;

inline bool fuse_input(GemmKind kind, bool ln, bool bf16, int64_t I, int64_t H) {
  return kind != kRowGemm && !ln && !bf16 &&
         4 * H * I * int64_t(sizeof(float)) <= kFuseInputBytes;
}

// With LayerNorm (which keeps the two products apart) under the same conditions otherwise, the
// input projection runs per step instead ("per-step input"): x_t W_ih^T (B, G) is still in
// L2 when the gate pass normalises it, and the backward accumulates dW_ih^T += x_t^T dA_x,t
// while dA_x,t is. At workload F (LayerNorm, one thread) the one (8192, 64) x (64, 2048) GEMM
// took 25 ms and wrote 64 MB that the gate passes read back from memory, 128 per-step ones 20
// ms; dW_ih as one GEMM 27 ms, per step 18.
inline bool step_input(GemmKind kind, bool ln, bool bf16, int64_t I, int64_t H) {
  return kind != kRowGemm && ln && !bf16 && 4 * H * I * int64_t(sizeof(float)) <= kFuseInputBytes;
}

}  // namespace lstm_variant
}  // namespace rnnlab_ext
