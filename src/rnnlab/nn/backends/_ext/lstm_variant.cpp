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
#include <type_traits>

#include "recurrent.h"

namespace rnnlab_ext {
namespace {

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
Tensor contiguous_tiled(const Tensor& src) {
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

Tensor constants(const Tensor& x, int64_t H, int64_t R) {
  const int64_t nz = std::max(3 * H, R);
  Tensor c = at::zeros({nz + R}, x.options());
  c.narrow(0, nz, R).fill_(1);
  return c;
}

// The forward's buffers (time-major, real time order) and its steps.
template <typename S>
struct Forward {
  Problem<S> q;
  Weight<S> w_hh_t, w_hr_t;  // (R, G), (H, P)
  S *acts, *xhat, *rstd_x;   // (T, B, G) activated i, f, g, o; LN: normalised x W_ih^T, (T, B)
  S *hhat, *rstd_h;          // LN: normalised h_in W_hh^T (T, B, G), (T, B)
  S *chat, *rstd_c;          // LN: normalised c_new (T, B, H), (T, B)
  S* ms;                     // projection: m (T, B, H)
  S *hs, *cs;                // slots (T+1, B, R), (T+1, B, H)
  S* hin;                    // recurrent dropout: h * m_rec (T, B, R)
  S* cn;                     // zoneout of c: c_new (T, B, H); else c_new is cs' next slot
  S *out, *hnew;             // (B, T, R); projection: this step's m W_hr^T (B, P)
  at::BFloat16 *hb, *mb;     // bf16 mode: copies of the recurrent GEMM's a operand (the
                             // slots, or (T, B, R) with dropout) and of ms
  S* xin;                    // fused input: [x_t, h_in] (T, B, I + R), else nullptr
  Weight<S> w_in_t;          // fused input: [W_ih, W_hh]^T (I + R, G)
  const S* xs;               // per-step input (see step_input): x (T, B, I), else nullptr
  Weight<S> w_ih_t;          // per-step input: W_ih^T (I, G)
  int64_t I;

  // The recurrent GEMM's a operand of time t: h_in (dropout) or the carried h.
  S* h_operand(int64_t t, int64_t p) const {
    return q.m_rec ? hin + t * q.B * q.R : hs + p * q.B * q.R;
  }
  at::BFloat16* h_operand_bf16(int64_t t, int64_t p) const {
    return hb ? hb + (q.m_rec ? t : p) * q.B * q.R : nullptr;
  }

  // h_in = h * m_rec for rows [b0, b1) of step s (recurrent dropout only).
  void dropout_rows(int64_t s, int64_t b0, int64_t b1) const {
    if (!q.m_rec) return;
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), R = q.R;
    for (int64_t b = b0; b < b1; ++b) {
      const S* h = hs + (p * q.B + b) * R;
      const S* m = q.m_rec + b * R;
      S* hi = hin + (t * q.B + b) * R;
#pragma omp simd
      for (int64_t j = 0; j < R; ++j) hi[j] = h[j] * m[j];
      if (hb) shadow(hi, hb + (t * q.B + b) * R, R);
    }
  }

  // Fused input: the h_in part of xin[t] for rows [b0, b1) of step s.
  void stage_rows(int64_t s, int64_t b0, int64_t b1) const {
    if (!xin) return;
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), R = q.R;
    const S* h = h_operand(t, p);
    for (int64_t b = b0; b < b1; ++b)
      std::copy(h + b * R, h + (b + 1) * R, xin + (t * q.B + b) * (I + R) + I);
  }

