// The LSTM variants' time loop, forward (see lstm_variant.h for the algorithm, the threads and
// the layouts; lstm_variant_backward.cpp has the backward).
#include "lstm_variant.h"

namespace rnnlab_ext {
namespace {

using namespace lstm_variant;  // the helpers both halves share

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

}  // namespace rnnlab_ext
