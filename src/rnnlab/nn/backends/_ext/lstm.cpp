// LSTM training kernels: the forward (keeping what the backward needs) and hand-written BPTT.
// LSTM: gate rows i, f, g, o; c_t = f c_{t-1} + i g, h_t = o tanh(c_t).
#include "recurrent.h"

namespace rnnlab_ext {

// bias (4H) or nullptr: added to the pre-activations here (the row-block paths leave it out of
// their GEMMs). bf16 mode (rec != nullptr): rec (B, 4H) is h_{t-1} W_hh^T from a bf16 GEMM,
// added here in fp32, and hb_next receives a bf16 copy of h_t, the next step's GEMM operand. The
// gate arithmetic and c stay in T (float).
template <typename T>
void lstm_forward_step(T* gates, const T* h_prev, const T* c_prev, T* h_next, T* c_next, T* out,
                       const bool* mask, int64_t t, int64_t Tn, int64_t B, int64_t H,
                       const T* bias = nullptr, const at::BFloat16* rec = nullptr,
                       at::BFloat16* hb_next = nullptr, int64_t r0 = 0, int64_t r1 = -1) {
  run_rows(B, r0, r1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* a = gates + b * 4 * H;  // (4H,) pre-activations in, activations out
      if (bias) {
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; ++j) a[j] += bias[j];
      }
      if (rec) {
        const at::BFloat16* r = rec + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; ++j) a[j] += static_cast<float>(r[j]);
      }
      const T* cp = c_prev + b * H;
      const T* hp = h_prev + b * H;
      T* cn = c_next + b * H;
      T* hn = h_next + b * H;
      T* o_bt = out + (b * Tn + t) * H;
      at::BFloat16* hb = hb_next ? hb_next + b * H : nullptr;
      if (mask && !mask[b * Tn + t]) {  // padded: carry the state, output zero
        for (int64_t j = 0; j < H; ++j) {
          cn[j] = cp[j];
          hn[j] = hp[j];
          o_bt[j] = T(0);
        }
        if (hb) to_bf16(hp, hb, H);
        continue;
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T i = sigmoid(a[j]), f = sigmoid(a[H + j]);
        const T g = std::tanh(a[2 * H + j]), o = sigmoid(a[3 * H + j]);
        a[j] = i;
        a[H + j] = f;
        a[2 * H + j] = g;
        a[3 * H + j] = o;
        const T c = f * cp[j] + i * g;
        const T h = o * std::tanh(c);
        cn[j] = c;
        hn[j] = h;
        o_bt[j] = h;
      }
      if (hb) to_bf16(hn, hb, H);
    }
  });
}

