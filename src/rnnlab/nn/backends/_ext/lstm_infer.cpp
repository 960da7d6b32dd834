// The LSTM inference kernel.
#include "recurrent.h"

namespace rnnlab_ext {

// LSTM inference without padding: each thread runs its block of batch rows through the whole
// time loop (over_row_blocks), so the loop has no synchronisation at all. (One direction of a
// float32 LSTM too wide for the row blocks, see rows_fit, runs lstm_forward's per-step loop.)
// Nothing of size T*B is kept but the output: each step's gates are x_t W_ih^T + h_{t-1}
// W_hh^T, two GEMMs into the thread's own (rows, 4H) buffer, which stays in cache (one GEMM for
// a one-wide input, whose x_t W_ih^T add_inputs adds: kAddInputsInference); x_t is read in
// place (rows of x, strided by T). A whole-sequence input projection would write and read back
// T*B*4H floats and, on first touch, page-fault its fresh memory in.
//
// bf16 = true (the bf16 mode): the GEMM operands x, h and the weights are bf16 (weights packed
// for the bf16 ukernel), accumulated in fp32; gates, c and the outputs stay float32, and each
// thread keeps a bf16 copy of its rows' h for the next step. Odd I or H (which the VNNI packing
// cannot take) use the float32 GEMM for that operand. ``threads`` caps the team (the tests force
// several to check every split).
namespace {

// One direction of an LSTM layer in inference, ready for infer_rows: its GEMM operands (float32
// or bf16), bias, and where its outputs and cell states go.
struct Direction {
  Tensor x, h0, w_ih_t, w_hh_t, bias;  // keep the operands alive
  float* out;  // h_t of row b at out + (b * T + t) * ldo: this direction's H columns
  float* c;    // (B, H) cell states, c_0 in, updated in place
  bool reverse, bh;  // bh: h is a bf16 operand (a per-thread bf16 copy is kept)
};

// The x operand of a layer's input: x itself, or its bf16 copy in bf16 mode where I packs and
// not small_inputs (whose x_t W_ih^T stays float32, as in training); made once for both
// directions of a pair.
Tensor x_operand(const Tensor& x, bool bf16) {
  const int64_t I = x.size(2);
  return bf16 && !small_inputs(I) && could_pack_bf16(I) ? x.to(at::kBFloat16) : x;
}

// x_op comes from x_operand.
Direction prepare(const Tensor& x_op, const Tensor& h0_, const Tensor& c, const Tensor& w_ih,
                  const Tensor& w_hh, const Tensor& bias, float* out, bool reverse, bool bf16) {
  const int64_t H = h0_.size(1);
  Tensor h0 = h0_.contiguous();
  const bool bx = x_op.scalar_type() == at::kBFloat16, bh = bf16 && could_pack_bf16(H);
  return Direction{x_op,
                   bh ? h0.to(at::kBFloat16) : h0,
                   bx ? pack_bf16(w_ih.t()) : w_ih.t().contiguous(),  // (I, 4H)
                   bh ? pack_bf16(w_hh.t()) : w_hh.t().contiguous(),  // (H, 4H)
                   bias.contiguous(),
                   out,
                   c.data_ptr<float>(),
                   reverse,
                   bh};
}

// Rows [b0, b1) of direction d through all Tn steps, in the calling thread; the output rows are
// ldo floats wide (H for one direction, 2H when both write into one (B, T, 2H) tensor).
void infer_rows(const Direction& d, int64_t b0, int64_t b1, int64_t Tn, int64_t H, int64_t ldo) {
  const int64_t rows = b1 - b0, I = d.x.size(2);
  const Operand xo(d.x), h0o(d.h0), wio(d.w_ih_t), who(d.w_hh_t);
  const float* bp = d.bias.data_ptr<float>();
  const bool x_small = I <= kAddInputsInference && !xo.bf16;  // add_inputs, no GEMM
  const float* xp = x_small ? d.x.data_ptr<float>() : nullptr;
  const float* wip = x_small ? d.w_ih_t.data_ptr<float>() : nullptr;  // (I, 4H)
  std::vector<float> buf(rows * 4 * H);
  std::vector<at::BFloat16> hbuf(d.bh ? rows * H : 0);  // bf16 h_{t-1} of these rows
  float* g = buf.data();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = d.reverse ? Tn - 1 - s : s, tp = d.reverse ? t + 1 : t - 1;
    if (!x_small) {
      gemm_rows(rows, 4 * H, I, xo, (b0 * Tn + t) * I, Tn * I, wio, 4 * H, g, 4 * H,
                false);  // x_t W_ih^T
    }
    const bool acc = !x_small;  // onto x_t W_ih^T, or the first write of the buffer
    if (s == 0) {  // h_0 of these rows
      gemm_rows(rows, 4 * H, H, h0o, b0 * H, H, who, 4 * H, g, 4 * H, acc);
    } else if (d.bh) {  // the bf16 copy of h_{t-1} this thread keeps
      gemm_rows(rows, 4 * H, H, Operand(hbuf.data()), 0, H, who, 4 * H, g, 4 * H, acc);
    } else {  // h_{t-1} read in place from the output
      gemm_rows(rows, 4 * H, H, Operand(d.out), (b0 * Tn + tp) * ldo, Tn * ldo, who, 4 * H, g,
                4 * H, acc);
    }
    for (int64_t r = 0; r < rows; ++r) {
      float* a = g + r * 4 * H;
      if (x_small) add_inputs(a, xp + ((b0 + r) * Tn + t) * I, wip, I, 4 * H);
      float* cr = d.c + (b0 + r) * H;
      float* hr = d.out + ((b0 + r) * Tn + t) * ldo;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = sigmoid(a[j] + bp[j]), f = sigmoid(a[H + j] + bp[H + j]);
        const float gg = std::tanh(a[2 * H + j] + bp[2 * H + j]);
        const float og = sigmoid(a[3 * H + j] + bp[3 * H + j]);
        const float cn = f * cr[j] + i * gg;
        cr[j] = cn;
        hr[j] = og * std::tanh(cn);
      }
      if (d.bh) to_bf16(hr, hbuf.data() + r * H, H);
    }
  }
}

