// The GRU variants' time loop, backward: hand-written backpropagation through time (see
// gru_variant.h for the algorithm, the threads and the layouts; gru_variant.cpp has the
// forward, whose saved tensors this reads).
#include "gru_variant.h"

namespace rnnlab_ext {
namespace {

using namespace gru_variant;  // the helpers both halves share

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

}  // namespace

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
