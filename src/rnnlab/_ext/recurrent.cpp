// The compiled fast path: whole LSTM and GRU time loops, forward and backward, in C++.
//
// Shape legend: B batch, T time, I input features, H hidden units.
//
// Why C++: the pure-torch fused path (rnnlab/fused.py) pays Python and dispatcher overhead for
// about fifteen small element-wise ops per step. Here, for float32 LSTM (and its bf16 mode),
// each thread takes a block of batch rows and runs them through every step with its own
// single-threaded oneDNN ukernel GEMM and one vectorised pass over the gates: rows are
// independent sequences, so the loop needs no synchronisation (see over_row_blocks). GRU,
// float64 and a few bf16 shapes run per step: one in-place oneDNN GEMM (multi-threaded) and one
// gate pass split over the rows. The equations are those of rnnlab/cells.py, and
// tests/test_fast_kernels.py checks this file against the reference cells (outputs, final
// states, every gradient).
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
#include <cstdint>
#include <cstring>
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

// dst[j] = bf16(src[j]) for j < n, rounded to nearest even as c10::BFloat16 does (NaN -> quiet
// NaN), written with integer operations the compiler vectorises: c10's scalar conversion, which
// branches on NaN, took over half of the bf16 backward's gate pass.
inline void to_bf16(const float* src, at::BFloat16* dst, int64_t n) {
  uint16_t* out = reinterpret_cast<uint16_t*>(dst);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits;
    std::memcpy(&bits, src + j, sizeof(bits));
    const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    out[j] = src[j] != src[j] ? uint16_t(0x7FC0) : uint16_t(rounded);
  }
}

// float64 never runs in bf16 mode; this only lets the templates below compile for it.
inline void to_bf16(const double* src, at::BFloat16* dst, int64_t n) {
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<at::BFloat16>(static_cast<float>(src[j]));
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

// Runs rows(b0, b1) over all B rows split between threads, or, given r1 >= 0, over [r0, r1) in
// the calling thread (which is then one of over_row_blocks' threads).
template <typename F>
void run_rows(int64_t B, int64_t r0, int64_t r1, const F& rows) {
  if (r1 >= 0) {
    rows(r0, r1);
  } else {
    at::parallel_for(0, B, grain(B), rows);
  }
}

// Batch rows are independent sequences: each thread can run the whole time loop on its own block
// of rows, with its own single-threaded GEMMs (cpublas::brgemm, a oneDNN ukernel), and never wait
// for another thread until the loop ends. Per-step fork/joins (a parallel GEMM, then a parallel
// gate pass) are what made the per-step kernels slow on a machine whose cores are shared: each
// join waits for the slowest, possibly descheduled, thread. At least kMinRows rows per thread
// keep the per-thread GEMMs efficient.
constexpr int64_t kMinRows = 8;

int64_t row_threads(int64_t B, int64_t threads) {
  return std::max<int64_t>(1, std::min(threads, B / kMinRows));
}

template <typename F>
void over_row_blocks(int64_t B, int64_t threads, const F& body) {
#pragma omp parallel num_threads(row_threads(B, threads))
  {
    // The team may be smaller than asked (nested region, OMP_DYNAMIC): split by its real size.
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t b0 = B * me / team, b1 = B * (me + 1) / team;
    if (b1 > b0) body(b0, b1);
    at::native::cpublas::brgemm_release(false);
    at::native::cpublas::brgemm_release(true);
  }
}

// c (M, N) (+)= a (M, K) @ b (K, N), row-major with leading dimensions, in the calling thread.
// Wide products go in slices of kColumns columns: the float32 ukernel ran (256, K=256) x 1024
// columns at 206 GFLOP/s on one core and the same in 256-column slices at 273 (workload B's
// 4H = 1024), as each slice's part of b stays in cache while all rows of a pass over it.
constexpr int64_t kColumns = 256;

inline void gemm_rows(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (N <= 2 * kColumns) {
    at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, accumulate, a, b, c, false);
    return;
  }
  for (int64_t n0 = 0; n0 < N; n0 += kColumns) {
    const int64_t n = std::min(kColumns, N - n0);
    at::native::cpublas::brgemm(M, n, K, lda, ldb, ldc, accumulate, a, b + n0, c + n0, false);
  }
}

