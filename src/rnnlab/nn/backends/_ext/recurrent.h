// Shared helpers of the compiled kernels (lstm.cpp, lstm_infer.cpp, gru.cpp): GEMM calls,
// bf16 conversion, the time-slot layout, and the row blocks that let each thread run its own
// batch rows through every step.
//
// The compiled fast path: whole LSTM and GRU time loops, forward and backward, in C++.
//
// Shape legend: B batch, T time, I input features, H hidden units.
//
// Why C++: the pure-torch fused path (rnnlab/nn/backends/fused.py) pays Python and dispatcher
// overhead for about fifteen small element-wise ops per step. Here, for float32 LSTM (and its
// bf16 mode), each thread takes a block of batch rows and runs them through every step with its
// own single-threaded oneDNN ukernel GEMM and one vectorised pass over the gates: rows are
// independent sequences, so the loop needs no synchronisation (see over_row_blocks); unpadded
// float32 GRU inference does the same (gru_infer). GRU training, padded GRU inference,
// float64, float32 layers too wide for the row blocks (see rows_fit) and a few bf16 shapes run
// per step: one whole-sequence input projection, then per step one in-place oneDNN GEMM
// (multi-threaded) and one gate pass split over the rows. The equations are those of rnnlab/nn/cells.py, and
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
#pragma once

#include <ATen/ATen.h>

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
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

