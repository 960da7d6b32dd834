// The compiled fast path: whole LSTM and GRU time loops, forward and backward, in C++.
//
// Shape legend: B batch, T time, I input features, H hidden units.
//
// Why C++: the pure-torch fused path (rnnlab/fused.py) pays Python and dispatcher overhead for
// about fifteen small element-wise ops per step. Here each step is one oneDNN GEMM (written in
// place, no allocation) plus one vectorised pass over the gates, split over the batch rows
// between threads. The equations are those of rnnlab/cells.py, and tests/test_fast_kernels.py
// checks this file against the reference cells (outputs, final states, every gradient).
//
// Layouts. Inputs and outputs are batch first, as the layers use them. Inside, everything is
// time-major in *real* time order, so every per-step matrix is a contiguous (B, .) slice and
// the weight gradients are single GEMMs over all T*B rows:
//   gates (T, B, G*H)  input projection + bias, overwritten in place by the activated gates;
//   hs, cs (T+1, B, H) carried states in "slots": the state before the step at time t sits in
//                      slot t (forward) or t+1 (reverse), the state after it in the other one,
//                      so slots [0, T) or [1, T] are every step's previous state, in time order.
// Padded steps (mask false) carry the state unchanged and output zero, as the reference loop;
// in the backward their gates get no gradient and the state gradient passes straight through.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

// Vector variants from glibc's libmvec (AVX-512: _ZGVeN16v_expf, _ZGVeN16v_tanhf, <= 4 ulp), so
// the "#pragma omp simd" loops below vectorise their exp and tanh calls without -ffast-math.
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
#pragma omp declare simd notinbranch
float tanhf(float) noexcept;
}

namespace at {
namespace native {
// result = beta * result + alpha * mat1 @ mat2 through oneDNN, writing into result in place.
// Exported by libtorch_cpu but declared in ATen/native/mkldnn/Matmul.h, which wheels omit.
TORCH_API void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result,
                             float beta, float alpha);
}  // namespace native
}  // namespace at

namespace {

using at::Tensor;

// out = beta * out + a @ b. oneDNN for float32 (1.5-2x MKL at these shapes on AVX-512 CPUs) and
// bfloat16 (all three operands bf16: oneDNN accumulates in fp32 and rounds the result once; it
// runs on avx512_bf16's dot products); float64, which only the gradient checks use, goes
// through ATen's addmm.
void gemm(const Tensor& a, const Tensor& b, const Tensor& out, float beta) {
  if (out.scalar_type() == at::kFloat || out.scalar_type() == at::kBFloat16) {
    at::native::mkldnn_matmul(a, b, out, beta, 1.0f);
  } else if (beta == 0.0f) {
    at::mm_out(const_cast<Tensor&>(out), a, b);
  } else {
    const_cast<Tensor&>(out).addmm_(a, b);
  }
}

Tensor product(const Tensor& a, const Tensor& b) {
  Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  gemm(a, b, out, 0.0f);
  return out;
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Slots of the state before and after the step at time t (see the layout note at the top). In
// inference only two slots exist and the steps alternate between them.
struct Slots {
  int64_t T;
  bool reverse, train;
  int64_t prev(int64_t s, int64_t t) const { return train ? (reverse ? t + 1 : t) : (s & 1); }
  int64_t next(int64_t s, int64_t t) const { return train ? (reverse ? t : t + 1) : ((s + 1) & 1); }
  int64_t time(int64_t s) const { return reverse ? T - 1 - s : s; }
};

// Gate pre-activations of all steps in one GEMM: (T, B, G*H) = x_t W_ih^T + b.
Tensor input_projection(const Tensor& xt, const Tensor& w_ih, const Tensor& bias) {
  const int64_t T = xt.size(0), B = xt.size(1), GH = w_ih.size(0);
  Tensor gates = at::empty({T, B, GH}, xt.options());
  gates.copy_(bias);  // broadcast (G*H) -> (T, B, G*H); the GEMM adds onto it
  gemm(xt.view({T * B, -1}), w_ih.t(), gates.view({T * B, GH}), 1.0f);
  return gates;
}

const bool* mask_data(const c10::optional<Tensor>& mask) {
  return mask.has_value() ? mask->data_ptr<bool>() : nullptr;
}

int64_t grain(int64_t B) { return std::max<int64_t>(1, B / at::get_num_threads()); }

// ---------------------------------------------------------------------------------------------
// LSTM: gate rows i, f, g, o; c_t = f c_{t-1} + i g, h_t = o tanh(c_t).

// bf16 mode (rec != nullptr): rec (B, 4H) is h_{t-1} W_hh^T from a bf16 GEMM, added here in fp32,
// and hb_next receives a bf16 copy of h_t, the next step's GEMM operand. The gate arithmetic and
// c stay in T (float).
template <typename T>
void lstm_forward_step(T* gates, const T* h_prev, const T* c_prev, T* h_next, T* c_next, T* out,
                       const bool* mask, int64_t t, int64_t Tn, int64_t B, int64_t H,
                       const at::BFloat16* rec = nullptr, at::BFloat16* hb_next = nullptr) {
  at::parallel_for(0, B, grain(B), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* a = gates + b * 4 * H;  // (4H,) pre-activations in, activations out
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
        if (hb)
          for (int64_t j = 0; j < H; ++j) hb[j] = static_cast<at::BFloat16>(hp[j]);
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
      if (hb)
        for (int64_t j = 0; j < H; ++j) hb[j] = static_cast<at::BFloat16>(hn[j]);
    }
  });
}

