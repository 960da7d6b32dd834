// The LSTM inference kernel.
#include "recurrent.h"

namespace rnnlab_ext {

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
  const Operand xo(xb), h0o(h0b), wio(w_ih_t), who(w_hh_t);  // fp32 or bf16 each
  over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    std::vector<float> buf(rows * 4 * H);
    std::vector<at::BFloat16> hbuf(bh ? rows * H : 0);  // bf16 h_{t-1} of these rows
    float* g = buf.data();
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = reverse ? Tn - 1 - s : s, tp = reverse ? t + 1 : t - 1;
      gemm_rows(rows, 4 * H, I, xo, (b0 * Tn + t) * I, Tn * I, wio, 4 * H, g, 4 * H,
                false);  // x_t W_ih^T
      if (s == 0) {  // h_0 of these rows
        gemm_rows(rows, 4 * H, H, h0o, b0 * H, H, who, 4 * H, g, 4 * H, true);
      } else if (bh) {  // the bf16 copy of h_{t-1} this thread keeps
        gemm_rows(rows, 4 * H, H, Operand(hbuf.data()), 0, H, who, 4 * H, g, 4 * H, true);
      } else {  // h_{t-1} read in place from the output
        gemm_rows(rows, 4 * H, H, Operand(o), (b0 * Tn + tp) * H, Tn * H, who, 4 * H, g, 4 * H,
                  true);
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

}  // namespace rnnlab_ext