  // Fused input: acts[t] = [x_t, h_in] [W_ih, W_hh]^T; LN: hhat[t] = h_in W_hh^T; else
  // acts[t] += h_in W_hh^T (acts[t] holds x W_ih^T).
  void recurrent_gemm(int64_t s, int64_t b0, int64_t b1, GemmKind kind) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), B = q.B, R = q.R, G = q.G;
    if (xin) {
      mm<S>(kind, b1 - b0, xin + (t * B + b0) * (I + R), I + R, nullptr, w_in_t,
            acts + (t * B + b0) * G, G, false);
      return;
    }
    const at::BFloat16* ab = h_operand_bf16(t, p);
    mm<S>(kind, b1 - b0, h_operand(t, p) + b0 * R, R, ab ? ab + b0 * R : nullptr, w_hh_t,
          (q.ln ? hhat : acts) + (t * B + b0) * G, G, !q.ln);
  }

  // The gate pass of rows [b0, b1) of step s; without a projection it also finishes h.
  void gate_rows(int64_t s, int64_t b0, int64_t b1) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), n = q.slots.next(s, t);
    const int64_t B = q.B, H = q.H, G = q.G;
    // Locals, not members, inside the simd loops: a store through a float pointer might, for
    // all the compiler knows, change a member pointer, which then cannot be hoisted, and the
    // loop is not vectorised.
    const S *bias = q.bias, *p_i = q.p_i, *p_f = q.p_f, *p_o = q.p_o;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row = t * B + b;
      const S* cp = cs + (p * B + b) * H;
      S* cnext = cs + (n * B + b) * H;
      S* m = q.proj ? ms + row * H : hnew + b * H;  // o tanh(c_hat)
      if (q.padded(b, t)) {
        std::copy(cp, cp + H, cnext);
        std::fill(m, m + H, S(0));  // dW_hr's GEMM reads every row of ms
        if (mb) shadow(m, mb + row * H, H);
        if (!q.proj) finish_h(s, b, m);
        continue;
      }
      S* a = acts + row * G;  // pre-activations in, activated i, f, g, o out
      if (q.plain) {  // the lines below with p = 0 and no LayerNorm or zoneout, in one loop
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const S i = sigmoid(a[j] + bias[j]);
          const S f = sigmoid(a[H + j] + bias[H + j]);
          const S g = std::tanh(a[2 * H + j] + bias[2 * H + j]);
          const S c = f * cp[j] + i * g;
          const S o = sigmoid(a[3 * H + j] + bias[3 * H + j]);
          a[j] = i;
          a[H + j] = f;
          a[2 * H + j] = g;
          a[3 * H + j] = o;
          cnext[j] = c;
          m[j] = o * std::tanh(c);
        }
        if (mb) shadow(m, mb + row * H, H);
        if (!q.proj) finish_h(s, b, m);
        continue;
      }
      S* c_new = cn ? cn + row * H : cnext;
      if (q.ln) {
        ln_gate_row(row, a, cp, c_new, cnext, m, b, t);
        if (mb) shadow(m, mb + row * H, H);
        if (!q.proj) finish_h(s, b, m);
        continue;
      }
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) a[j] += bias[j];
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = sigmoid(a[j] + p_i[j] * cp[j]);
        const S f = sigmoid(a[H + j] + p_f[j] * cp[j]);
        const S g = std::tanh(a[2 * H + j]);
        const S c = f * cp[j] + i * g;
        const S o = sigmoid(a[3 * H + j] + p_o[j] * c);  // o peeks at the new c
        a[j] = i;
        a[H + j] = f;
        a[2 * H + j] = g;
        a[3 * H + j] = o;
        c_new[j] = c;
      }
      if (cn) {  // zoneout: c_t = d_c c + (1 - d_c) c_new
        const S* z = q.z_c + (b * q.T + t) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) cnext[j] = z[j] * cp[j] + (S(1) - z[j]) * c_new[j];
      }
      const S* o = a + 3 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) m[j] = o[j] * std::tanh(c_new[j]);
      if (mb) shadow(m, mb + row * H, H);
      if (!q.proj) finish_h(s, b, m);
    }
  }

  // The gate pass of one row with LayerNorm, in three passes over the row (it stays in L1/L2)
  // instead of one per LayerNorm step: (1) the sums of the input product (x W_ih^T, from the
  // GEMM before the loop) and of the recurrent one, then their squared deviations; (2) both
  // normalised (kept for the backward in place), the gates, c_new and its sum; (3) c_new's
  // squared deviations, then c_hat and m. At workload F (one thread) the input LayerNorm's own
  // pass over all T*B rows beforehand and the separate per-row passes took about 30 ms more
  // a sequence: each row came from memory twice.
  void ln_gate_row(int64_t row, S* a, const S* cp, S* c_new, S* cnext, S* m, int64_t b,
                   int64_t t) const {
    const int64_t H = q.H, G = q.G;
    const S *bias = q.bias, *g_ih = q.g_ih, *g_hh = q.g_hh, *g_c = q.g_c, *b_c = q.b_c;
    const S *p_i = q.p_i, *p_f = q.p_f, *p_o = q.p_o;
    const S eps = q.eps;
    S* xh = xhat + row * G;  // x W_ih^T in, normalised out
    S* hh = hhat + row * G;  // h_in W_hh^T in, normalised out
    S sx = 0, sh = 0;
#pragma omp simd reduction(+ : sx, sh)
    for (int64_t j = 0; j < G; ++j) {
      sx += xh[j];
      sh += hh[j];
    }
    const S mx = sx / S(G), mh = sh / S(G);
    S vx = 0, vh = 0;
#pragma omp simd reduction(+ : vx, vh)
    for (int64_t j = 0; j < G; ++j) {
      const S dx = xh[j] - mx, dh = hh[j] - mh;
      vx += dx * dx;
      vh += dh * dh;
    }
    const S rx = S(1) / std::sqrt(vx / S(G) + eps), rh = S(1) / std::sqrt(vh / S(G) + eps);
    rstd_x[row] = rx;
    rstd_h[row] = rh;
    S sc = 0;
#pragma omp simd reduction(+ : sc)
    for (int64_t j = 0; j < H; ++j) {
      S pre[4];  // the gates' pre-activations a = LN(x W_ih^T) g_ih + LN(h_in W_hh^T) g_hh + b
      for (int k = 0; k < 4; ++k) {
        const int64_t jj = k * H + j;
        const S xn = (xh[jj] - mx) * rx, hn = (hh[jj] - mh) * rh;
        xh[jj] = xn;
        hh[jj] = hn;
        pre[k] = xn * g_ih[jj] + hn * g_hh[jj] + bias[jj];
      }
      const S i = sigmoid(pre[0] + p_i[j] * cp[j]);
      const S f = sigmoid(pre[1] + p_f[j] * cp[j]);
      const S g = std::tanh(pre[2]);
      const S c = f * cp[j] + i * g;
      const S o = sigmoid(pre[3] + p_o[j] * c);  // o peeks at the new c
      a[j] = i;
      a[H + j] = f;
      a[2 * H + j] = g;
      a[3 * H + j] = o;
      c_new[j] = c;
      sc += c;
    }
    if (cn) {  // zoneout: c_t = d_c c + (1 - d_c) c_new
      const S* z = q.z_c + (b * q.T + t) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) cnext[j] = z[j] * cp[j] + (S(1) - z[j]) * c_new[j];
    }
    const S mc = sc / S(H);
    S vc = 0;
