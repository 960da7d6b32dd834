// The GRU variants' time loop (rnnlab/nn/variant_gru.py: LayerNorm, recurrent dropout, zoneout)
// forward and with hand-written backpropagation through time: the compiled fast path of
// VariantGRUCell (rnnlab/nn/backends/gru_variant_compiled.py wraps it).
//
// Shape legend: B batch, T time, I input, H hidden units, G = 3H (gate rows r, z, n, torch's
// layout).
//
// One step, every option on (the cell's docstring has the same lines):
//   h_in = h * m_rec ;  a_x = LN(x W_ih^T) g_ih ;  a_h = LN(h_in W_hh^T) g_hh
//   r = sigmoid(a_x_r + a_h_r + b_r) ;  z = sigmoid(a_x_z + a_h_z + b_z)
//   n = tanh(a_x_n + b_n + r (a_h_n + b_hn)) ;  h_new = (1 - z) n + z h
//   h_t = d h + (1 - d) h_new                                         (zoneout)
// Without LayerNorm a gain is one (a row of ones: the product is exact), without dropout m_rec
// is one, without zoneout d is zero: one loop serves every combination.
//
// The algorithm is the fused path's (rnnlab/nn/backends/variant_fused.py):
// * forward: x W_ih^T for all steps in one GEMM, and its LayerNorm over all T*B rows at once;
//   then per step one recurrent GEMM and one pass over the gates (the recurrent product's
//   LayerNorm inside it, row by row). Training keeps the activated gates r, z, n, the
//   normalised products and their 1/std (LayerNorm), a_h_n + b_hn (which r multiplied), h_in
//   (dropout) and the states; inference keeps nothing beyond the step it is on.
// * backward, per step going back in time: one pass over the gates (giving dL/dA_x and, through
//   the recurrent LayerNorm, dL/d(h_in W_hh^T)), then dL/dh_in = dA_h W_hh (a GEMM). The
//   gradients of b, b_hn and g_hh are summed by each row block as it goes (rows still in
//   cache); after the loop the input LayerNorm's backward runs over all T*B rows at once, and
//   dx, dW_ih and dW_hh are single GEMMs over all T*B rows.
//
// Threads and GEMMs, as lstm_variant.h: batch rows are independent sequences, so each thread
// can run its own block of rows through every step with single-threaded oneDNN ukernel GEMMs
// (cpublas::brgemm, "row blocks"), never waiting for another. Where W_hh (3H x H float32) is
// over kRowBlockWeightBytes (recurrent.h: 2 MiB, H > 418) each step instead makes one GEMM over
// all rows through ATen (MKL, multi-threaded) and splits its gate pass over the row blocks
// ("per step"). Measured on the 2-core AVX-512 host, one thread, LayerNorm GRU forward +
// backward, CPU time, the core shared with other benchmarks: at (B, T, I, H) = (64, 128, 64,
// 512) per step took 212 + 306 ms where row blocks took 239 + 437; at H = 128 ((128, 28, 128,
// 128) and (64, 200, 128, 128)) the two were within the noise (fastest runs 8.3-8.6 + 13.6-14.0
// ms and 33.0-33.2 + 51.7-53.1 ms). float64 (only the gradient checks use it) runs in row
// blocks on one thread, its GEMMs through ATen.
//
// Layouts: x, out (B, T, .) and the zoneout mask (B, T, H) batch first in real time order;
// inside, time-major (T, B, .) buffers in real time order, and the carried h in the slots of
// recurrent.h (Slots: training keeps T + 1 of them, inference alternates between two). Padded
// steps (mask false) carry h and output zero; their gates get no gradient and the state
// gradient passes straight through.
#include <type_traits>

#include "recurrent.h"