// Returns {out (B, T, H), h_n, c_n, gates, hs, cs, xt}; the last four only when training.
// bf16 mode (float32 only): every GEMM takes bf16 operands (x, h and the weights rounded to
// bf16); gates, c, h and the outputs stay float32. Then hs and xt come back as bf16, the
// operands the backward's weight-gradient GEMMs need, except an xt of small_inputs width, which
// no GEMM reads (add_inputs in fp32 here, gather_inputs in the backward).
std::vector<Tensor> lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                 const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias,
                                 const c10::optional<Tensor>& mask, bool reverse, bool train,
                                 bool bf16) {
  TORCH_CHECK(!bf16 || x.scalar_type() == at::kFloat, "bf16 mode needs float32, got ",
              x.scalar_type());
  const int64_t B = x.size(0), Tn = x.size(1), H = h0.size(1);
  const Slots slots{Tn, reverse, train};
  Tensor xt = x.transpose(0, 1).contiguous();  // (T, B, I)
  const int64_t S = train ? Tn + 1 : 2;
  Tensor hs = at::empty({S, B, H}, x.options());
  Tensor cs = at::empty({S, B, H}, x.options());
  Tensor out = at::empty({B, Tn, H}, x.options());
  Tensor gates, w_hh_t, hb, rec;  // hb (S, B, H) bf16 states, rec (B, 4H) bf16 h W_hh^T
  // The row-block paths below compute each step's x_t W_ih^T into gates[t] themselves (one
  // more GEMM per step, on rows already in cache) and add the bias in the gate pass: no
  // separate pass over (T, B, 4H) to broadcast the bias, and no whole-sequence GEMM.
  const bool rows_fp32 = x.scalar_type() == at::kFloat && !bf16 && rows_fit(H);
  const bool rows_bf16 = bf16 && could_pack_bf16(H);
  const int64_t I = xt.size(2);
  // x_small: x_t W_ih^T added to the gate rows in fp32, no GEMM (add_inputs); else x_bf16: a
  // bf16 GEMM where I packs, else a float32 GEMM
  const bool x_small = (rows_fp32 || rows_bf16) && small_inputs(I);
  const bool x_bf16 = rows_bf16 && !x_small && could_pack_bf16(I);
  if (rows_fp32 || rows_bf16) {
    gates = at::empty({Tn, B, 4 * H}, x.options());
    if (bf16) {
      if (x_bf16) xt = xt.to(at::kBFloat16);
      hb = at::empty({S, B, H}, x.options().dtype(at::kBFloat16));
      hb[slots.prev(0, slots.time(0))].copy_(h0);
    }
  } else if (bf16) {
    xt = xt.to(at::kBFloat16);
    Tensor proj = product(xt.view({Tn * B, -1}), w_ih.to(at::kBFloat16).t());  // (T*B, 4H)
    gates = at::add(proj.view({Tn, B, 4 * H}), bias);  // float32: type promotion
    w_hh_t = w_hh.to(at::kBFloat16).t();
    hb = at::empty({S, B, H}, xt.options());
    hb[slots.prev(0, slots.time(0))].copy_(h0);
    rec = at::empty({B, 4 * H}, xt.options());
  } else {
    gates = input_projection(xt, w_ih, bias);  // (T, B, 4H)
    w_hh_t = w_hh.t();                        // (H, 4H)
  }
  hs[slots.prev(0, slots.time(0))].copy_(h0);
  cs[slots.prev(0, slots.time(0))].copy_(c0);
  const bool* m = mask_data(mask);
  if (rows_fp32 || rows_bf16) {  // each thread runs its rows through all steps
    // Operands: x_t and W_ih in bf16 where I packs (x_bf16), h and W_hh in bf16 in bf16 mode;
    // the gates accumulate in fp32 either way.
    Tensor wi = x_bf16 ? pack_bf16(w_ih.t()) : w_ih.t().contiguous();     // (I, 4H)
    Tensor wh = rows_bf16 ? pack_bf16(w_hh.t()) : w_hh.t().contiguous();  // (H, 4H)
    const Operand xo(xt), wio(wi), ho(rows_bf16 ? hb : hs), who(wh);
    const float *bp = bias.data_ptr<float>(), *xp = x_small ? xt.data_ptr<float>() : nullptr;
    const float* wip = x_small ? wi.data_ptr<float>() : nullptr;  // W_ih^T (I, 4H) float32
    at::BFloat16* hbp = rows_bf16 ? hb.data_ptr<at::BFloat16>() : nullptr;
    float *g = gates.data_ptr<float>(), *hp = hs.data_ptr<float>(), *cp = cs.data_ptr<float>();
    float* o = out.data_ptr<float>();
    over_row_blocks(B, at::get_num_threads(), [&](int64_t b0, int64_t b1) {
      for (int64_t s = 0; s < Tn; ++s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        float* gt = g + (t * B + b0) * 4 * H;
        if (!x_small) {
          gemm_rows(b1 - b0, 4 * H, I, xo, (t * B + b0) * I, I, wio, 4 * H, gt, 4 * H,
                    false);  // gates[t] = x_t W_ih^T
        }
        gemm_rows(b1 - b0, 4 * H, H, ho, (p * B + b0) * H, H, who, 4 * H, gt, 4 * H,
                  !x_small);  // gates[t] (+)= h_{t-1} W_hh^T
        if (x_small) {
          for (int64_t b = b0; b < b1; ++b) {  // gates[t] += x_t W_ih^T, row by row
            add_inputs(gt + (b - b0) * 4 * H, xp + (t * B + b) * I, wip, I, 4 * H);
          }
        }
        lstm_forward_step<float>(g + t * B * 4 * H, hp + p * B * H, cp + p * B * H,
                                 hp + n * B * H, cp + n * B * H, o, m, t, Tn, B, H, bp, nullptr,
                                 hbp ? hbp + n * B * H : nullptr, b0, b1);
      }
    });
  } else AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward", [&] {
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
      if (bf16) {
        gemm(hb[p], w_hh_t, rec, 0.0f);  // rec = h_{t-1} W_hh^T, added by the gate pass
      } else {
        gemm(hs[p], w_hh_t, gates[t], 1.0f);  // gates[t] += h_{t-1} W_hh^T
      }
      lstm_forward_step<scalar_t>(
          gates[t].data_ptr<scalar_t>(), hs[p].data_ptr<scalar_t>(), cs[p].data_ptr<scalar_t>(),
          hs[n].data_ptr<scalar_t>(), cs[n].data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), m, t,
          Tn, B, H, nullptr, bf16 ? rec.data_ptr<at::BFloat16>() : nullptr,
          bf16 ? hb[n].data_ptr<at::BFloat16>() : nullptr);
    }
  });
  const int64_t last = slots.next(Tn - 1, slots.time(Tn - 1));
  Tensor h_n = hs[last].clone(), c_n = cs[last].clone();
  if (!train) return {out, h_n, c_n};
  if (bf16 && !x_small) return {out, h_n, c_n, gates, hb, cs, xt.to(at::kBFloat16)};
  if (bf16) return {out, h_n, c_n, gates, hb, cs, xt};  // x stays float32: add_inputs read it
  return {out, h_n, c_n, gates, hs, cs, xt};
}