#pragma omp simd reduction(+ : vc)
    for (int64_t j = 0; j < H; ++j) {
      const S d = c_new[j] - mc;
      vc += d * d;
    }
    const S rc = S(1) / std::sqrt(vc / S(H) + eps);
    rstd_c[row] = rc;
    S* ch = chat + row * H;
    const S* o = a + 3 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      const S v = (c_new[j] - mc) * rc;
      ch[j] = v;
      m[j] = o[j] * std::tanh(v * g_c[j] + b_c[j]);
    }
  }

  // hnew[b0:b1] = m W_hr^T (projection only).
  void projection_gemm(int64_t s, int64_t b0, int64_t b1, GemmKind kind) const {
    const int64_t t = q.slots.time(s), row = t * q.B + b0, H = q.H, P = q.P;
    mm<S>(kind, b1 - b0, ms + row * H, H, mb ? mb + row * H : nullptr, w_hr_t, hnew + b0 * P,
          P, false);
  }

  void h_rows(int64_t s, int64_t b0, int64_t b1) const {
    for (int64_t b = b0; b < b1; ++b) finish_h(s, b, hnew + b * q.R);
  }

  // Per-step input: xhat[t] = x_t W_ih^T, normalised later by the gate pass.
  void input_gemm(int64_t s, GemmKind kind) const {
    const int64_t t = q.slots.time(s), B = q.B;
    mm<S>(kind, B, xs + t * B * I, I, nullptr, w_ih_t, xhat + t * B * q.G, q.G, false);
  }

  // h_t from h_new (R) of row b: zoneout, then the carried slot and the output.
  void finish_h(int64_t s, int64_t b, const S* h_new) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), n = q.slots.next(s, t);
    const int64_t B = q.B, R = q.R;
    const S* hp = hs + (p * B + b) * R;
    S* hn = hs + (n * B + b) * R;
    S* o = out + (b * q.T + t) * R;
    if (q.padded(b, t)) {
      std::copy(hp, hp + R, hn);
      std::fill(o, o + R, S(0));
    } else if (q.z_h) {
      const S* z = q.z_h + (b * q.T + t) * R;
#pragma omp simd
      for (int64_t j = 0; j < R; ++j) {
        const S h = z[j] * hp[j] + (S(1) - z[j]) * h_new[j];
        hn[j] = h;
        o[j] = h;
      }
    } else {
      std::copy(h_new, h_new + R, hn);
      std::copy(h_new, h_new + R, o);
    }
    if (hb && !q.m_rec) shadow(hn, hb + (n * B + b) * R, R);
  }

  void step(int64_t s, int64_t b0, int64_t b1) const {
    dropout_rows(s, b0, b1);
    recurrent_gemm(s, b0, b1, kRowGemm);
    gate_rows(s, b0, b1);
    if (q.proj) {
      projection_gemm(s, b0, b1, kRowGemm);
      h_rows(s, b0, b1);
    }
  }
};