namespace rnnlab_ext {
namespace {

bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

// gru_variant_forward's `mode`: 0 chooses, 1 forces row blocks, 2 per-step ATen GEMMs (the
// tests run both).
constexpr int64_t kAuto = 0, kRowBlocks = 1, kPerStep = 2;

bool use_row_blocks(bool is_float, int64_t H, int64_t mode) {
  if (!is_float || mode == kRowBlocks) return true;
  if (mode == kPerStep) return false;
  return 3 * H * H * int64_t(sizeof(float)) <= kRowBlockWeightBytes;
}

// c (M, N) (+)= a (M, K) @ b (K, N), row-major with leading dimensions: brgemm in the calling
// thread (float32 row blocks), else ATen.
template <typename S>
void mm(bool rows, int64_t M, const S* a, int64_t lda, const Tensor& b, S* c, int64_t ldc,
        bool acc) {
  if (M == 0) return;
  const int64_t K = b.size(0), N = b.size(1);
  if constexpr (std::is_same_v<S, float>) {
    if (rows) {
      gemm_rows(M, N, K, a, lda, b.data_ptr<float>(), N, c, ldc, acc);
      return;
    }
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
  Tensor A = at::from_blob(const_cast<S*>(a), {M, K}, {lda, 1}, opts);
  Tensor C = at::from_blob(c, {M, N}, {ldc, 1}, opts);
  if (acc) {
    C.addmm_(A, b);
  } else {
    at::mm_out(C, A, b);
  }
}

// v (n) <- (v - mean(v)) / sqrt(var(v) + eps), biased variance (F.layer_norm's); returns
// 1 / sqrt(var + eps).
template <typename S>
S normalise(S* v, int64_t n, S eps) {
  S sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += v[j];
  const S mean = sum / S(n);
  S sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) {
    const S d = v[j] - mean;
    sq += d * d;
  }
  const S rstd = S(1) / std::sqrt(sq / S(n) + eps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = (v[j] - mean) * rstd;
  return rstd;
}

// LayerNorm's backward for one row of y = xhat g, xhat = LN(v), rstd = 1 / std: from dy,
// dv = rstd (dy g - mean(dy g) - xhat mean(dy g xhat)). dv may be dy. Not inlined (gcc left
// the reductions scalar when they were inlined into the callers' loops).
template <typename S>
__attribute__((noinline)) void ln_backward(const S* dy, const S* xhat, const S* g, S rstd,
                                           int64_t n, S* dv) {
  S s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    const S v = dy[j] * g[j];
    s1 += v;
    s2 += v * xhat[j];
  }
  const S m1 = s1 / S(n), m2 = s2 / S(n);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) dv[j] = rstd * (dy[j] * g[j] - m1 - xhat[j] * m2);
}

// Everything one call shares: sizes, parameters and noise as raw pointers.
template <typename S>
struct Problem {
  int64_t B, T, H, G;
  bool ln, train;
  S eps;
  Slots slots;
  const S *bias, *b_hn;   // (G), (H)
  const S *g_ih, *g_hh;   // LN gains (G), or ones
  const S *m_rec, *z_h;   // (B, H) or ones, (B, T, H) or zeros
  const bool* mask;       // (B, T) or nullptr
  bool padded(int64_t b, int64_t t) const { return mask && !mask[b * T + t]; }
};

// consts: zeros (H), then ones (G): what an option that is off multiplies by.
template <typename S>
Problem<S> problem(int64_t B, int64_t T, int64_t H, const std::vector<OptTensor>& params,
                   const std::vector<OptTensor>& noise, const OptTensor& mask,
                   const Tensor& consts, bool reverse, double eps, bool train) {
  Problem<S> q;
  q.B = B;
  q.T = T;
  q.H = H;
  q.G = 3 * H;
  q.ln = present(params[4]);
  q.train = train;
  q.eps = S(eps);
  q.slots = Slots{T, reverse, train};
  const S *zeros = consts.data_ptr<S>(), *ones = zeros + H;
  q.bias = params[2]->data_ptr<S>();
  q.b_hn = params[3]->data_ptr<S>();
  q.g_ih = q.ln ? params[4]->data_ptr<S>() : ones;
  q.g_hh = q.ln ? params[5]->data_ptr<S>() : ones;
  q.m_rec = present(noise[0]) ? noise[0]->data_ptr<S>() : nullptr;
  q.z_h = present(noise[1]) ? noise[1]->data_ptr<S>() : nullptr;
  q.mask = present(mask) ? mask->data_ptr<bool>() : nullptr;
  return q;
}

Tensor constants(const Tensor& like, int64_t H) {
  Tensor c = at::zeros({4 * H}, like.options());
  c.narrow(0, H, 3 * H).fill_(1);
  return c;
}

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

// The backward's buffers and steps. Per step, going back in time, with dhd (B, H) the gradient
// reaching the carried h directly and dhi (B, H) the one through the later step's recurrent
// GEMM (dL/dh_in, before the dropout mask):
//   d = dL/dh_t = dhd + m_rec dhi + dout_t ;  dh_new = d (1 - z_h) ;  gate pass ;
//   dhd = d z_h + dh_new z ;  dhi = dA_h W_hh
template <typename S>
struct Backward {
  Problem<S> q;
  Tensor w_hh;           // (G, H)
  const S *ones, *zeros;
  const S *acts, *rec, *hs, *hhat, *rstd_h, *dout;
  S *dgx, *dgh;          // (T, B, G): dL/dA_x (pre-gain), dL/d(h_in W_hh^T)
  S *dhd, *dhi;          // (B, H)
  S* parts;              // per block: db (G), db_hn (H), dg_hh (G)
  int64_t NP;