namespace rnnlab_ext {

using at::Tensor;

using at::Tensor;

// out = beta * out + a @ b. oneDNN for float32 (1.5-2x MKL at these shapes on AVX-512 CPUs) and
// bfloat16 (all three operands bf16: oneDNN accumulates in fp32 and rounds the result once; it
// runs on avx512_bf16's dot products); float64, which only the gradient checks use, goes
// through ATen's addmm.
inline void gemm(const Tensor& a, const Tensor& b, const Tensor& out, float beta) {
  if (out.scalar_type() == at::kFloat || out.scalar_type() == at::kBFloat16) {
    at::native::mkldnn_matmul(a, b, out, beta, 1.0f);
  } else if (beta == 0.0f) {
    at::mm_out(const_cast<Tensor&>(out), a, b);
  } else {
    const_cast<Tensor&>(out).addmm_(a, b);
  }
}

inline Tensor product(const Tensor& a, const Tensor& b) {
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
inline Tensor input_projection(const Tensor& xt, const Tensor& w_ih, const Tensor& bias) {
  const int64_t T = xt.size(0), B = xt.size(1), GH = w_ih.size(0);
  Tensor gates = at::empty({T, B, GH}, xt.options());
  gates.copy_(bias);  // broadcast (G*H) -> (T, B, G*H); the GEMM adds onto it
  gemm(xt.view({T * B, -1}), w_ih.t(), gates.view({T * B, GH}), 1.0f);
  return gates;
}

inline const bool* mask_data(const c10::optional<Tensor>& mask) {
  return mask.has_value() ? mask->data_ptr<bool>() : nullptr;
}

inline int64_t grain(int64_t B) { return std::max<int64_t>(1, B / at::get_num_threads()); }

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

inline int64_t row_threads(int64_t B, int64_t threads) {
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

// Whether float32 LSTM weights of H units are small enough for the row blocks. Each thread's
// per-step GEMMs stream the whole (H, 4H) W_hh (and W_ih) for its few rows; that pays while the
// weights stay in a core's L2 cache and not beyond. Measured with `rnnlab bench` on a 2-core
// AVX-512 host (2 MiB L2 per core), training, row blocks against per-step oneDNN GEMMs
// (multi-threaded, whole-sequence input projection): H = 128 (A, C, D, E) and 256 (B) ran
// 1.07-1.42x faster in row blocks (two threads); H = 512 (F, 4 MiB of W_hh) 1.3-1.4x and
// H = 650 (G, 6.6 MiB) 1.2-1.4x slower, at one thread and at two. bf16 weights are half the
// size and keep the row blocks.
constexpr int64_t kRowBlockWeightBytes = int64_t(2) << 20;

// gru_infer uses the same bound: its (H, 3H) W_hh is smaller than the LSTM's (H, 4H) at a width.
inline bool rows_fit(int64_t H) { return 4 * H * H * int64_t(sizeof(float)) <= kRowBlockWeightBytes; }

// c (M, N) (+)= a (M, K) @ b (K, N), row-major with leading dimensions, in the calling thread.
// Wide products go in slices of kColumns columns: the float32 ukernel ran (256, K=256) x 1024
// columns at 206 GFLOP/s on one core and the same in 256-column slices at 273 (workload B's
// 4H = 1024), as each slice's part of b stays in cache while all rows of a pass over it.
constexpr int64_t kColumns = 256;

// The same product in slices of `columns` columns (the whole width when columns >= N), float32
// or bf16 operands (a bf16 b VNNI-packed by pack_bf16, which pairs two values a column).
template <typename A>
inline void gemm_columns(int64_t M, int64_t N, int64_t K, const A* a, int64_t lda, const A* b,
                         int64_t ldb, float* c, int64_t ldc, bool accumulate, int64_t columns) {
  constexpr bool vnni = std::is_same_v<A, at::BFloat16>;
  constexpr int64_t per_column = vnni ? 2 : 1;  // b elements a column step moves past
  for (int64_t n0 = 0; n0 < N; n0 += columns) {
    const int64_t n = std::min(columns, N - n0);
    at::native::cpublas::brgemm(M, n, K, lda, ldb, ldc, accumulate, a, b + per_column * n0,
                                c + n0, vnni);
  }
}

inline void gemm_rows(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda,
                      const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  gemm_columns(M, N, K, a, lda, b, ldb, c, ldc, accumulate, N <= 2 * kColumns ? N : kColumns);
}

// The same with bf16 operands and a float32 c (exact fp32 accumulation); b must come from
// pack_bf16. Used by the bf16 mode where could_pack_bf16() holds. A packed b over
// kBf16SliceBytes goes in slices of kBf16Columns columns. Measured with
// benchmarks/row_products_bench.py on one core of an AVX-512 host without AMX (1 MiB L2 a core;
// benchmarks/RESULTS.md, "bf16 products in column slices"), 64 steps, whole / sliced, GFLOP/s:
// F's forward (64, K 512) x 2048 347 / 428, its backward (64, K 2048) x 512 355 / 457, G's
// forward (20, K 650) x 2600 409 / 430 and backward (20, K 2600) x 650 342 / 360. Left whole:
// B's 512 KiB (512, K 256) x 1024 at 437 (439 in 256-column slices) and F's input (64, K 64) x
// 2048 at 388 (355 in slices).
constexpr int64_t kBf16SliceBytes = int64_t(1) << 20;
constexpr int64_t kBf16Columns = 128;

inline void gemm_rows(int64_t M, int64_t N, int64_t K, const at::BFloat16* a, int64_t lda,
                      const at::BFloat16* b, int64_t ldb, float* c, int64_t ldc,
                      bool accumulate) {
  const bool whole = K * N * int64_t(sizeof(at::BFloat16)) <= kBf16SliceBytes;
  gemm_columns(M, N, K, a, lda, b, ldb, c, ldc, accumulate, whole ? N : kBf16Columns);
}

// Inputs at most this wide (pixel-by-pixel MNIST's I = 1, a few sensor channels) skip the
// training kernel's per-step x_t W_ih^T GEMM: its I multiply-adds per gate are added to the gate
// rows instead (add_inputs), and the backward gathers dW_ih and dx in its time loop
// (gather_inputs) instead of GEMMs over the whole (T*B, 4H) dpre, 51 MB at workload E, for 4H*I
// outputs. In bf16 mode x_t W_ih^T then stays float32. Measured at E's shape (B 32, T 784,
// H 128, one thread, fp32, three runs each; benchmarks/RESULTS.md, "Narrow inputs"): forward
// and backward took 61.1 / 60.6 / 62.5 / 66.1 ms at I = 1 / 2 / 4 / 8 this way and 68.3 / 69.1 /
// 68.8 / 69.3 ms with the GEMMs.
constexpr int64_t kSmallInputs = 4;

inline bool small_inputs(int64_t I) { return I <= kSmallInputs; }

// Inference takes add_inputs only for I = 1: 18.2 against 18.9 ms there, while at I = 2 / 4 /
// 8 the GEMM of depth I was as fast or faster (19.0 / 18.9 / 19.3 ms against 19.2 / 19.3 /
// 20.9), as nothing of size T*B is stored or reread in inference. Both paths compute x_t W_ih^T
// in float32 (differing in rounding only), so inference still matches training in bf16 mode.
constexpr int64_t kAddInputsInference = 1;

// a (N) += x (I) @ wt (I, N): one row's x_t W_ih^T with wt = W_ih^T, for a small I.
inline void add_inputs(float* a, const float* x, const float* wt, int64_t I, int64_t N) {
  for (int64_t k = 0; k < I; ++k) {
    const float xk = x[k];
    const float* w = wt + k * N;
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) a[j] += xk * w[j];
  }
}

// One row's share of the input gradients, for a small I: dw (I, N) += x (I) outer d (N), the
// transposed dW_ih, and, given dx, dx (I) = wt (I, N) @ d (N), that is d @ W_ih.
inline void gather_inputs(const float* d, const float* x, const float* wt, int64_t I, int64_t N,
                          float* dw, float* dx) {
  for (int64_t k = 0; k < I; ++k) {
    const float xk = x[k];
    float* w = dw + k * N;
#pragma omp simd
    for (int64_t j = 0; j < N; ++j) w[j] += xk * d[j];
    if (!dx) continue;
    const float* wk = wt + k * N;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < N; ++j) dot += d[j] * wk[j];
    dx[k] = dot;
  }
}

// A GEMM operand of the row-block kernels, float32 or bf16 (a bf16 b operand must come from
// pack_bf16), so one loop serves both precisions.
struct Operand {
  const void* data;
  bool bf16;
  explicit Operand(const Tensor& t)
      : data(t.data_ptr()), bf16(t.scalar_type() == at::kBFloat16) {}
  Operand(const float* p) : data(p), bf16(false) {}
  Operand(const at::BFloat16* p) : data(p), bf16(true) {}
};

// c (M, N) (+)= a (M, K) @ b (K, N), with a starting a_off elements into its data.
inline void gemm_rows(int64_t M, int64_t N, int64_t K, Operand a, int64_t a_off, int64_t lda,
                      Operand b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  TORCH_INTERNAL_ASSERT_DEBUG_ONLY(a.bf16 == b.bf16, "gemm_rows: mixed float32/bf16 operands");
  if (a.bf16) {
    gemm_rows(M, N, K, static_cast<const at::BFloat16*>(a.data) + a_off, lda,
              static_cast<const at::BFloat16*>(b.data), ldb, c, ldc, accumulate);
  } else {
    gemm_rows(M, N, K, static_cast<const float*>(a.data) + a_off, lda,
              static_cast<const float*>(b.data), ldb, c, ldc, accumulate);
  }
}

// b (K, N) float32, row-major -> bf16 in the VNNI layout the bf16 ukernel reads: pairs of K rows
// interleaved, (K/2, N, 2), so K must be even.
inline Tensor pack_bf16(const Tensor& b) {
  const int64_t K = b.size(0), N = b.size(1);
  return b.to(at::kBFloat16).view({K / 2, 2, N}).transpose(1, 2).contiguous();
}

// Whether the bf16 ukernel runs here and computes what it should: checked once on a small
// product against ATen (some oneDNN builds take bf16 ukernels only on AMX CPUs), so a CPU where
// it does not hold uses the per-step oneDNN matmuls instead of returning wrong numbers.
inline bool bf16_rows_work() {
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

inline bool could_pack_bf16(int64_t K) { return K % 2 == 0 && bf16_rows_work(); }

// The kernels, one file each (see their comments); module.cpp binds them.
std::vector<Tensor> lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                 const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias,
                                 const c10::optional<Tensor>& mask, bool reverse, bool train,
                                 bool bf16);
std::vector<Tensor> lstm_backward(const Tensor& dout_, const Tensor& dh_n, const Tensor& dc_n,
                                  const Tensor& xt, const Tensor& w_ih, const Tensor& w_hh,
                                  const Tensor& acts, const Tensor& hs, const Tensor& cs,
                                  const c10::optional<Tensor>& mask, bool reverse, bool need_dx);
std::vector<Tensor> lstm_infer(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias,
                               bool reverse, int64_t threads, bool bf16);
std::vector<Tensor> lstm_infer_pair(const Tensor& x_, const Tensor& h0f, const Tensor& c0f,
                                    const Tensor& w_ih_f, const Tensor& w_hh_f,
                                    const Tensor& bias_f, const Tensor& h0r, const Tensor& c0r,
                                    const Tensor& w_ih_r, const Tensor& w_hh_r,
                                    const Tensor& bias_r, int64_t threads, bool bf16);
std::vector<Tensor> softmax_xent_(Tensor& logits, const Tensor& targets, double scale);
std::vector<Tensor> gru_forward(const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                                const Tensor& w_hh, const Tensor& bias, const Tensor& b_hn,
                                const c10::optional<Tensor>& mask, bool reverse, bool train);
std::vector<Tensor> gru_infer(const Tensor& x_, const Tensor& h0_, const Tensor& w_ih,
                              const Tensor& w_hh, const Tensor& bias, const Tensor& b_hn,
                              bool reverse, int64_t threads);
std::vector<Tensor> gru_backward(const Tensor& dout_, const Tensor& dh_n, const Tensor& xt,
                                 const Tensor& w_ih, const Tensor& w_hh, const Tensor& acts,
                                 const Tensor& ghn, const Tensor& hs,
                                 const c10::optional<Tensor>& mask, bool reverse, bool need_dx);
Tensor min_scan_forward(const Tensor& k, const Tensor& bias, const Tensor& h0,
                        const c10::optional<Tensor>& mask, bool reverse, int64_t kind);
std::vector<Tensor> min_scan_backward(const Tensor& k, const Tensor& bias, const Tensor& h0,
                                      const Tensor& h, const Tensor& dh,
                                      const c10::optional<Tensor>& mask, bool reverse,
                                      int64_t kind);

// -- shared by the variants' kernels (lstm_variant.h, gru_variant.h) ----------------------------
using OptTensor = c10::optional<Tensor>;

// A tensor's data, or nullptr where it is undefined (an option that is off).
template <typename S>
S* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<S>() : nullptr;
}

template <typename S>
const S* ptr(const OptTensor& t) {
  return t.has_value() && t->defined() ? t->data_ptr<S>() : nullptr;
}

// fn(b0, b1, block) over `blocks` fixed blocks of the B rows, split between threads.
template <typename F>
void over_blocks(int64_t B, int64_t blocks, const F& fn) {
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) fn(B * k / blocks, B * (k + 1) / blocks, k);
  });
}

}  // namespace rnnlab_ext