void check_float(const Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "lstm_infer expects float32, got ", x.scalar_type());
}

}  // namespace

std::vector<Tensor> lstm_infer(const Tensor& x_, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias,
                               bool reverse, int64_t threads, bool bf16) {
  check_float(x_);
  const int64_t H = h0.size(1);
  if (!bf16 && !rows_fit(H)) {  // too wide for the row blocks: per step, as in training
    return lstm_forward(x_, h0, c0, w_ih, w_hh, bias, c10::nullopt, reverse, false, false);
  }
  Tensor x = x_.contiguous();
  const int64_t B = x.size(0), Tn = x.size(1);
  Tensor out = at::empty({B, Tn, H}, x.options());
  Tensor c = c0.clone(at::MemoryFormat::Contiguous);  // (B, H), updated in place
  if (Tn == 0) return {out, h0.clone(), c};
  const Direction d =
      prepare(x_operand(x, bf16), h0, c, w_ih, w_hh, bias, out.data_ptr<float>(), reverse, bf16);
  over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) { infer_rows(d, b0, b1, Tn, H, H); });
  return {out, out.select(1, reverse ? 0 : Tn - 1).clone(), c};
}

// Both directions of a bidirectional layer at once, into one (B, T, 2H) output (forward
// direction in the first H columns): the team's even threads take the forward direction's row
// blocks and the odd ones the reverse direction's, so with two threads each runs one direction
// over the whole batch (GEMMs of B rows instead of B/2, and no concatenation afterwards).
// Returns {out, h_n forward, c_n forward, h_n reverse, c_n reverse}.
std::vector<Tensor> lstm_infer_pair(const Tensor& x_, const Tensor& h0f, const Tensor& c0f,
                                    const Tensor& w_ih_f, const Tensor& w_hh_f,
                                    const Tensor& bias_f, const Tensor& h0r, const Tensor& c0r,
                                    const Tensor& w_ih_r, const Tensor& w_hh_r,
                                    const Tensor& bias_r, int64_t threads, bool bf16) {
  check_float(x_);
  Tensor x = x_.contiguous();
  const int64_t B = x.size(0), Tn = x.size(1), H = h0f.size(1);
  Tensor out = at::empty({B, Tn, 2 * H}, x.options());
  Tensor cf = c0f.clone(at::MemoryFormat::Contiguous), cr = c0r.clone(at::MemoryFormat::Contiguous);
  if (Tn == 0) return {out, h0f.clone(), cf, h0r.clone(), cr};
  float* o = out.data_ptr<float>();
  const Tensor xo = x_operand(x, bf16);
  const Direction dirs[2] = {prepare(xo, h0f, cf, w_ih_f, w_hh_f, bias_f, o, false, bf16),
                             prepare(xo, h0r, cr, w_ih_r, w_hh_r, bias_r, o + H, true, bf16)};
#pragma omp parallel num_threads(std::max<int64_t>(1, std::min<int64_t>(threads, 2 * B)))
  {
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();
    if (team == 1) {
      for (const Direction& d : dirs) infer_rows(d, 0, B, Tn, H, 2 * H);
    } else {
      const int64_t dir = me % 2, n = team / 2 + (dir < team % 2 ? 1 : 0), k = me / 2;
      const int64_t b0 = B * k / n, b1 = B * (k + 1) / n;
      if (b1 > b0) infer_rows(dirs[dir], b0, b1, Tn, H, 2 * H);
    }
    at::native::cpublas::brgemm_release(false);
    at::native::cpublas::brgemm_release(true);
  }
  Tensor last = out.select(1, Tn - 1), first = out.select(1, 0);
  return {out, last.narrow(1, 0, H).clone(), cf, first.narrow(1, H, H).clone(), cr};
}

}  // namespace rnnlab_ext