  void gate_rows(int64_t s, int64_t b0, int64_t b1, int64_t block) const {
    const int64_t t = q.slots.time(s), p = q.slots.prev(s, t);
    const int64_t B = q.B, H = q.H, G = q.G;
    S* part = parts + block * NP;
    S *db = part, *db_hn = part + G, *dg_hh = part + G + H;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t row = t * B + b;
      S* dd = dhd + b * H;
      const S* di = dhi + b * H;
      const S* mr = q.m_rec ? q.m_rec + b * H : ones;
      S* dx = dgx + row * G;
      S* dh = dgh + row * G;
      if (q.padded(b, t)) {  // h_t = h_{t-1}: the gradient passes, the gates get none
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dd[j] += mr[j] * di[j];
        std::fill(dx, dx + G, S(0));
        std::fill(dh, dh + G, S(0));
        continue;
      }
      const S* a = acts + row * G;
      const S* rc = rec + row * H;
      const S* hp = hs + (p * B + b) * H;
      const S* go = dout + (b * q.T + t) * H;
      const S* z_h = q.z_h ? q.z_h + (b * q.T + t) * H : zeros;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const S r = a[j], z = a[H + j], nn = a[2 * H + j];
        const S d = dd[j] + mr[j] * di[j] + go[j];  // dL/dh_t
        const S dh_new = d * (S(1) - z_h[j]);
        const S da_n = dh_new * (S(1) - z) * (S(1) - nn * nn);
        const S da_z = dh_new * (hp[j] - nn) * z * (S(1) - z);
        const S da_r = da_n * rc[j] * r * (S(1) - r);
        const S drec = da_n * r;  // dL/d(a_h_n + b_hn)
        dd[j] = d * z_h[j] + dh_new * z;  // the direct paths h_{t-1} -> h_t
        dx[j] = da_r;
        dx[H + j] = da_z;
        dx[2 * H + j] = da_n;
        dh[j] = da_r;
        dh[H + j] = da_z;
        dh[2 * H + j] = drec;
        db_hn[j] += drec;
      }
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) db[j] += dx[j];
      if (q.ln) {  // a_h = LN(h_in W_hh^T) g_hh
        const S* hh = hhat + row * G;
#pragma omp simd
        for (int64_t j = 0; j < G; ++j) dg_hh[j] += dh[j] * hh[j];
        ln_backward(dh, hh, q.g_hh, rstd_h[row], G, dh);
      }
    }
  }

  // dhi[b0:b1] = dgh_t W_hh.
  void recurrent_gemm(int64_t s, int64_t b0, int64_t b1, bool rows) const {
    const int64_t row = q.slots.time(s) * q.B + b0;
    mm<S>(rows, b1 - b0, dgh + row * q.G, q.G, w_hh, dhi + b0 * q.H, q.H, false);
  }
};