// Row blocks (each thread its rows through every step) or per step (multi-threaded GEMMs),
// see the top: `mode` 1, 2 and 3 force row blocks, per step through oneDNN and per step through
// ATen (the tests run all three); 0 chooses. bf16 mode runs in row blocks (its bf16 ukernel).
GemmKind gemm_kind(bool is_float, bool bf16, int64_t H, int64_t R, int64_t P, int64_t mode) {
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

bool fuse_input(GemmKind kind, bool ln, bool bf16, int64_t I, int64_t H) {
  return kind != kRowGemm && !ln && !bf16 &&
         4 * H * I * int64_t(sizeof(float)) <= kFuseInputBytes;
}

// With LayerNorm (which keeps the two products apart) under the same conditions otherwise, the
// input projection runs per step instead ("per-step input"): x_t W_ih^T (B, G) is still in
// L2 when the gate pass normalises it, and the backward accumulates dW_ih^T += x_t^T dA_x,t
// while dA_x,t is. At workload F (LayerNorm, one thread) the one (8192, 64) x (64, 2048) GEMM
// took 25 ms and wrote 64 MB that the gate passes read back from memory, 128 per-step ones 20
// ms; dW_ih as one GEMM 27 ms, per step 18.
bool step_input(GemmKind kind, bool ln, bool bf16, int64_t I, int64_t H) {
  return kind != kRowGemm && ln && !bf16 && 4 * H * I * int64_t(sizeof(float)) <= kFuseInputBytes;
}

template <typename S>
std::vector<Tensor> forward_impl(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                 const std::vector<OptTensor>& params,
                                 const std::vector<OptTensor>& noise, const OptTensor& mask,
                                 bool reverse, double eps, bool train, bool bf16, int64_t mode) {
  const Tensor &w_ih = *params[0], &w_hh = *params[1], &bias = *params[2];
  const OptTensor& w_hr = params[3];
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2), H = c0.size(1), R = h0.size(1);
  const int64_t G = 4 * H, P = w_hr.has_value() && w_hr->defined() ? w_hr->size(0) : 0;
  Tensor consts = constants(x, H, R);
  Forward<S> f{};
  f.q = problem<S>(x, H, R, P, bias, params[4], params[5], params[6], params[7], params[8],
                   noise[0], noise[1], noise[2], mask, consts, reverse, eps);
  const Problem<S>& q = f.q;
  const auto opt = x.options();
  const auto opt_b = opt.dtype(at::kBFloat16);
  const GemmKind kind = gemm_kind(std::is_same_v<S, float>, bf16, H, R, P, mode);
  const bool fuse = fuse_input(kind, q.ln, bf16, I, H);
  const bool per_step_input = step_input(kind, q.ln, bf16, I, H);
  if (P) f.w_hr_t = Weight<S>(w_hr->t(), bf16, kind != kRowGemm);
  f.I = I;

  // The input projection of every step, one GEMM: (T*B, I) @ (I, G); fused input: x_t goes
  // into xh[t] instead, for the per-step GEMMs.
  Tensor xh = fuse ? at::empty({T, B, I + R}, opt) : Tensor();  // [x_t, h_in]
  if (fuse) xh.narrow(2, 0, I).copy_(x.transpose(0, 1));
  Tensor xt = fuse ? xh.narrow(2, 0, I) : x.transpose(0, 1).contiguous();  // (T, B, I)
  Tensor ax = at::empty({T, B, G}, opt);  // x W_ih^T (LN: normalised by the gate pass)
  Tensor xt_b;                            // bf16 mode: xt in bf16
  if (fuse) {
    f.w_in_t = Weight<S>(at::cat({w_ih, w_hh}, 1).t(), false, true);
  } else {
    f.w_hh_t = Weight<S>(w_hh.t(), bf16, kind != kRowGemm);
  }
  Weight<S> w_ih_t = fuse ? Weight<S>() : Weight<S>(w_ih.t(), bf16, per_step_input);
  if (fuse || per_step_input) {
    // nothing: the per-step GEMMs make x W_ih^T
  } else if (bf16 && w_ih_t.vnni()) {
    xt_b = xt.to(at::kBFloat16);
    over_blocks(T * B, at::get_num_threads(), [&](int64_t r0, int64_t r1, int64_t) {
      mm<S>(kRowGemm, r1 - r0, nullptr, I, xt_b.data_ptr<at::BFloat16>() + r0 * I, w_ih_t,
            ax.data_ptr<S>() + r0 * G, G, false);
      at::native::cpublas::brgemm_release(true);
    });
  } else {
    Tensor xin = bf16 ? xt.to(at::kBFloat16).to(x.scalar_type()) : xt;
    Tensor ax2 = ax.view({T * B, G});  // ATen (MKL): faster than oneDNN here (see the top)
    at::mm_out(ax2, xin.view({T * B, I}), w_ih_t.full);
  }
  Tensor acts = q.ln ? at::empty({T, B, G}, opt) : ax;
  Tensor rstd_x, hhat, rstd_h, chat, rstd_c;
  if (q.ln) {
    rstd_x = at::empty({T, B}, opt);
    hhat = at::empty({T, B, G}, opt);
    rstd_h = at::empty({T, B}, opt);
    chat = at::empty({T, B, H}, opt);
    rstd_c = at::empty({T, B}, opt);  // ax is normalised row by row in the gate passes
  }
  Tensor ms = P ? at::empty({T, B, H}, opt) : Tensor();
  Tensor hs = at::empty({T + 1, B, R}, opt), cs = at::empty({T + 1, B, H}, opt);
  Tensor hin = q.m_rec ? at::empty({T, B, R}, opt) : Tensor();
  Tensor cn = q.z_c ? at::empty({T, B, H}, opt) : Tensor();
  Tensor out = at::empty({B, T, R}, opt);
  Tensor hnew = at::empty({B, q.proj ? P : H}, opt);
  // bf16 copies of the GEMMs' a operands, where a GEMM runs bf16 (VNNI) operands.
  Tensor hb = bf16 ? at::empty({q.m_rec ? T : T + 1, B, R}, opt_b) : Tensor();
  Tensor mb = bf16 && P ? at::empty({T, B, H}, opt_b) : Tensor();
  const int64_t first = q.slots.prev(0, q.slots.time(0));
  hs[first].copy_(h0);
  cs[first].copy_(c0);
  if (hb.defined() && !q.m_rec) hb[first].copy_(h0);
  f.acts = acts.data_ptr<S>();
  f.xhat = q.ln ? ax.data_ptr<S>() : nullptr;
  f.rstd_x = ptr<S>(rstd_x);
  f.hhat = ptr<S>(hhat);
  f.rstd_h = ptr<S>(rstd_h);
  f.chat = ptr<S>(chat);
  f.rstd_c = ptr<S>(rstd_c);
  f.ms = ptr<S>(ms);
  f.hs = hs.data_ptr<S>();
  f.cs = cs.data_ptr<S>();
  f.hin = ptr<S>(hin);
  f.cn = ptr<S>(cn);
  f.out = out.data_ptr<S>();
  f.hnew = hnew.data_ptr<S>();
  f.hb = ptr<at::BFloat16>(hb);
  f.mb = ptr<at::BFloat16>(mb);
  f.xin = ptr<S>(xh);
  f.xs = per_step_input ? xt.data_ptr<S>() : nullptr;
  if (per_step_input) f.w_ih_t = w_ih_t;
  TORCH_CHECK(!bf16 || (f.w_hh_t.vnni() && (!P || f.w_hr_t.vnni())),
              "lstm_variant: bf16 mode needs an even R and H (a bf16 CPU ukernel), got R = ", R,
              ", H = ", H);

  if (kind == kRowGemm) {
    const int64_t threads = std::is_same_v<S, float> ? at::get_num_threads() : 1;
    over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
      for (int64_t s = 0; s < T; ++s) f.step(s, b0, b1);
    });
  } else {
    const int64_t blocks = row_threads(B, at::get_num_threads());
    for (int64_t s = 0; s < T; ++s) {
      over_blocks(B, blocks, [&](int64_t b0, int64_t b1, int64_t) {
        f.dropout_rows(s, b0, b1);
        f.stage_rows(s, b0, b1);
      });
      f.recurrent_gemm(s, 0, B, kind);
      if (f.xs) f.input_gemm(s, kind);
      over_blocks(B, blocks, [&](int64_t b0, int64_t b1, int64_t) { f.gate_rows(s, b0, b1); });
      if (P) {
        f.projection_gemm(s, 0, B, kind);
        over_blocks(B, blocks, [&](int64_t b0, int64_t b1, int64_t) { f.h_rows(s, b0, b1); });
      }
    }
  }
  const int64_t last = q.slots.next(T - 1, q.slots.time(T - 1));
  Tensor h_n = hs[last].clone(), c_n = cs[last].clone();
  if (!train) return {out, h_n, c_n};
  // What the backward needs (undefined where an option is off), in the order it reads them.
  return {out,  h_n,    c_n,  xt,     acts, q.ln ? ax : Tensor(), rstd_x, hhat, rstd_h,
          chat, rstd_c, ms,   hs,     cs,   hin,                   cn, xh};
}

