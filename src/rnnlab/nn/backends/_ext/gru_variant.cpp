// The GRU variants' time loop, forward (see gru_variant.h for the algorithm, the threads and
// the layouts; gru_variant_backward.cpp has the backward).
#include "gru_variant.h"

namespace rnnlab_ext {
namespace {

using namespace gru_variant;  // the helpers both halves share

// The forward's buffers and steps. "Whole" buffers hold every step (T, B, .); in inference the
// per-step ones hold only the current step (B, .).
template <typename S>
struct Forward {
  Problem<S> q;
  Tensor w_hh_t;   // (H, G) contiguous
  const S* ones;   // (G)
  const S* zeros;  // (H)
  S* acts;    // (T, B, G) x W_ih^T (no LN) in, activated r, z, n out
  S* xs;      // (T, B, G) the normalised x W_ih^T (LN, training); else acts itself
  S* gh;      // h_in W_hh^T, normalised in place with LN: (T, B, G) LN training, else (B, G)
  S* rstd_h;  // LN: (T, B) training, else (B)
  S* rec;     // a_h_n + b_hn: (T, B, H) training, else (B, H)
  S* hs;      // slots (T + 1, B, H) training, else (2, B, H)
  S* hin;     // dropout: h * m_rec, (T, B, H) training, else (B, H)
  S* out;     // (B, T, H)
  bool whole_gh;

  int64_t step_row(bool whole, int64_t t, int64_t b) const { return whole ? t * q.B + b : b; }

  // The recurrent GEMM's a operand of rows [b0, b1) at time t (slot p): h_in or the carried h.
  const S* h_operand(int64_t t, int64_t p, int64_t b0) const {
    return q.m_rec ? hin + step_row(q.train, t, b0) * q.H : hs + (p * q.B + b0) * q.H;
  }

  void dropout_rows(int64_t s, int64_t b0, int64_t b1) const {
    if (!q.m_rec) return;
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), H = q.H;
    for (int64_t b = b0; b < b1; ++b) {
      const S* h = hs + (p * q.B + b) * H;
      const S* m = q.m_rec + b * H;
      S* hi = hin + step_row(q.train, t, b) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) hi[j] = h[j] * m[j];
    }
  }

  // gh[b0:b1] = h_in W_hh^T.
  void recurrent_gemm(int64_t s, int64_t b0, int64_t b1, bool rows) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), G = q.G;
    mm<S>(rows, b1 - b0, h_operand(t, p, b0), q.H, w_hh_t,
          gh + step_row(whole_gh, t, b0) * G, G, false);
  }

  void gate_rows(int64_t s, int64_t b0, int64_t b1) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t), n = q.slots.next(s, t);
    const int64_t B = q.B, H = q.H, G = q.G;
    // Locals inside the simd loops: a member pointer might, for all the compiler knows, be
    // changed by a store through a float pointer, and the loop would stay scalar.
    const S *bias = q.bias, *b_hn = q.b_hn, *g_ih = q.g_ih, *g_hh = q.g_hh;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row = t * B + b;
      const S* hp = hs + (p * B + b) * H;
      S* hn = hs + (n * B + b) * H;
      S* o = out + (b * q.T + t) * H;
      if (q.padded(b, t)) {
        std::copy(hp, hp + H, hn);
        std::fill(o, o + H, S(0));
        continue;
      }
      S* a = acts + row * G;  // in: x W_ih^T (no LN); out: r, z, n
      const S* x = xs + row * G;  // may be a itself: each j reads before it writes
      S* hh = gh + step_row(whole_gh, t, b) * G;
      if (q.ln) rstd_h[step_row(q.train, t, b)] = normalise(hh, G, q.eps);
      S* rc = rec + step_row(q.train, t, b) * H;
      const S* z_h = q.z_h ? q.z_h + (b * q.T + t) * H : zeros;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = sigmoid(x[j] * g_ih[j] + bias[j] + hh[j] * g_hh[j]);
        const S z = sigmoid(x[H + j] * g_ih[H + j] + bias[H + j] + hh[H + j] * g_hh[H + j]);
        const S c = hh[2 * H + j] * g_hh[2 * H + j] + b_hn[j];  // which r multiplies
        const S nn = std::tanh(x[2 * H + j] * g_ih[2 * H + j] + bias[2 * H + j] + r * c);
        const S h_new = (S(1) - z) * nn + z * hp[j];
        const S h = z_h[j] * hp[j] + (S(1) - z_h[j]) * h_new;  // zoneout (d = 0 without)
        a[j] = r;
        a[H + j] = z;
        a[2 * H + j] = nn;
        rc[j] = c;
        hn[j] = h;
        o[j] = h;
      }
    }
  }

  void step(int64_t s, int64_t b0, int64_t b1) const {
    dropout_rows(s, b0, b1);
    recurrent_gemm(s, b0, b1, true);
    gate_rows(s, b0, b1);
  }
};