// The input LayerNorm's backward over all T*B rows at once, in place: d (G) <- dL/d(x W_ih^T)
// from d = dL/dA_x; returns dL/dg_ih (summed per block of rows).
template <typename S>
Tensor input_ln_backward(Tensor& da, const Tensor& xhat, const Tensor& rstd_x, const S* g_ih,
                         int64_t G) {
  const int64_t rows = da.numel() / G, blocks = at::get_num_threads();
  Tensor parts = at::zeros({blocks, G}, da.options());
  S *d = da.data_ptr<S>(), *pp = parts.data_ptr<S>();
  const S *xh = xhat.data_ptr<S>(), *rs = rstd_x.data_ptr<S>();
  over_blocks(rows, blocks, [&, d, pp, xh, rs, g_ih, G](int64_t r0, int64_t r1, int64_t k) {
    S* dg = pp + k * G;
    for (int64_t r = r0; r < r1; ++r) {
      S* dr = d + r * G;
      const S* x = xh + r * G;
#pragma omp simd
      for (int64_t j = 0; j < G; ++j) dg[j] += dr[j] * x[j];
      ln_backward(dr, x, g_ih, rs[r], G, dr);
    }
  });
  return parts.sum(0);
}

// a^T @ b over all rows (a weight gradient); as (b^T a)^T where b is the narrower (MKL ran
// that faster for lstm_variant_backward.cpp's weight gradients).
Tensor weight_grad(const Tensor& a, const Tensor& b) {
  if (b.size(1) < a.size(1)) return at::mm(b.t(), a).t().contiguous();
  return at::mm(a.t(), b);
}

