// Python bindings of the compiled kernels (rnnlab/nn/backends/_ext/__init__.py builds and loads
// this module; rnnlab/nn/backends/compiled.py calls it).
#include <torch/extension.h>

#include <xmmintrin.h>

#include "recurrent.h"

namespace rnnlab_ext {

// to_bf16 on a whole float32 tensor, for the tests to compare with torch's own rounding.
Tensor round_bf16(const Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "round_bf16 expects float32, got ", x.scalar_type());
  Tensor src = x.contiguous();
  Tensor out = at::empty(src.sizes(), src.options().dtype(at::kBFloat16));
  to_bf16(src.data_ptr<float>(), out.data_ptr<at::BFloat16>(), src.numel());
  return out;
}

// c = a @ b as the row blocks compute it: a (steps * M, K) in `steps` products of M rows each
// (a time loop's steps), b (K, N), float32 or bf16 operands (a bf16 b packed once here, as the
// bf16 mode packs its weights), c float32. columns = 0: gemm_rows with its own rule for column
// slices; columns > 0: slices of that width, the whole width included, for
// benchmarks/row_products_bench.py to compare. For the tests (tests/test_row_products.py) and
// that bench.
Tensor product_rows(const Tensor& a_, const Tensor& b_, int64_t steps, int64_t columns) {
  TORCH_CHECK(a_.dim() == 2 && b_.dim() == 2 && a_.size(1) == b_.size(0),
              "product_rows expects a (M, K) and b (K, N), got ", a_.sizes(), " and ", b_.sizes());
  TORCH_CHECK(a_.scalar_type() == b_.scalar_type() && (a_.scalar_type() == at::kFloat ||
                                                       a_.scalar_type() == at::kBFloat16),
              "product_rows expects two float32 or two bf16 operands, got ", a_.scalar_type(),
              " and ", b_.scalar_type());
  TORCH_CHECK(steps >= 1 && a_.size(0) % steps == 0, "product_rows expects steps dividing the ",
              a_.size(0), " rows of a, got ", steps);
  const bool bf16 = a_.scalar_type() == at::kBFloat16;
  TORCH_CHECK(!bf16 || could_pack_bf16(b_.size(0)),
              "the bf16 row products need an even K and a working bf16 ukernel");
  const int64_t M = a_.size(0) / steps, K = a_.size(1), N = b_.size(1);
  Tensor a = a_.contiguous(), b = bf16 ? pack_bf16(b_.to(at::kFloat)) : b_.contiguous();
  Tensor c = at::empty({steps * M, N}, a.options().dtype(at::kFloat));
  const Operand ao(a), bo(b);
  float* cp = c.data_ptr<float>();
  for (int64_t s = 0; s < steps; ++s) {
    float* cs = cp + s * M * N;
    if (columns <= 0) {
      gemm_rows(M, N, K, ao, s * M * K, K, bo, N, cs, N, false);
    } else if (bf16) {
      gemm_columns(M, N, K, a.data_ptr<at::BFloat16>() + s * M * K, K,
                   b.data_ptr<at::BFloat16>(), N, cs, N, false, columns);
    } else {
      gemm_columns(M, N, K, a.data_ptr<float>() + s * M * K, K, b.data_ptr<float>(), N, cs, N,
                   false, columns);
    }
  }
  at::native::cpublas::brgemm_release(bf16);
  return c;
}

// Flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6) on or off, for the calling thread and
// every thread of the OpenMP pool that ATen, oneDNN and MKL run on (a thread keeps its MXCSR, and
// threads started later copy their creator's); returns how many threads were set. Used by
// rnnlab/denormals.py: a gradient that vanishes through hundreds of steps passes through the
// subnormal range, where every arithmetic operation takes a microcode assist.
int64_t set_flush_denormals(bool on) {
  constexpr unsigned kFlushBits = 0x8040u;  // FTZ | DAZ
  auto apply = [on] {
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | kFlushBits) : (csr & ~kFlushBits));
  };
  apply();
  int64_t threads = 0;
#pragma omp parallel num_threads(at::get_num_threads()) reduction(+ : threads)
  {
    apply();
    threads += 1;
  }
  return threads;
}

// lstm_variant.cpp and lstm_variant_backward.cpp: the LSTM variants' time loop (VariantLSTMCell).
std::vector<Tensor> lstm_variant_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                         const std::vector<c10::optional<Tensor>>& params,
                                         const std::vector<c10::optional<Tensor>>& noise,
                                         const c10::optional<Tensor>& mask, bool reverse,
                                         double eps, bool train, bool bf16, int64_t mode);
std::vector<Tensor> lstm_variant_backward(const Tensor& dout, const Tensor& dh_n,
                                          const Tensor& dc_n,
                                          const std::vector<c10::optional<Tensor>>& saved,
                                          const std::vector<c10::optional<Tensor>>& params,
                                          const std::vector<c10::optional<Tensor>>& noise,
                                          const c10::optional<Tensor>& mask, bool reverse,
                                          double eps, bool need_dx, bool bf16, int64_t mode);

// gru_variant.cpp and gru_variant_backward.cpp: the GRU variants' time loop (VariantGRUCell).
std::vector<Tensor> gru_variant_forward(const Tensor& x, const Tensor& h0,
                                        const std::vector<c10::optional<Tensor>>& params,
                                        const std::vector<c10::optional<Tensor>>& noise,
                                        const c10::optional<Tensor>& mask, bool reverse,
                                        double eps, bool train, int64_t mode);
std::vector<Tensor> gru_variant_backward(const Tensor& dout, const Tensor& dh_n,
                                         const std::vector<c10::optional<Tensor>>& saved,
                                         const std::vector<c10::optional<Tensor>>& params,
                                         const std::vector<c10::optional<Tensor>>& noise,
                                         const c10::optional<Tensor>& mask, bool reverse,
                                         double eps, bool need_dx, int64_t mode);

}  // namespace rnnlab_ext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("round_bf16", &rnnlab_ext::round_bf16);
  m.def("product_rows", &rnnlab_ext::product_rows);
  m.def("lstm_forward", &rnnlab_ext::lstm_forward);
  m.def("lstm_backward", &rnnlab_ext::lstm_backward);
  m.def("lstm_infer", &rnnlab_ext::lstm_infer);
  m.def("lstm_infer_pair", &rnnlab_ext::lstm_infer_pair);
  m.def("bf16_rows_work", &rnnlab_ext::bf16_rows_work);
  m.def("gru_forward", &rnnlab_ext::gru_forward);
  m.def("gru_infer", &rnnlab_ext::gru_infer);
  m.def("gru_backward", &rnnlab_ext::gru_backward);
  m.def("softmax_xent_", &rnnlab_ext::softmax_xent_);
  m.def("min_scan_forward", &rnnlab_ext::min_scan_forward);
  m.def("min_scan_backward", &rnnlab_ext::min_scan_backward);
  m.def("set_flush_denormals", &rnnlab_ext::set_flush_denormals);
  m.def("lstm_variant_forward", &rnnlab_ext::lstm_variant_forward);
  m.def("lstm_variant_backward", &rnnlab_ext::lstm_variant_backward);
  m.def("gru_variant_forward", &rnnlab_ext::gru_variant_forward);
  m.def("gru_variant_backward", &rnnlab_ext::gru_variant_backward);
}