// Returns {out (B, T, H), h_n, c_n, gates, hs, cs, xt}; the last four only when training.
// bf16 mode (float32 only): every GEMM takes bf16 operands (x, h and the weights rounded to
// bf16); gates, c, h and the outputs stay float32. Then hs and xt come back as bf16, the
// operands the backward's weight-gradient GEMMs need.
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
  if (bf16) {
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
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward", [&] {
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
          Tn, B, H, bf16 ? rec.data_ptr<at::BFloat16>() : nullptr,
          bf16 ? hb[n].data_ptr<at::BFloat16>() : nullptr);
    }
  });
  const int64_t last = slots.next(Tn - 1, slots.time(Tn - 1));
  Tensor h_n = hs[last].clone(), c_n = cs[last].clone();
  if (!train) return {out, h_n, c_n};
  if (bf16) return {out, h_n, c_n, gates, hb, cs, xt};
  return {out, h_n, c_n, gates, hs, cs, xt};
}

// bf16 mode: rec (B, H) is the previous (later-in-time) step's dpre W_hh from a bf16 GEMM, added
// to dh here in fp32, and dpre_b receives a bf16 copy of dpre for the GEMMs.
template <typename T>
void lstm_backward_step(const T* acts, const T* c_prev, const T* c_next, const T* dout, T* dpre,
                        T* dh, T* dc, const bool* mask, int64_t t, int64_t Tn, int64_t B,
                        int64_t H, const at::BFloat16* rec = nullptr,
                        at::BFloat16* dpre_b = nullptr) {
  at::parallel_for(0, B, grain(B), [&](int64_t b0, int64_t b1) {
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
      if (db)
        for (int64_t j = 0; j < 4 * H; ++j) db[j] = static_cast<at::BFloat16>(d[j]);
    }
  });
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
  Tensor rec = bf16 ? at::zeros({B, H}, hs.options()) : Tensor();        // dpre_t W_hh
  Tensor w_hh_g = bf16 ? w_hh.to(at::kBFloat16) : w_hh;
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
  Tensor flat = dpre.view({Tn * B, 4 * H});                             // (T*B, 4H)
  Tensor flat_g = bf16 ? dpre_b.view({Tn * B, 4 * H}) : flat;           // GEMM operand
  Tensor h_prev = hs.narrow(0, reverse ? 1 : 0, Tn).view({Tn * B, H});  // (T*B, H)
  Tensor w_ih_g = bf16 ? w_ih.to(at::kBFloat16) : w_ih;
  Tensor dx;
  if (need_dx) dx = product(flat_g, w_ih_g).view({Tn, B, -1}).transpose(0, 1);  // (B, T, I)
  Tensor dw_ih = product(flat_g.t(), xt.view({Tn * B, -1}));                   // (4H, I)
  Tensor dw_hh = product(flat_g.t(), h_prev);                                   // (4H, H)
  if (bf16) {
    dx = need_dx ? dx.to(at::kFloat) : dx;
    dw_ih = dw_ih.to(at::kFloat);
    dw_hh = dw_hh.to(at::kFloat);
  }
  return {dx, dh, dc, dw_ih, dw_hh, flat.sum(0)};
}