// The backward's buffers and steps. Per step, going back in time, with dhd (B, R) the
// gradient reaching the carried h directly and dhi (B, R) the one through the last step's
// recurrent GEMM (before the dropout mask):
//   dL/dh_t = dhd + m_rec dhi + dout_t ;  dh_new = dL/dh_t (1 - d_h) ; dhd = dL/dh_t d_h
//   dm = dh_new W_hr (projection) ; gate pass: dA (gates), dA_h (LN of the recurrent product),
//   dL/dc_{t-1} ; dhi = dA_h W_hh
template <typename S>
struct Backward {
  Problem<S> q;
  Weight<S> w_hh, w_hr;  // (G, R), (P, H)
  const S *acts, *hhat, *rstd_h, *chat, *rstd_c, *cs, *cn, *dout;
  const S *xhat, *rstd_x;  // LN: normalised x W_ih^T (T, B, G), (T, B)
  S *da, *dah;  // (T, B, G) dL/d(gate pre-activations), LN: of x W_ih^T; LN: of h_in W_hh^T
  S *dhn, *dm;           // projection: dh_new (T, B, P), dm (B, H); else dh_new (B, H)
  S *dhd, *dhi, *dc;     // (B, R), (B, R), (B, H)
  S *parts, *scratch;    // per block: NP parameter-gradient sums, G + H floats
  at::BFloat16 *dhn_b, *dah_b;  // bf16 mode: copies of dhn and dah
  int64_t NP;
  const S* xs;     // per-step input (see step_input): x (T, B, I), else nullptr
  Tensor dw_ih_t;  // per-step input: dW_ih^T (I, G), summed over the steps

  // Per-step input: dW_ih^T += x_t^T dA_x,t (da[t] just written, still in cache).
  void input_weight_grad(int64_t s) const {
    const int64_t t = q.slots.time(s), B = q.B, G = q.G, I = dw_ih_t.size(0);
    const auto opts = dw_ih_t.options();
    Tensor xt = at::from_blob(const_cast<S*>(xs) + t * B * I, {B, I}, opts);
    Tensor dat = at::from_blob(da + t * B * G, {B, G}, opts);
    const_cast<Tensor&>(dw_ih_t).addmm_(xt.t(), dat);
  }

  // dL/dh_t -> dh_new (into dhn) and what passes straight to h_{t-1} (dhd).
  void h_rows(int64_t s, int64_t b0, int64_t b1) const {
    const int64_t t = q.slots.time(s), B = q.B, R = q.R;
    for (int64_t b = b0; b < b1; ++b) {
      S* dd = dhd + b * R;
      const S* di = dhi + b * R;
      const S* mr = q.m_rec ? q.m_rec + b * R : q.ones;
      S* dn = q.proj ? dhn + (t * B + b) * R : dhn + b * R;
      if (q.padded(b, t)) {
#pragma omp simd
        for (int64_t j = 0; j < R; ++j) {
          dd[j] += mr[j] * di[j];
          dn[j] = S(0);
        }
      } else {
        const S* z = q.z_h ? q.z_h + (b * q.T + t) * R : q.zeros;
        const S* go = dout + (b * q.T + t) * R;
#pragma omp simd
        for (int64_t j = 0; j < R; ++j) {
          const S d = dd[j] + mr[j] * di[j] + go[j];
          dn[j] = d * (S(1) - z[j]);
          dd[j] = d * z[j];
        }
      }
      if (dhn_b) shadow(dn, dhn_b + (t * B + b) * R, R);
    }
  }

  // dm[b0:b1] = dh_new W_hr (projection only).
  void projection_gemm(int64_t s, int64_t b0, int64_t b1, GemmKind kind) const {
    const int64_t row = q.slots.time(s) * q.B + b0, P = q.P;
    mm<S>(kind, b1 - b0, dhn + row * P, P, dhn_b ? dhn_b + row * P : nullptr, w_hr,
          dm + b0 * q.H, q.H, false);
  }