// bf16 mode: rec (B, H) is the previous (later-in-time) step's dpre W_hh from a bf16 GEMM, added
// to dh here in fp32, and dpre_b receives a bf16 copy of dpre for the GEMMs.
template <typename T>
void lstm_backward_step(const T* acts, const T* c_prev, const T* c_next, const T* dout, T* dpre,
                        T* dh, T* dc, const bool* mask, int64_t t, int64_t Tn, int64_t B,
                        int64_t H, const at::BFloat16* rec = nullptr,
                        at::BFloat16* dpre_b = nullptr, int64_t r0 = 0, int64_t r1 = -1) {
  run_rows(B, r0, r1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      if (rec) {
        const at::BFloat16* r = rec + b * H;
        T* dhb = dh + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dhb[j] += static_cast<float>(r[j]);
      }
      at::BFloat16* db = dpre_b ? dpre_b + b * 4 * H : nullptr;
      const T* a = acts + b * 4 * H;
      const T* cp = c_prev + b * H;
      const T* cn = c_next + b * H;
      const T* do_bt = dout + (b * Tn + t) * H;
      T* d = dpre + b * 4 * H;
      T* dhb = dh + b * H;  // in: dL/dh_t; out: what the GEMM with W_hh adds to (dL/dh_{t-1})
      T* dcb = dc + b * H;  // in: dL/dc_t; out: dL/dc_{t-1}
      if (mask && !mask[b * Tn + t]) {  // padded: no gate gradient, state gradients pass on
        for (int64_t j = 0; j < 4 * H; ++j) d[j] = T(0);
        if (db)
          for (int64_t j = 0; j < 4 * H; ++j) db[j] = at::BFloat16(0.0f);
        continue;
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
        const T dh_t = dhb[j] + do_bt[j];
        const T tc = std::tanh(cn[j]);
        const T dc_t = dcb[j] + dh_t * o * (T(1) - tc * tc);
        d[j] = dc_t * g * i * (T(1) - i);
        d[H + j] = dc_t * cp[j] * f * (T(1) - f);
        d[2 * H + j] = dc_t * i * (T(1) - g * g);
        d[3 * H + j] = dh_t * tc * o * (T(1) - o);
        dcb[j] = dc_t * f;
        dhb[j] = T(0);  // h_{t-1} reaches h_t only through the gates: the GEMM fills it in
      }
      if (db) to_bf16(d, db, 4 * H);
    }
  });
}