template <typename S>
std::vector<Tensor> backward_impl(const Tensor& dout_, const Tensor& dh_n,
                                  const std::vector<OptTensor>& saved,
                                  const std::vector<OptTensor>& params,
                                  const std::vector<OptTensor>& noise, const OptTensor& mask,
                                  bool reverse, double eps, bool need_dx, int64_t mode) {
  auto get = [&](size_t k) { return present(saved[k]) ? *saved[k] : Tensor(); };
  const Tensor xt = get(0), acts = get(1), rec = get(2), hs = get(3), hin = get(4);
  const Tensor xhat = get(5), rstd_x = get(6), hhat = get(7), rstd_h = get(8);
  const Tensor &w_ih = *params[0], &w_hh = *params[1];
  const int64_t T = acts.size(0), B = acts.size(1), G = acts.size(2), H = G / 3;
  const int64_t I = xt.size(2);
  const auto opt = acts.options();
  Tensor consts = constants(acts, H);
  Backward<S> k{};
  k.q = problem<S>(B, T, H, params, noise, mask, consts, reverse, eps, true);
  const Problem<S>& q = k.q;
  const bool rows = use_row_blocks(std::is_same_v<S, float>, H, mode);
  const int64_t threads = rows && !std::is_same_v<S, float> ? 1 : at::get_num_threads();
  const int64_t blocks = row_threads(B, threads);
  k.w_hh = w_hh.contiguous();
  k.zeros = consts.data_ptr<S>();
  k.ones = k.zeros + H;

  Tensor dout = dout_.contiguous();  // (B, T, H)
  Tensor dgx = at::empty({T, B, G}, opt), dgh = at::empty({T, B, G}, opt);
  Tensor dhd = dh_n.contiguous().clone(), dhi = at::zeros({B, H}, opt);
  k.NP = 2 * G + H;
  Tensor parts = at::zeros({blocks, k.NP}, opt);
  k.acts = acts.data_ptr<S>();
  k.rec = rec.data_ptr<S>();
  k.hs = hs.data_ptr<S>();
  k.hhat = ptr<S>(hhat);
  k.rstd_h = ptr<S>(rstd_h);
  k.dout = dout.data_ptr<S>();
  k.dgx = dgx.data_ptr<S>();
  k.dgh = dgh.data_ptr<S>();
  k.dhd = dhd.data_ptr<S>();
  k.dhi = dhi.data_ptr<S>();
  k.parts = parts.data_ptr<S>();

  if (rows) {
    over_row_blocks(B, threads, [&](int64_t b0, int64_t b1) {
      const int64_t block = omp_get_thread_num();
      for (int64_t s = T - 1; s >= 0; --s) {
        k.gate_rows(s, b0, b1, block);
        k.recurrent_gemm(s, b0, b1, true);
      }
    });
  } else {
    for (int64_t s = T - 1; s >= 0; --s) {
      over_blocks(B, blocks,
                  [&](int64_t b0, int64_t b1, int64_t blk) { k.gate_rows(s, b0, b1, blk); });
      k.recurrent_gemm(s, 0, B, false);
    }
  }
  Tensor dh0 = q.m_rec ? dhd.add_(dhi.mul_(*noise[0])) : dhd.add_(dhi);
  Tensor sums = parts.sum(0);
  Tensor db = sums.narrow(0, 0, G), db_hn = sums.narrow(0, G, H);
  Tensor dg_ih, dg_hh;
  if (q.ln) {
    dg_hh = sums.narrow(0, G + H, G);
    dg_ih = input_ln_backward<S>(dgx, xhat, rstd_x, q.g_ih, G);  // dgx <- dL/d(x W_ih^T)
  }
  // dx and the weight gradients: one GEMM each over all T*B rows (time order on both sides).
  Tensor flat = dgx.view({T * B, G});
  Tensor h_in = q.m_rec ? hin : hs.narrow(0, reverse ? 1 : 0, T);  // (T, B, H)
  Tensor dx;
  if (need_dx) dx = at::mm(flat, w_ih).view({T, B, I}).transpose(0, 1);  // (B, T, I)
  Tensor dw_ih = weight_grad(flat, xt.view({T * B, I}));                  // (G, I)
  Tensor dw_hh = weight_grad(dgh.view({T * B, G}), h_in.reshape({T * B, H}));  // (G, H)
  return {dx, dh0, dw_ih, dw_hh, db, db_hn, dg_ih, dg_hh};
}

void check_contiguous(const char* what, const std::vector<OptTensor>& tensors) {
  for (const OptTensor& t : tensors)
    TORCH_CHECK(!present(t) || t->is_contiguous(), what, " expected contiguous tensors, got "
                "strides ", t->strides());
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

// Returns {dx (B, T, I) or None, dh0, dW_ih, dW_hh, db, db_hn, dln_ih_weight, dln_hh_weight}
// (the last two None without LayerNorm).
std::vector<Tensor> gru_variant_backward(const Tensor& dout, const Tensor& dh_n,
                                         const std::vector<OptTensor>& saved,
                                         const std::vector<OptTensor>& params,
                                         const std::vector<OptTensor>& noise,
                                         const OptTensor& mask, bool reverse, double eps,
                                         bool need_dx, int64_t mode) {
  TORCH_CHECK(saved.size() == 9 && params.size() == 6 && noise.size() == 2,
              "gru_variant_backward expected 9 saved tensors, 6 parameters and 2 masks, got ",
              saved.size(), ", ", params.size(), " and ", noise.size());
  std::vector<Tensor> result;
  AT_DISPATCH_FLOATING_TYPES(saved[1]->scalar_type(), "gru_variant_backward", [&] {
    result = backward_impl<scalar_t>(dout, dh_n, saved, params, noise, mask, reverse, eps,
                                     need_dx, mode);
  });
  return result;
}

}  // namespace rnnlab_ext