  void gate_rows(int64_t s, int64_t b0, int64_t b1, int64_t block) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), n = q.slots.next(s, t);
    const int64_t B = q.B, H = q.H, G = q.G;
    S* part = parts + block * NP;
    S *db = part, *dp = part + 2 * G;  // the layout: ln_gate_row
    S* u = scratch + block * (G + H);
    const S *p_i = q.p_i, *p_f = q.p_f, *p_o = q.p_o;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row = t * B + b;
      S* d = da + row * G;
      if (q.padded(b, t)) {  // no gate gradient; dL/dc passes on unchanged
        std::fill(d, d + G, S(0));
        if (q.ln) std::fill(dah + row * G, dah + row * G + G, S(0));
        if (dah_b) std::fill(dah_b + row * G, dah_b + row * G + G, at::BFloat16(0.0f));
        continue;
      }
      const S* a = acts + row * G;
      const S* dmr = q.proj ? dm + b * H : dhn + b * H;
      const S* cp = cs + (p * B + b) * H;
      const S* c_new = cn ? cn + row * H : cs + (n * B + b) * H;
      const S* z = q.z_c ? q.z_c + (b * q.T + t) * H : q.zeros;
      S* dcr = dc + b * H;
      if (q.plain) {  // the lines below with p = 0, z = 0 and no LayerNorm, in one loop
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const S tc = std::tanh(c_new[j]);
          const S i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
          const S da_o = dmr[j] * tc * o * (S(1) - o);
          const S dcn = dmr[j] * o * (S(1) - tc * tc) + dcr[j];  // dL/dc_new
          const S da_i = dcn * g * i * (S(1) - i);
          const S da_f = dcn * cp[j] * f * (S(1) - f);
          const S da_g = dcn * i * (S(1) - g * g);
          dcr[j] = dcn * f;  // dL/dc_{t-1}
          d[j] = da_i;
          d[H + j] = da_f;
          d[2 * H + j] = da_g;
          d[3 * H + j] = da_o;
          db[j] += da_i;
          db[H + j] += da_f;
          db[2 * H + j] += da_g;
          db[3 * H + j] += da_o;
        }
        if (dah_b) shadow(d, dah_b + row * G, G);  // dah is da without LayerNorm
        continue;
      }
      if (q.ln) {
        ln_gate_row(row, a, dmr, cp, c_new, z, dcr, part, u);
        if (dah_b) shadow(dah + row * G, dah_b + row * G, G);
        continue;
      }
      // m = o tanh(c_new): d[3H + j] = dL/do for now, u = dL/dc_new through m.
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S tc = std::tanh(c_new[j]);
        const S o = a[3 * H + j];
        d[3 * H + j] = dmr[j] * tc;
        u[j] = dmr[j] * o * (S(1) - tc * tc);
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
        const S da_o = d[3 * H + j] * o * (S(1) - o);
        const S dcc = dcr[j];  // dL/dc_t
        const S dcn = u[j] + da_o * p_o[j] + dcc * (S(1) - z[j]);  // dL/dc_new
        const S da_i = dcn * g * i * (S(1) - i);
        const S da_f = dcn * cp[j] * f * (S(1) - f);
        const S da_g = dcn * i * (S(1) - g * g);
        dcr[j] = dcc * z[j] + dcn * f + da_i * p_i[j] + da_f * p_f[j];  // dL/dc_{t-1}
        dp[j] += da_i * cp[j];
        dp[H + j] += da_f * cp[j];
        dp[2 * H + j] += da_o * c_new[j];
        d[j] = da_i;
        d[H + j] = da_f;
        d[2 * H + j] = da_g;
        d[3 * H + j] = da_o;
      }
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) db[j] += d[j];
      if (dah_b) shadow(dah + row * G, dah_b + row * G, G);
    }
  }

  // The gate backward of one row with LayerNorm, in three passes over the row: (1) dL/dc_hat
  // and the sums of c's LayerNorm backward; (2) dL/dc_new through that LayerNorm, the gate
  // gradients dA (into the block's scratch, w; it stays in L1), the parameter sums and the
  // sums of both gate LayerNorms' backward; (3) dA_x = dL/d(x W_ih^T) into da and dA_h =
  // dL/d(h_in W_hh^T) into dah. LayerNorm's backward: with y = xhat g, xhat = (v - mean) rstd,
  // dv = rstd (dy g - mean(dy g) - xhat mean(dy g xhat)). At workload F (one thread) this
  // replaced a pass per LayerNorm step and the input LayerNorm's backward over all T*B rows
  // after the loop (da and xhat read from memory once more).
  void ln_gate_row(int64_t row, const S* a, const S* dmr, const S* cp, const S* c_new,
                   const S* z, S* dcr, S* part, S* w) const {
    const int64_t H = q.H, G = q.G;
    S *db = part, *dg_hh = part + G, *dp = part + 2 * G, *dg_c = dp + 3 * H, *db_c = dg_c + H;
    S* dg_ih = db_c + H;
    const S *g_ih = q.g_ih, *g_hh = q.g_hh, *g_c = q.g_c, *b_c = q.b_c;
    const S *p_i = q.p_i, *p_f = q.p_f, *p_o = q.p_o;
    const S* ch = chat + row * H;
    const S* xh = xhat + row * G;
    const S* hh = hhat + row * G;
    S* u = w + G;  // dL/dc_hat (H)
    // m = o tanh(c_hat g_c + b_c): w[3H + j] = dL/do for now.
    S s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t j = 0; j < H; ++j) {
      const S tc = std::tanh(ch[j] * g_c[j] + b_c[j]);
      const S o = a[3 * H + j];
      w[3 * H + j] = dmr[j] * tc;
      const S dchat = dmr[j] * o * (S(1) - tc * tc);
      dg_c[j] += dchat * ch[j];
      db_c[j] += dchat;
      u[j] = dchat;
      const S v = dchat * g_c[j];
      s1 += v;
      s2 += v * ch[j];
    }
    const S rc = rstd_c[row], m1 = s1 / S(H), m2 = s2 / S(H);
    S t1h = 0, t2h = 0, t1x = 0, t2x = 0;
#pragma omp simd reduction(+ : t1h, t2h, t1x, t2x)
    for (int64_t j = 0; j < H; ++j) {
      const S i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
      const S du = rc * (u[j] * g_c[j] - m1 - ch[j] * m2);  // dL/dc_new through c_hat
      const S da_o = w[3 * H + j] * o * (S(1) - o);
      const S dcc = dcr[j];  // dL/dc_t
      const S dcn = du + da_o * p_o[j] + dcc * (S(1) - z[j]);  // dL/dc_new
      const S da_i = dcn * g * i * (S(1) - i);
      const S da_f = dcn * cp[j] * f * (S(1) - f);
      const S da_g = dcn * i * (S(1) - g * g);
      dcr[j] = dcc * z[j] + dcn * f + da_i * p_i[j] + da_f * p_f[j];  // dL/dc_{t-1}
      dp[j] += da_i * cp[j];
      dp[H + j] += da_f * cp[j];
      dp[2 * H + j] += da_o * c_new[j];
      const S dk[4] = {da_i, da_f, da_g, da_o};
      for (int k = 0; k < 4; ++k) {
        const int64_t jj = k * H + j;
        const S d = dk[k];
        w[jj] = d;
        db[jj] += d;
        dg_hh[jj] += d * hh[jj];
        dg_ih[jj] += d * xh[jj];
        const S vh = d * g_hh[jj], vx = d * g_ih[jj];
        t1h += vh;
        t2h += vh * hh[jj];
        t1x += vx;
        t2x += vx * xh[jj];
      }
    }
    const S rh = rstd_h[row], m1h = t1h / S(G), m2h = t2h / S(G);
    const S rx = rstd_x[row], m1x = t1x / S(G), m2x = t2x / S(G);
    S* dh = dah + row * G;
    S* dx = da + row * G;
#pragma omp simd
    for (int64_t j = 0; j < G; ++j) {
      dh[j] = rh * (w[j] * g_hh[j] - m1h - hh[j] * m2h);
      dx[j] = rx * (w[j] * g_ih[j] - m1x - xh[j] * m2x);
    }
  }

  // dhi[b0:b1] = dA_h W_hh.
  void recurrent_gemm(int64_t s, int64_t b0, int64_t b1, GemmKind kind) const {
    const int64_t row = q.slots.time(s) * q.B + b0, G = q.G;
    mm<S>(kind, b1 - b0, dah + row * G, G, dah_b ? dah_b + row * G : nullptr, w_hh,
          dhi + b0 * q.R, q.R, false);
  }

  void step(int64_t s, int64_t b0, int64_t b1, int64_t block) const {
    h_rows(s, b0, b1);
    if (q.proj) projection_gemm(s, b0, b1, kRowGemm);
    gate_rows(s, b0, b1, block);
    recurrent_gemm(s, b0, b1, kRowGemm);
  }
};