// The same with bf16 operands and a float32 c (exact fp32 accumulation); b must come from
// pack_bf16. Used by the bf16 mode where could_pack_bf16() holds.
inline void gemm_rows(int64_t M, int64_t N, int64_t K, const at::BFloat16* a, int64_t lda,
                      const at::BFloat16* b, int64_t ldb, float* c, int64_t ldc,
                      bool accumulate) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, accumulate, a, b, c, true);
}

// b (K, N) float32, row-major -> bf16 in the VNNI layout the bf16 ukernel reads: pairs of K rows
// interleaved, (K/2, N, 2), so K must be even.
Tensor pack_bf16(const Tensor& b) {
  const int64_t K = b.size(0), N = b.size(1);
  return b.to(at::kBFloat16).view({K / 2, 2, N}).transpose(1, 2).contiguous();
}

// Whether the bf16 ukernel runs here and computes what it should: checked once on a small
// product against ATen (some oneDNN builds take bf16 ukernels only on AMX CPUs), so a CPU where
// it does not hold uses the per-step oneDNN matmuls instead of returning wrong numbers.
bool bf16_rows_work() {
  static const bool ok = [] {
    try {
      Tensor a = at::randn({5, 6}).to(at::kBFloat16), b = at::randn({6, 32});
      Tensor expect = at::mm(a.to(at::kFloat), b.to(at::kBFloat16).to(at::kFloat));
      Tensor c = at::zeros({5, 32});
      Tensor bp = pack_bf16(b);
      at::native::cpublas::brgemm(5, 32, 6, 6, 32, 32, false, a.data_ptr<at::BFloat16>(),
                                  bp.data_ptr<at::BFloat16>(), c.data_ptr<float>(), true);
      at::native::cpublas::brgemm_release(true);
      return at::allclose(c, expect, 1e-4, 1e-4);
    } catch (const c10::Error&) {
      return false;
    }
  }();
  return ok;
}

bool could_pack_bf16(int64_t K) { return K % 2 == 0 && bf16_rows_work(); }

