// GRU kernels: per step one oneDNN GEMM and a gate pass split over the rows.
// GRU: gate rows r, z, n; n = tanh(x W_in^T + b_n + r (h W_hn^T + b_hn)), h = (1-z) n + z h_prev.
#include "recurrent.h"

namespace rnnlab_ext {

template <typename T>
void gru_forward_step(T* gates, const T* gh, T* ghn, const T* b_hn, const T* h_prev, T* h_next,
                      T* out, const bool* mask, int64_t t, int64_t Tn, int64_t B, int64_t H) {
  at::parallel_for(0, B, grain(B), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* a = gates + b * 3 * H;  // input-side pre-activations in, activated r, z, n out
      const T* hh = gh + b * 3 * H;
      T* hn_b = ghn ? ghn + b * H : nullptr;
      const T* hp = h_prev + b * H;
      T* hn = h_next + b * H;
      T* o_bt = out + (b * Tn + t) * H;
      if (mask && !mask[b * Tn + t]) {
        for (int64_t j = 0; j < H; ++j) {
          hn[j] = hp[j];
          o_bt[j] = T(0);
        }
        continue;
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T r = sigmoid(a[j] + hh[j]);
        const T z = sigmoid(a[H + j] + hh[H + j]);
        const T rec = hh[2 * H + j] + b_hn[j];  // W_hn h + b_hn, which r multiplies
        const T n = std::tanh(a[2 * H + j] + r * rec);
        const T h = (T(1) - z) * n + z * hp[j];
        a[j] = r;
        a[H + j] = z;
        a[2 * H + j] = n;
        if (hn_b) hn_b[j] = rec;
        hn[j] = h;
        o_bt[j] = h;
      }
    }
  });
}

// Returns {out (B, T, H), h_n, gates, ghn, hs, xt}; the last four only when training.
std::vector<Tensor> gru_forward(const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                                const Tensor& w_hh, const Tensor& bias, const Tensor& b_hn,
                                const c10::optional<Tensor>& mask, bool reverse, bool train) {
  const int64_t B = x.size(0), Tn = x.size(1), H = h0.size(1);
  const Slots slots{Tn, reverse, train};
  Tensor xt = x.transpose(0, 1).contiguous();     // (T, B, I)
  Tensor gates = input_projection(xt, w_ih, bias);  // (T, B, 3H)
  Tensor gh = at::empty({B, 3 * H}, x.options());   // this step's h_{t-1} W_hh^T
  Tensor ghn = train ? at::empty({Tn, B, H}, x.options()) : Tensor();
  const int64_t S = train ? Tn + 1 : 2;
  Tensor hs = at::empty({S, B, H}, x.options());
  Tensor out = at::empty({B, Tn, H}, x.options());
  Tensor w_hh_t = w_hh.t();  // (H, 3H)
  Tensor bhn = b_hn.contiguous();
  hs[slots.prev(0, slots.time(0))].copy_(h0);
  const bool* m = mask_data(mask);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_forward", [&] {
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
      gemm(hs[p], w_hh_t, gh, 0.0f);
      gru_forward_step<scalar_t>(gates[t].data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(),
                                 train ? ghn[t].data_ptr<scalar_t>() : nullptr,
                                 bhn.data_ptr<scalar_t>(), hs[p].data_ptr<scalar_t>(),
                                 hs[n].data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), m, t, Tn,
                                 B, H);
    }
  });
  Tensor h_n = hs[slots.next(Tn - 1, slots.time(Tn - 1))].clone();
  if (!train) return {out, h_n};
  return {out, h_n, gates, ghn, hs, xt};
}

// GRU inference without padding, float32: as lstm_infer (lstm_infer.cpp), each thread runs its
// block of batch rows through the whole time loop with single-threaded GEMMs into buffers of its
// own, which stay in cache: x_t W_ih^T and h_{t-1} W_hh^T, kept apart because the reset gate
// multiplies W_hn h + b_hn alone. x_t and h_{t-1} are read in place (rows of x and of the output,
// strided by T); nothing of size T*B is made but the output. Weights too wide for the row
// blocks (rows_fit) run gru_forward's per-step loop. ``threads`` caps the team.
// Returns {out (B, T, H), h_n}.
std::vector<Tensor> gru_infer(const Tensor& x_, const Tensor& h0_, const Tensor& w_ih,
                              const Tensor& w_hh, const Tensor& bias, const Tensor& b_hn,
                              bool reverse, int64_t threads) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat, "gru_infer expects float32, got ", x_.scalar_type());
  const int64_t H = h0_.size(1);
  if (!rows_fit(H)) return gru_forward(x_, h0_, w_ih, w_hh, bias, b_hn, c10::nullopt, reverse, false);
  Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  const int64_t B = x.size(0), Tn = x.size(1), I = x.size(2);
  Tensor out = at::empty({B, Tn, H}, x.options());
  if (Tn == 0) return {out, h0.clone()};
  Tensor w_ih_t = w_ih.t().contiguous(), w_hh_t = w_hh.t().contiguous();  // (I, 3H), (H, 3H)
  Tensor b = bias.contiguous(), bn = b_hn.contiguous();
  const Operand xo(x), h0o(h0), wio(w_ih_t), who(w_hh_t);
  float* o = out.data_ptr<float>();
  const float *bp = b.data_ptr<float>(), *bnp = bn.data_ptr<float>(), *h0p = h0.data_ptr<float>();
  over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    std::vector<float> gx(rows * 3 * H), gh(rows * 3 * H);
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = reverse ? Tn - 1 - s : s, tp = reverse ? t + 1 : t - 1;
      gemm_rows(rows, 3 * H, I, xo, (b0 * Tn + t) * I, Tn * I, wio, 3 * H, gx.data(), 3 * H,
                false);  // x_t W_ih^T
      if (s == 0) {  // h_0 W_hh^T
        gemm_rows(rows, 3 * H, H, h0o, b0 * H, H, who, 3 * H, gh.data(), 3 * H, false);
      } else {  // h_{t-1} W_hh^T, h_{t-1} read in place from the output
        gemm_rows(rows, 3 * H, H, Operand(static_cast<const float*>(o)), (b0 * Tn + tp) * H,
                  Tn * H, who, 3 * H, gh.data(), 3 * H, false);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* a = gx.data() + r * 3 * H;
        const float* hh = gh.data() + r * 3 * H;
        const float* hp = s == 0 ? h0p + (b0 + r) * H : o + ((b0 + r) * Tn + tp) * H;
        float* hr = o + ((b0 + r) * Tn + t) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float rg = sigmoid(a[j] + bp[j] + hh[j]);
          const float z = sigmoid(a[H + j] + bp[H + j] + hh[H + j]);
          const float n = std::tanh(a[2 * H + j] + bp[2 * H + j] + rg * (hh[2 * H + j] + bnp[j]));
          hr[j] = (1.0f - z) * n + z * hp[j];
        }
      }
    }
  });
  return {out, out.select(1, reverse ? 0 : Tn - 1).clone()};
}