// a^T @ b (M, N) over all rows (weight gradients), in bf16 when `bf16` (as autograd gives
// them). Where N < M, MKL ran it faster as (b^T a)^T: at workload F (T*B = 8192 rows),
// dW_ih (2048, 64) took 27 ms instead of 39, dW_hh (2048, 256) 65 instead of 73; dW_hr (256,
// 512) the other way round, 16 instead of 18.
Tensor weight_grad(const Tensor& a, const Tensor& b, bool bf16) {
  if (bf16) return product(a.t().to(at::kBFloat16), b.to(at::kBFloat16)).to(at::kFloat);
  if (b.size(1) < a.size(1)) return contiguous_tiled(at::mm(b.t(), a).t());
  return at::mm(a.t(), b);
}

template <typename S>
std::vector<Tensor> backward_impl(const Tensor& dout_, const Tensor& dh_n, const Tensor& dc_n,
                                  const std::vector<OptTensor>& saved,
                                  const std::vector<OptTensor>& params,
                                  const std::vector<OptTensor>& noise, const OptTensor& mask,
                                  bool reverse, double eps, bool need_dx, bool bf16,
                                  int64_t mode) {
  const Tensor &xt = *saved[0], &acts = *saved[1];
  auto get = [&](size_t k) { return saved[k].has_value() ? *saved[k] : Tensor(); };
  const Tensor xhat = get(2), rstd_x = get(3), hhat = get(4), rstd_h = get(5), chat = get(6);
  const Tensor rstd_c = get(7), ms = get(8), hs = get(9), cs = get(10), hin = get(11);
  const Tensor cn = get(12), xh = get(13);  // xh: fused input (see fuse_input)
  const Tensor &w_ih = *params[0], &w_hh = *params[1], &bias = *params[2];
  const OptTensor& w_hr = params[3];
  const int64_t T = acts.size(0), B = acts.size(1), G = acts.size(2), H = G / 4;
  const int64_t I = xt.size(2), R = hs.size(2);
  const int64_t P = w_hr.has_value() && w_hr->defined() ? w_hr->size(0) : 0;
  const auto opt = acts.options();
  const auto opt_b = opt.dtype(at::kBFloat16);
  Tensor x_shape = at::empty({B, T, 0}, opt);  // problem() reads B and T from it
  Tensor consts = constants(acts, H, R);
  Backward<S> k{};
  k.q = problem<S>(x_shape, H, R, P, bias, params[4], params[5], params[6], params[7],
                   params[8], noise[0], noise[1], noise[2], mask, consts, reverse, eps);
  const Problem<S>& q = k.q;
  const GemmKind kind = gemm_kind(std::is_same_v<S, float>, bf16, H, R, P, mode);
  const bool rows = kind == kRowGemm;
  const bool per_step_input = step_input(kind, q.ln, bf16, I, H);
  const int64_t threads = std::is_same_v<S, float> ? at::get_num_threads() : 1;
  const int64_t blocks = rows ? row_threads(B, threads) : row_threads(B, at::get_num_threads());
  k.w_hh = Weight<S>(w_hh, bf16, !rows);
  if (P) k.w_hr = Weight<S>(*w_hr, bf16, !rows);

  Tensor dout = dout_.contiguous();  // (B, T, R)
  Tensor da = at::empty({T, B, G}, opt);
  Tensor dah = q.ln ? at::empty({T, B, G}, opt) : da;
  Tensor dhn = P ? at::empty({T, B, P}, opt) : at::empty({B, H}, opt);
  Tensor dm = P ? at::empty({B, H}, opt) : Tensor();
  Tensor dhd = dh_n.contiguous().clone(), dhi = at::zeros({B, R}, opt);
  Tensor dc = dc_n.contiguous().clone();
  k.NP = 3 * G + 5 * H;  // db, dg_hh, peepholes (3H), dg_c, db_c, dg_ih
  Tensor parts = at::zeros({blocks, k.NP}, opt), scratch = at::empty({blocks, G + H}, opt);
  Tensor dhn_b = P && k.w_hr.vnni() ? at::empty({T, B, P}, opt_b) : Tensor();
  Tensor dah_b = bf16 ? at::empty({T, B, G}, opt_b) : Tensor();
  k.acts = acts.data_ptr<S>();
  k.hhat = ptr<S>(hhat);
  k.xhat = ptr<S>(xhat);
  k.rstd_x = ptr<S>(rstd_x);
  k.rstd_h = ptr<S>(rstd_h);
  k.chat = ptr<S>(chat);
  k.rstd_c = ptr<S>(rstd_c);
  k.cs = cs.data_ptr<S>();
  k.cn = ptr<S>(cn);
  k.dout = dout.data_ptr<S>();
  k.da = da.data_ptr<S>();
  k.dah = dah.data_ptr<S>();
  k.dhn = dhn.data_ptr<S>();
  k.dm = ptr<S>(dm);
  k.dhd = dhd.data_ptr<S>();
  k.dhi = dhi.data_ptr<S>();
  k.dc = dc.data_ptr<S>();
  k.parts = parts.data_ptr<S>();
  k.scratch = scratch.data_ptr<S>();
  k.dhn_b = ptr<at::BFloat16>(dhn_b);
  k.dah_b = ptr<at::BFloat16>(dah_b);
  k.xs = per_step_input ? xt.data_ptr<S>() : nullptr;
  if (per_step_input) k.dw_ih_t = at::zeros({I, G}, opt);

  if (rows) {
    over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
      const int64_t block = omp_get_thread_num();
      for (int64_t s = T - 1; s >= 0; --s) k.step(s, b0, b1, block);
    });
  } else {
    for (int64_t s = T - 1; s >= 0; --s) {
      over_blocks(B, blocks, [&](int64_t b0, int64_t b1, int64_t) { k.h_rows(s, b0, b1); });
      if (P) k.projection_gemm(s, 0, B, kind);
      over_blocks(B, blocks,
                  [&](int64_t b0, int64_t b1, int64_t blk) { k.gate_rows(s, b0, b1, blk); });
      if (k.xs) k.input_weight_grad(s);
      k.recurrent_gemm(s, 0, B, kind);
    }
  }
  Tensor dh0 = q.m_rec ? dhd.add_(dhi.mul_(*noise[0])) : dhd.add_(dhi);
  Tensor sums = parts.sum(0);
  Tensor db = sums.narrow(0, 0, G);
  Tensor dg_hh, dg_c, db_c, dg_ih, dpeep;
  if (q.ln) {
    dg_hh = sums.narrow(0, G, G);
    dg_c = sums.narrow(0, 2 * G + 3 * H, H);
    db_c = sums.narrow(0, 2 * G + 4 * H, H);
    dg_ih = sums.narrow(0, 2 * G + 5 * H, G);  // da holds dL/d(x W_ih^T) (the gate passes)
  }
  if (params[8].has_value() && params[8]->defined()) dpeep = sums.narrow(0, 2 * G, 3 * H);
  // The weight gradients and dx: one GEMM each over all T*B rows (time order on both sides).
  Tensor flat = da.view({T * B, G});
  Tensor h_prev = q.m_rec ? hin : hs.narrow(0, reverse ? 1 : 0, T);  // (T, B, R) the GEMMs' h_in
  Tensor dx;
  if (need_dx) {
    dx = bf16 ? product(flat.to(at::kBFloat16), w_ih.to(at::kBFloat16)).to(at::kFloat)
              : at::mm(flat, w_ih);
    dx = dx.view({T, B, I}).transpose(0, 1);  // (B, T, I)
  }
  Tensor dw_ih, dw_hh;
  if (xh.defined()) {  // fused input (no LN: dah is da): [dW_ih, dW_hh] in one GEMM, K = T*B
    Tensor dw_in = at::mm(xh.view({T * B, I + R}).t(), flat);  // (I + R, G)
    dw_ih = contiguous_tiled(dw_in.narrow(0, 0, I).t());  // (G, I)
    dw_hh = contiguous_tiled(dw_in.narrow(0, I, R).t());  // (G, R)
  } else if (per_step_input) {
    dw_ih = contiguous_tiled(k.dw_ih_t.t());  // (G, I)
    dw_hh = weight_grad(dah.view({T * B, G}), h_prev.reshape({T * B, R}), bf16);  // (G, R)
  } else {
    dw_ih = weight_grad(flat, xt.view({T * B, I}), bf16);                               // (G, I)
    dw_hh = weight_grad(dah.view({T * B, G}), h_prev.reshape({T * B, R}), bf16);  // (G, R)
  }
  Tensor dw_hr = P ? weight_grad(dhn.view({T * B, P}), ms.view({T * B, H}), bf16) : Tensor();
  return {dx, dh0, dc, dw_ih, dw_hh, db, dw_hr, dg_ih, dg_hh, dg_c, db_c, dpeep};
}

}  // namespace