// LSTM inference without padding: the whole time loop is one OpenMP parallel region.
//
// Why: the training kernel above costs, per step, a oneDNN matmul (its own parallel region and a
// primitive-cache lookup) plus a parallel region for the gates: two fork/joins per step. On a
// machine whose cores are shared, each of them waits for the slowest, possibly descheduled,
// thread. Here each thread owns a block of hidden units [j0, j1) and computes, per step, the
// four gate columns of those units with a single-threaded oneDNN ukernel (cpublas::brgemm, no
// primitive lookup once built), activates them and writes its part of h_t and c_t; then one
// barrier, because every thread's next GEMM reads all of h_t. One synchronisation per step.
//
// W_hh^T (H, 4H) is repacked per call into per-thread blocks (H, 4*Hk) with columns
// [i_j0..j1 | f_j0..j1 | g_j0..j1 | o_j0..j1], so each thread's GEMM output is contiguous.
std::vector<Tensor> lstm_infer(const Tensor& x, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias,
                               bool reverse, int64_t threads) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "lstm_infer expects float32, got ", x.scalar_type());
  const int64_t B = x.size(0), Tn = x.size(1), H = h0.size(1);
  Tensor xt = x.transpose(0, 1).contiguous();     // (T, B, I)
  Tensor xw = input_projection(xt, w_ih, bias);   // (T, B, 4H)
  // Threads: as asked (rnnlab.fused picks the number), at most one per 16 hidden units.
  const int64_t nt = std::max<int64_t>(1, std::min(threads, H / 16));
  const int64_t Hk = (H + nt - 1) / nt;  // units per thread, the last block may be shorter
  // (nt, H, 4*Hk) per-thread weight blocks, zero-padded where the last block is short.
  Tensor w_t = w_hh.t().contiguous();  // (H, 4H)
  Tensor packed = at::zeros({nt, H, 4 * Hk}, x.options());
  for (int64_t k = 0; k < nt; ++k) {
    const int64_t j0 = k * Hk, n = std::max<int64_t>(0, std::min(H, j0 + Hk) - j0);
    for (int64_t q = 0; q < 4 && n > 0; ++q)
      packed[k].narrow(1, q * Hk, n).copy_(w_t.narrow(1, q * H + j0, n));
  }
  Tensor hs = at::empty({2, B, H}, x.options());
  hs[0].copy_(h0);
  Tensor c = c0.contiguous().clone();  // (B, H), updated in place
  Tensor out = at::empty({B, Tn, H}, x.options());
  Tensor acc = at::empty({nt, B, 4 * Hk}, x.options());  // each thread's h_{t-1} W_hh^T block
  const float* xw_p = xw.data_ptr<float>();
  const float* pk = packed.data_ptr<float>();
  float* hs_p = hs.data_ptr<float>();
  float* c_p = c.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  float* acc_p = acc.data_ptr<float>();
#pragma omp parallel num_threads(nt)
  {
    // The team may be smaller than asked (nested region, OMP_DYNAMIC): share the blocks out
    // among the threads that exist, so the barrier never waits for a missing thread.
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = reverse ? Tn - 1 - s : s;
      const float* hp = hs_p + (s & 1) * B * H;
      float* hn = hs_p + ((s + 1) & 1) * B * H;
      for (int64_t k = me; k < nt; k += team) {
        const int64_t j0 = k * Hk, n = std::min(H, j0 + Hk) - j0;
        if (n <= 0) continue;
        float* a = acc_p + k * B * 4 * Hk;
        at::native::cpublas::brgemm(B, 4 * Hk, H, H, 4 * Hk, 4 * Hk, false, hp,
                                    pk + k * H * 4 * Hk, a, false);
        for (int64_t b = 0; b < B; ++b) {
          const float* pre = xw_p + (t * B + b) * 4 * H + j0;  // input part of unit j0's gates
          const float* rec = a + b * 4 * Hk;
          float* cb = c_p + b * H + j0;
          float* hb = hn + b * H + j0;
          float* ob = out_p + (b * Tn + t) * H + j0;
#pragma omp simd
          for (int64_t q = 0; q < n; ++q) {
            const float i = sigmoid(pre[q] + rec[q]);
            const float f = sigmoid(pre[H + q] + rec[Hk + q]);
            const float g = std::tanh(pre[2 * H + q] + rec[2 * Hk + q]);
            const float o = sigmoid(pre[3 * H + q] + rec[3 * Hk + q]);
            const float cn = f * cb[q] + i * g;
            const float h = o * std::tanh(cn);
            cb[q] = cn;
            hb[q] = h;
            ob[q] = h;
          }
        }
      }
#pragma omp barrier
    }
    at::native::cpublas::brgemm_release(false);
  }
  return {out, hs[Tn & 1].clone(), c};
}

// ---------------------------------------------------------------------------------------------
// GRU: gate rows r, z, n; n = tanh(x W_in^T + b_n + r (h W_hn^T + b_hn)), h = (1-z) n + z h_prev.

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("lstm_infer", &lstm_infer);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
}