// ---------------------------------------------------------------------------------------------
// LSTM: gate rows i, f, g, o; c_t = f c_{t-1} + i g, h_t = o tanh(c_t).

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
  // The row-block paths below compute each step's x_t W_ih^T into gates[t] themselves (one
  // more GEMM per step, on rows already in cache) and add the bias in the gate pass: no
  // separate pass over (T, B, 4H) to broadcast the bias, and no whole-sequence GEMM.
  const bool rows_fp32 = x.scalar_type() == at::kFloat && !bf16;
  const bool rows_bf16 = bf16 && could_pack_bf16(H);
  const bool x_bf16 = rows_bf16 && could_pack_bf16(xt.size(2));  // else x_t W_ih^T in fp32
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
  const int64_t I = xt.size(2);
  if (rows_fp32) {  // each thread runs its rows through all steps
    Tensor wi_t = w_ih.t().contiguous(), wh_t = w_hh.t().contiguous();  // (I, 4H), (H, 4H)
    const float *wi = wi_t.data_ptr<float>(), *wh = wh_t.data_ptr<float>();
    const float *xp = xt.data_ptr<float>(), *bp = bias.data_ptr<float>();
    float *g = gates.data_ptr<float>(), *hp = hs.data_ptr<float>(), *cp = cs.data_ptr<float>();
    float* o = out.data_ptr<float>();
    over_row_blocks(B, at::get_num_threads(), [&](int64_t b0, int64_t b1) {
      for (int64_t s = 0; s < Tn; ++s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        float* gt = g + (t * B + b0) * 4 * H;
        gemm_rows(b1 - b0, 4 * H, I, xp + (t * B + b0) * I, I, wi, 4 * H, gt, 4 * H,
                  false);  // gates[t] = x_t W_ih^T
        gemm_rows(b1 - b0, 4 * H, H, hp + (p * B + b0) * H, H, wh, 4 * H, gt, 4 * H,
                  true);  // gates[t] += h_{t-1} W_hh^T
        lstm_forward_step<float>(g + t * B * 4 * H, hp + p * B * H, cp + p * B * H,
                                 hp + n * B * H, cp + n * B * H, o, m, t, Tn, B, H, bp, nullptr,
                                 nullptr, b0, b1);
      }
    });
  } else if (rows_bf16) {  // the same with bf16 operands, fp32 accumulation
    Tensor wi_pk = x_bf16 ? pack_bf16(w_ih.t()) : w_ih.t().contiguous();  // (I, 4H) VNNI|fp32
    Tensor wh_pk = pack_bf16(w_hh.t());                                   // (H, 4H) VNNI
    const at::BFloat16* wh = wh_pk.data_ptr<at::BFloat16>();
    const float* bp = bias.data_ptr<float>();
    at::BFloat16* hbp = hb.data_ptr<at::BFloat16>();
    float *g = gates.data_ptr<float>(), *hp = hs.data_ptr<float>(), *cp = cs.data_ptr<float>();
    float* o = out.data_ptr<float>();
    over_row_blocks(B, at::get_num_threads(), [&](int64_t b0, int64_t b1) {
      for (int64_t s = 0; s < Tn; ++s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        float* gt = g + (t * B + b0) * 4 * H;
        if (x_bf16) {
          gemm_rows(b1 - b0, 4 * H, I, xt.data_ptr<at::BFloat16>() + (t * B + b0) * I, I,
                    wi_pk.data_ptr<at::BFloat16>(), 4 * H, gt, 4 * H, false);
        } else {
          gemm_rows(b1 - b0, 4 * H, I, xt.data_ptr<float>() + (t * B + b0) * I, I,
                    wi_pk.data_ptr<float>(), 4 * H, gt, 4 * H, false);
        }
        gemm_rows(b1 - b0, 4 * H, H, hbp + (p * B + b0) * H, H, wh, 4 * H, gt, 4 * H, true);
        lstm_forward_step<float>(g + t * B * 4 * H, hp + p * B * H, cp + p * B * H,
                                 hp + n * B * H, cp + n * B * H, o, m, t, Tn, B, H, bp, nullptr,
                                 hbp + n * B * H, b0, b1);
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
  if (bf16) return {out, h_n, c_n, gates, hb, cs, xt.to(at::kBFloat16)};  // no copy if bf16
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
  Tensor rec = bf16 ? at::zeros({B, H}, hs.options()) : Tensor();        // dpre_t W_hh
  Tensor w_hh_g = bf16 ? w_hh.to(at::kBFloat16) : w_hh.contiguous();
  // Row-block paths: per-thread bias-gradient sums, one row per thread of the team.
  Tensor db_parts = at::zeros({row_threads(B, at::get_num_threads()), 4 * H}, acts.options());
  bool db_done = false;
  if (acts.scalar_type() == at::kFloat && !bf16) {  // each thread runs its rows through all steps
    db_done = true;
    const float *a = acts.data_ptr<float>(), *c = cs.data_ptr<float>(), *w = w_hh_g.data_ptr<float>();
    const float* dov = dout.data_ptr<float>();
    float *d = dpre.data_ptr<float>(), *dhp = dh.data_ptr<float>(), *dcp = dc.data_ptr<float>();
    over_row_blocks(B, at::get_num_threads(), [&](int64_t b0, int64_t b1) {
      for (int64_t s = Tn - 1; s >= 0; --s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        float* dt = d + t * B * 4 * H;
        lstm_backward_step<float>(a + t * B * 4 * H, c + p * B * H, c + n * B * H, dov, dt, dhp,
                                  dcp, m, t, Tn, B, H, nullptr, nullptr, b0, b1);
        add_rows(dt, b0, b1, 4 * H, db_parts.data_ptr<float>() + omp_get_thread_num() * 4 * H);
        gemm_rows(b1 - b0, H, 4 * H, dt + b0 * 4 * H, 4 * H, w, H, dhp + b0 * H, H,
                  true);  // dL/dh_{t-1} += dpre_t W_hh
      }
    });
  } else if (bf16 && could_pack_bf16(4 * H)) {  // the same with bf16 operands
    db_done = true;
    Tensor w_pk = pack_bf16(w_hh);                 // (4H, H) VNNI
    const at::BFloat16* w = w_pk.data_ptr<at::BFloat16>();
    const float *a = acts.data_ptr<float>(), *c = cs.data_ptr<float>();
    const float* dov = dout.data_ptr<float>();
    float *d = dpre.data_ptr<float>(), *dhp = dh.data_ptr<float>(), *dcp = dc.data_ptr<float>();
    at::BFloat16* dbp = dpre_b.data_ptr<at::BFloat16>();
    over_row_blocks(B, at::get_num_threads(), [&](int64_t b0, int64_t b1) {
      for (int64_t s = Tn - 1; s >= 0; --s) {
        const int64_t t = slots.time(s), p = slots.prev(s, t), n = slots.next(s, t);
        at::BFloat16* dbt = dbp + t * B * 4 * H;
        lstm_backward_step<float>(a + t * B * 4 * H, c + p * B * H, c + n * B * H, dov,
                                  d + t * B * 4 * H, dhp, dcp, m, t, Tn, B, H, nullptr, dbt, b0,
                                  b1);
        add_rows(d + t * B * 4 * H, b0, b1, 4 * H,
                 db_parts.data_ptr<float>() + omp_get_thread_num() * 4 * H);
        gemm_rows(b1 - b0, H, 4 * H, dbt + b0 * 4 * H, 4 * H, w, H, dhp + b0 * H, H,
                  true);  // dL/dh_{t-1} += dpre_t W_hh, bf16 operands
      }
    });
    rec.zero_();  // nothing left to add below
  } else AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_backward", [&] {
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
  return {dx, dh, dc, dw_ih, dw_hh, db_done ? db_parts.sum(0) : flat.sum(0)};
}

// LSTM inference without padding: each thread runs its block of batch rows through the whole
// time loop (over_row_blocks), so the loop has no synchronisation at all. Nothing of size T*B
// is kept but the output: each step's gates are x_t W_ih^T + h_{t-1} W_hh^T, two GEMMs into the
// thread's own (rows, 4H) buffer, which stays in cache; x_t is read in place (rows of x,
// strided by T). A whole-sequence input projection would write and read back T*B*4H floats
// and, on first touch, page-fault its fresh memory in.
//
// bf16 = true (the bf16 mode): the GEMM operands x, h and the weights are bf16 (weights packed
// for the bf16 ukernel), accumulated in fp32; gates, c and the outputs stay float32, and each
// thread keeps a bf16 copy of its rows' h for the next step. Odd I or H (which the VNNI packing
// cannot take) use the float32 GEMM for that operand. ``threads`` caps the team (the tests force
// several to check every split).
std::vector<Tensor> lstm_infer(const Tensor& x_, const Tensor& h0_, const Tensor& c0_,
                               const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias_,
                               bool reverse, int64_t threads, bool bf16) {
  TORCH_CHECK(x_.scalar_type() == at::kFloat, "lstm_infer expects float32, got ", x_.scalar_type());
  Tensor x = x_.contiguous(), h0 = h0_.contiguous(), bias = bias_.contiguous();
  const int64_t B = x.size(0), Tn = x.size(1), I = x.size(2), H = h0.size(1);
  Tensor out = at::empty({B, Tn, H}, x.options());
  Tensor c = c0_.clone(at::MemoryFormat::Contiguous);  // (B, H), updated in place
  if (Tn == 0) return {out, h0.clone(), c};
  const bool bx = bf16 && could_pack_bf16(I), bh = bf16 && could_pack_bf16(H);
  Tensor w_ih_t = bx ? pack_bf16(w_ih.t()) : w_ih.t().contiguous();  // (I, 4H)
  Tensor w_hh_t = bh ? pack_bf16(w_hh.t()) : w_hh.t().contiguous();  // (H, 4H)
  Tensor xb = bx ? x.to(at::kBFloat16) : x;
  Tensor h0b = bh ? h0.to(at::kBFloat16) : h0;
  const float *bp = bias.data_ptr<float>();
  float *o = out.data_ptr<float>(), *cp = c.data_ptr<float>();
  over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    std::vector<float> buf(rows * 4 * H);
    std::vector<at::BFloat16> hbuf(bh ? rows * H : 0);  // bf16 h_{t-1} of these rows
    float* g = buf.data();
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = reverse ? Tn - 1 - s : s, tp = reverse ? t + 1 : t - 1;
      if (bx) {
        gemm_rows(rows, 4 * H, I, xb.data_ptr<at::BFloat16>() + (b0 * Tn + t) * I, Tn * I,
                  w_ih_t.data_ptr<at::BFloat16>(), 4 * H, g, 4 * H, false);
      } else {
        gemm_rows(rows, 4 * H, I, x.data_ptr<float>() + (b0 * Tn + t) * I, Tn * I,
                  w_ih_t.data_ptr<float>(), 4 * H, g, 4 * H, false);
      }
      if (bh) {
        const at::BFloat16* hp = s == 0 ? h0b.data_ptr<at::BFloat16>() + b0 * H : hbuf.data();
        gemm_rows(rows, 4 * H, H, hp, H, w_hh_t.data_ptr<at::BFloat16>(), 4 * H, g, 4 * H, true);
      } else {
        const float* hp = s == 0 ? h0.data_ptr<float>() + b0 * H : o + (b0 * Tn + tp) * H;
        gemm_rows(rows, 4 * H, H, hp, s == 0 ? H : Tn * H, w_hh_t.data_ptr<float>(), 4 * H, g,
                  4 * H, true);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* a = g + r * 4 * H;
        float* cr = cp + (b0 + r) * H;
        float* hr = o + ((b0 + r) * Tn + t) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float i = sigmoid(a[j] + bp[j]), f = sigmoid(a[H + j] + bp[H + j]);
          const float gg = std::tanh(a[2 * H + j] + bp[2 * H + j]);
          const float og = sigmoid(a[3 * H + j] + bp[3 * H + j]);
          const float cn = f * cr[j] + i * gg;
          cr[j] = cn;
          hr[j] = og * std::tanh(cn);
        }
        if (bh) to_bf16(hr, hbuf.data() + r * H, H);
      }
    }
  });
  Tensor h_n = out.select(1, reverse ? 0 : Tn - 1).clone();
  return {out, h_n, c};
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

// to_bf16 on a whole float32 tensor, for the tests to compare with torch's own rounding.
Tensor round_bf16(const Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "round_bf16 expects float32, got ", x.scalar_type());
  Tensor src = x.contiguous();
  Tensor out = at::empty(src.sizes(), src.options().dtype(at::kBFloat16));
  to_bf16(src.data_ptr<float>(), out.data_ptr<at::BFloat16>(), src.numel());
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("round_bf16", &round_bf16);
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("lstm_infer", &lstm_infer);
  m.def("bf16_rows_work", &bf16_rows_work);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
}