// Returns {out (B, T, R), h_n (B, R), c_n (B, H)} and, when training, what
// lstm_variant_backward reads (see forward_impl). params: w_ih, w_hh, bias, w_hr, ln_ih_weight,
// ln_hh_weight, ln_c_weight, ln_c_bias, peephole (None where the cell has none); noise:
// recurrent (B, R), zone_c (B, T, H), zone_h (B, T, R) or None.
std::vector<Tensor> lstm_variant_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                         const std::vector<OptTensor>& params,
                                         const std::vector<OptTensor>& noise,
                                         const OptTensor& mask, bool reverse, double eps,
                                         bool train, bool bf16, int64_t mode) {
  TORCH_CHECK(params.size() == 9 && noise.size() == 3,
              "lstm_variant_forward expected 9 parameters and 3 masks, got ", params.size(),
              " and ", noise.size());
  TORCH_CHECK(!bf16 || x.scalar_type() == at::kFloat, "bf16 mode needs float32, got ",
              x.scalar_type());
  // The kernel reads these through raw pointers.
  for (const OptTensor& t : {OptTensor(x), OptTensor(h0), OptTensor(c0), mask})
    TORCH_CHECK(!t.has_value() || t->is_contiguous(), "lstm_variant_forward expected contiguous "
                "inputs, got strides ", t->strides());
  for (const auto& list : {params, noise})
    for (const OptTensor& t : list)
      TORCH_CHECK(!t.has_value() || t->is_contiguous(), "lstm_variant_forward expected "
                  "contiguous parameters and masks, got strides ", t->strides());
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_variant_forward", [&] {
    result = forward_impl<scalar_t>(x, h0, c0, params, noise, mask, reverse, eps, train, bf16,
                                    mode);
  });
  return result;
}

// Returns {dx (B, T, I) or None, dh0, dc0, dW_ih, dW_hh, db, dW_hr, dln_ih, dln_hh, dln_c_weight,
// dln_c_bias, dpeephole} (None where the cell has no such parameter).
std::vector<Tensor> lstm_variant_backward(const Tensor& dout, const Tensor& dh_n,
                                          const Tensor& dc_n,
                                          const std::vector<OptTensor>& saved,
                                          const std::vector<OptTensor>& params,
                                          const std::vector<OptTensor>& noise,
                                          const OptTensor& mask, bool reverse, double eps,
                                          bool need_dx, bool bf16, int64_t mode) {
  TORCH_CHECK(saved.size() == 14 && params.size() == 9 && noise.size() == 3,
              "lstm_variant_backward expected 14 saved tensors, 9 parameters and 3 masks, got ",
              saved.size(), ", ", params.size(), " and ", noise.size());
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(saved[1]->scalar_type(), "lstm_variant_backward", [&] {
    result = backward_impl<scalar_t>(dout, dh_n, dc_n, saved, params, noise, mask, reverse, eps,
                                     need_dx, bf16, mode);
  });
  return result;
}

}  // namespace rnnlab_ext