template <typename T>
void gru_backward_step(const T* acts, const T* ghn, const T* h_prev, const T* dout, T* dgx, T* dgh,
                       T* dh, const bool* mask, int64_t t, int64_t Tn, int64_t B, int64_t H) {
  at::parallel_for(0, B, grain(B), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* a = acts + b * 3 * H;
      const T* rec = ghn + b * H;
      const T* hp = h_prev + b * H;
      const T* do_bt = dout + (b * Tn + t) * H;
      T* dx_b = dgx + b * 3 * H;  // gradients of the input-side pre-activations (r, z, n)
      T* dh_b = dgh + b * 3 * H;  // gradients of h_{t-1} W_hh^T (+ b_hh)
      T* dhb = dh + b * H;
      if (mask && !mask[b * Tn + t]) {
        for (int64_t j = 0; j < 3 * H; ++j) dx_b[j] = dh_b[j] = T(0);
        continue;
      }
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const T r = a[j], z = a[H + j], n = a[2 * H + j];
        const T dh_t = dhb[j] + do_bt[j];
        const T dn = dh_t * (T(1) - z) * (T(1) - n * n);
        const T dz = dh_t * (hp[j] - n) * z * (T(1) - z);
        const T dr = dn * rec[j] * r * (T(1) - r);
        dx_b[j] = dh_b[j] = dr;
        dx_b[H + j] = dh_b[H + j] = dz;
        dx_b[2 * H + j] = dn;
        dh_b[2 * H + j] = dn * r;
        dhb[j] = dh_t * z;  // the direct path h_{t-1} -> h_t; the GEMM adds the gates' part
      }
    }
  });
}

// Returns {dx (B, T, I) or undefined, dh0, dW_ih, dW_hh, db, db_hn}.
std::vector<Tensor> gru_backward(const Tensor& dout_, const Tensor& dh_n, const Tensor& xt,
                                 const Tensor& w_ih, const Tensor& w_hh, const Tensor& acts,
                                 const Tensor& ghn, const Tensor& hs,
                                 const c10::optional<Tensor>& mask, bool reverse, bool need_dx) {
  const int64_t Tn = acts.size(0), B = acts.size(1), H = w_hh.size(1);
  const Slots slots{Tn, reverse, true};
  Tensor dout = dout_.contiguous();
  Tensor dgx = at::empty_like(acts);  // (T, B, 3H)
  Tensor dgh = at::empty_like(acts);  // (T, B, 3H)
  Tensor dh = dh_n.contiguous().clone();
  const bool* m = mask_data(mask);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "gru_backward", [&] {
    for (int64_t s = Tn - 1; s >= 0; --s) {
      const int64_t t = slots.time(s), p = slots.prev(s, t);
      gru_backward_step<scalar_t>(acts[t].data_ptr<scalar_t>(), ghn[t].data_ptr<scalar_t>(),
                                  hs[p].data_ptr<scalar_t>(), dout.data_ptr<scalar_t>(),
                                  dgx[t].data_ptr<scalar_t>(), dgh[t].data_ptr<scalar_t>(),
                                  dh.data_ptr<scalar_t>(), m, t, Tn, B, H);
      gemm(dgh[t], w_hh, dh, 1.0f);
    }
  });
  Tensor fx = dgx.view({Tn * B, 3 * H}), fh = dgh.view({Tn * B, 3 * H});
  Tensor h_prev = hs.narrow(0, reverse ? 1 : 0, Tn).view({Tn * B, H});
  Tensor dx;
  if (need_dx) dx = product(fx, w_ih).view({Tn, B, -1}).transpose(0, 1);
  Tensor dw_ih = product(fx.t(), xt.view({Tn * B, -1}));
  Tensor dw_hh = product(fh.t(), h_prev);
  return {dx, dh, dw_ih, dw_hh, fx.sum(0), fh.narrow(1, 2 * H, H).sum(0)};
}

}  // namespace rnnlab_ext