// db_acc (4H) += the sum of rows [b0, b1) of dpre_t (B, 4H): the bias gradient, gathered by each
// thread from rows still in its cache instead of in a separate pass over (T, B, 4H).
inline void add_rows(const float* dpre_t, int64_t b0, int64_t b1, int64_t G, float* db_acc) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* d = dpre_t + b * G;
#pragma omp simd
    for (int64_t j = 0; j < G; ++j) db_acc[j] += d[j];
  }
}

// Returns {dx (B, T, I) or undefined, dh0, dc0, dW_ih, dW_hh, db}.
std::vector<Tensor> lstm_backward(const Tensor& dout_, const Tensor& dh_n, const Tensor& dc_n,
                                  const Tensor& xt, const Tensor& w_ih, const Tensor& w_hh,
                                  const Tensor& acts, const Tensor& hs, const Tensor& cs,
                                  const c10::optional<Tensor>& mask, bool reverse, bool need_dx) {
  const int64_t Tn = acts.size(0), B = acts.size(1), H = w_hh.size(1);
  const Slots slots{Tn, reverse, true};
  Tensor dout = dout_.contiguous();                 // (B, T, H)
  Tensor dpre = at::empty_like(acts);               // (T, B, 4H) gate pre-activation gradients
  Tensor dh = dh_n.contiguous().clone(), dc = dc_n.contiguous().clone();  // (B, H)
  const bool* m = mask_data(mask);
  // bf16 mode (hs and xt came back from the forward as bf16): dpre is rounded to bf16 for the
  // GEMMs, whose bf16 results are added to the float32 gradients; db sums the float32 dpre.
  const bool bf16 = hs.scalar_type() == at::kBFloat16;
  Tensor dpre_b = bf16 ? at::empty_like(dpre, hs.options()) : Tensor();  // (T, B, 4H)
  Tensor db, dx, dw_ih;                                                   // (4H), ...
  const bool rows = acts.scalar_type() == at::kFloat &&
                    (bf16 ? could_pack_bf16(4 * H) : rows_fit(H));
  const int64_t I = xt.size(2);
  // The forward's add_inputs path (its xt stayed float32): dW_ih and dx gathered in the loop.
  const bool x_small = rows && small_inputs(I) && xt.scalar_type() == at::kFloat;
  if (rows) {  // each thread runs its rows through all steps
    // Per-thread bias-gradient sums, one row per thread of the team, and for x_small the
    // per-thread dW_ih^T (I, 4H) sums.
    const int64_t team = row_threads(B, at::get_num_threads());
    Tensor db_parts = at::zeros({team, 4 * H}, acts.options());
    Tensor dw_parts = x_small ? at::zeros({team, I, 4 * H}, acts.options()) : Tensor();
    Tensor wt = x_small ? w_ih.t().contiguous() : Tensor();  // (I, 4H) float32
    if (x_small && need_dx) dx = at::empty({Tn, B, I}, acts.options());  // as the GEMM's
    const float *xp = x_small ? xt.data_ptr<float>() : nullptr,
                *wtp = x_small ? wt.data_ptr<float>() : nullptr;
    float* dxp = dx.defined() ? dx.data_ptr<float>() : nullptr;
    Tensor w = bf16 ? pack_bf16(w_hh) : w_hh.contiguous();  // (4H, H)
    const Operand wo(w), dpo(bf16 ? dpre_b : dpre);          // dpre_t W_hh's operands
    const float *a = acts.data_ptr<float>(), *c = cs.data_ptr<float>();
    const float* dov = dout.data_ptr<float>();
    float *d = dpre.data_ptr<float>(), *dhp = dh.data_ptr<float>(), *dcp = dc.data_ptr<float>();
    at::BFloat16* dbp = bf16 ? dpre_b.data_ptr<at::BFloat16>() : nullptr;
    over_row_blocks(B, at::get_num_threads(), [&](int64_t b0, int64_t b1) {
      float* db_acc = db_parts.data_ptr<float>() + omp_get_thread_num() * 4 * H;
      float* dw_acc = x_small ? dw_parts.data_ptr<float>() + omp_get_thread_num() * I * 4 * H
                              : nullptr;
      for (int64_t s = Tn - 1; s >= 0; --s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        float* dt = d + t * B * 4 * H;
        lstm_backward_step<float>(a + t * B * 4 * H, c + p * B * H, c + n * B * H, dov, dt, dhp,
                                  dcp, m, t, Tn, B, H, nullptr,
                                  dbp ? dbp + t * B * 4 * H : nullptr, b0, b1);
        add_rows(dt, b0, b1, 4 * H, db_acc);
        if (x_small) {
          for (int64_t b = b0; b < b1; ++b) {
            gather_inputs(dt + b * 4 * H, xp + (t * B + b) * I, wtp, I, 4 * H, dw_acc,
                          dxp ? dxp + (t * B + b) * I : nullptr);
          }
        }
        gemm_rows(b1 - b0, H, 4 * H, dpo, (t * B + b0) * 4 * H, 4 * H, wo, H, dhp + b0 * H, H,
                  true);  // dL/dh_{t-1} += dpre_t W_hh
      }
    });
    db = db_parts.sum(0);
    if (x_small) dw_ih = dw_parts.sum(0).t().contiguous();  // (4H, I)
    if (dx.defined()) dx = dx.transpose(0, 1);              // (B, T, I) over (T, B, I) memory
  } else {  // per step: one GEMM over all rows, then one gate pass split over the rows
    Tensor rec = bf16 ? at::zeros({B, H}, hs.options()) : Tensor();  // dpre_t W_hh in bf16
    Tensor w_hh_g = bf16 ? w_hh.to(at::kBFloat16) : w_hh.contiguous();
    AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_backward", [&] {
      for (int64_t s = Tn - 1; s >= 0; --s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        lstm_backward_step<scalar_t>(
            acts[t].data_ptr<scalar_t>(), cs[p].data_ptr<scalar_t>(), cs[n].data_ptr<scalar_t>(),
            dout.data_ptr<scalar_t>(), dpre[t].data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
            dc.data_ptr<scalar_t>(), m, t, Tn, B, H,
            bf16 && s < Tn - 1 ? rec.data_ptr<at::BFloat16>() : nullptr,
            bf16 ? dpre_b[t].data_ptr<at::BFloat16>() : nullptr);
        if (bf16) {
          gemm(dpre_b[t], w_hh_g, rec, 0.0f);  // rec = dpre_t W_hh, added by the next step
        } else {
          gemm(dpre[t], w_hh, dh, 1.0f);  // dL/dh_{t-1} += dpre_t W_hh
        }
      }
    });
    if (bf16) dh.add_(rec);
    db = dpre.view({Tn * B, 4 * H}).sum(0);
  }
  Tensor flat = dpre.view({Tn * B, 4 * H});                             // (T*B, 4H)
  Tensor flat_g = bf16 ? dpre_b.view({Tn * B, 4 * H}) : flat;           // GEMM operand
  Tensor h_prev = hs.narrow(0, reverse ? 1 : 0, Tn).view({Tn * B, H});  // (T*B, H)
  if (!x_small) {
    Tensor w_ih_g = bf16 ? w_ih.to(at::kBFloat16) : w_ih;
    if (need_dx) dx = product(flat_g, w_ih_g).view({Tn, B, -1}).transpose(0, 1);  // (B, T, I)
    dw_ih = product(flat_g.t(), xt.view({Tn * B, -1}));                          // (4H, I)
  }
  Tensor dw_hh = product(flat_g.t(), h_prev);  // (4H, H)
  if (bf16) {
    dx = need_dx ? dx.to(at::kFloat) : dx;
    dw_ih = dw_ih.to(at::kFloat);
    dw_hh = dw_hh.to(at::kFloat);
  }
  return {dx, dh, dc, dw_ih, dw_hh, db};
}

}  // namespace rnnlab_ext