template <typename S>
std::vector<Tensor> forward_impl(const Tensor& x, const Tensor& h0,
                                 const std::vector<OptTensor>& params,
                                 const std::vector<OptTensor>& noise, const OptTensor& mask,
                                 bool reverse, double eps, bool train, int64_t mode) {
  const Tensor &w_ih = *params[0], &w_hh = *params[1];
  const int64_t B = x.size(0), T = x.size(1), I = x.size(2), H = h0.size(1), G = 3 * H;
  const auto opt = x.options();
  Tensor consts = constants(x, H);
  Forward<S> f{};
  f.q = problem<S>(B, T, H, params, noise, mask, consts, reverse, eps, train);
  const Problem<S>& q = f.q;
  f.zeros = consts.data_ptr<S>();
  f.ones = f.zeros + H;
  f.w_hh_t = w_hh.t().contiguous();
  const bool rows = use_row_blocks(std::is_same_v<S, float>, H, mode);

  // The input projection of every step, one GEMM (T*B, I) @ (I, G), and its LayerNorm over
  // all T*B rows.
  Tensor xt = x.transpose(0, 1).contiguous();  // (T, B, I)
  Tensor ax = at::empty({T, B, G}, opt);
  Tensor ax2 = ax.view({T * B, G});
  at::mm_out(ax2, xt.view({T * B, I}), w_ih.t());
  Tensor rstd_x;
  if (q.ln) {
    rstd_x = at::empty({T, B}, opt);
    S *a = ax.data_ptr<S>(), *rs = rstd_x.data_ptr<S>();
    const S e = q.eps;
    at::parallel_for(0, T * B, std::max<int64_t>(1, 4096 / G), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) rs[r] = normalise(a + r * G, G, e);
    });
  }
  // Training with LayerNorm keeps the normalised x W_ih^T apart from the gates it feeds.
  Tensor acts = q.ln && train ? at::empty({T, B, G}, opt) : ax;
  f.whole_gh = q.ln && train;
  Tensor gh = f.whole_gh ? at::empty({T, B, G}, opt) : at::empty({B, G}, opt);
  Tensor rstd_h = q.ln ? (train ? at::empty({T, B}, opt) : at::empty({B}, opt)) : Tensor();
  Tensor rec = train ? at::empty({T, B, H}, opt) : at::empty({B, H}, opt);
  Tensor hs = at::empty({train ? T + 1 : 2, B, H}, opt);
  Tensor hin = q.m_rec ? (train ? at::empty({T, B, H}, opt) : at::empty({B, H}, opt)) : Tensor();
  Tensor out = at::empty({B, T, H}, opt);
  hs[q.slots.prev(0, q.slots.time(0))].copy_(h0);
  f.acts = acts.data_ptr<S>();
  f.xs = ax.data_ptr<S>();
  f.gh = gh.data_ptr<S>();
  f.rstd_h = ptr<S>(rstd_h);
  f.rec = rec.data_ptr<S>();
  f.hs = hs.data_ptr<S>();
  f.hin = ptr<S>(hin);
  f.out = out.data_ptr<S>();

  if (rows) {
    const int64_t threads = std::is_same_v<S, float> ? at::get_num_threads() : 1;
    over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
      for (int64_t s = 0; s < T; ++s) f.step(s, b0, b1);
    });
  } else {
    const int64_t blocks = row_threads(B, at::get_num_threads());
    for (int64_t s = 0; s < T; ++s) {
      over_blocks(B, blocks, [&](int64_t b0, int64_t b1, int64_t) { f.dropout_rows(s, b0, b1); });
      f.recurrent_gemm(s, 0, B, false);
      over_blocks(B, blocks, [&](int64_t b0, int64_t b1, int64_t) { f.gate_rows(s, b0, b1); });
    }
  }
  Tensor h_n = hs[q.slots.next(T - 1, q.slots.time(T - 1))].clone();
  if (!train) return {out, h_n};
  // What the backward reads (undefined where an option is off), in this order.
  return {out, h_n, xt, acts, rec, hs, hin, q.ln ? ax : Tensor(), rstd_x,
          q.ln ? gh : Tensor(), rstd_h};
}

}  // namespace

// Returns {out (B, T, H), h_n (B, H)} and, when training, what gru_variant_backward reads (see
// forward_impl). params: w_ih (G, I), w_hh (G, H), bias (G), bias_hn (H), ln_ih_weight (G),
// ln_hh_weight (G) (the last two None without LayerNorm); noise: recurrent (B, H), zone_h
// (B, T, H) or None; mask (B, T) bool or None.
std::vector<Tensor> gru_variant_forward(const Tensor& x, const Tensor& h0,
                                        const std::vector<OptTensor>& params,
                                        const std::vector<OptTensor>& noise,
                                        const OptTensor& mask, bool reverse, double eps,
                                        bool train, int64_t mode) {
  TORCH_CHECK(params.size() == 6 && noise.size() == 2,
              "gru_variant_forward expected 6 parameters and 2 masks, got ", params.size(),
              " and ", noise.size());
  TORCH_CHECK(present(params[4]) == present(params[5]), "gru_variant_forward expected both "
              "LayerNorm gains or neither");
  TORCH_CHECK(x.dim() == 3 && h0.dim() == 2 && x.size(0) == h0.size(0) && x.size(1) > 0,
              "gru_variant_forward expected x (B, T, I) with T > 0 and h0 (B, H), got ",
              x.sizes(), " and ", h0.sizes());
  check_contiguous("gru_variant_forward", {OptTensor(x), OptTensor(h0), mask});
  check_contiguous("gru_variant_forward", params);
  check_contiguous("gru_variant_forward", noise);
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_variant_forward", [&] {
    result = forward_impl<scalar_t>(x, h0, params, noise, mask, reverse, eps, train, mode);
  });
  return result;
}

}  // namespace rnnlab_ext
