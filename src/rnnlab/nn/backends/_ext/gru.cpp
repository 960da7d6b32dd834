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
