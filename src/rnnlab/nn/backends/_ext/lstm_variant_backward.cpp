// The LSTM variants' time loop, backward: hand-written backpropagation through time (see
// lstm_variant.h for the algorithm, the threads and the layouts; lstm_variant.cpp has the
// forward, whose saved tensors this reads).
#include "lstm_variant.h"

namespace rnnlab_ext {
namespace {

using namespace lstm_variant;  // the helpers both halves share

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
