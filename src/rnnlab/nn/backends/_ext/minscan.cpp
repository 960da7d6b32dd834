// The time loop of minGRU and minLSTM (Feng et al. 2024; rnnlab/nn/mincells.py), forward and
// backward, in C++: the compiled rows of their routing table (rnnlab/nn/backends/compiled.py).
//
// Shape legend: B batch, T time, H hidden units, G blocks of pre-activations (2 minGRU, 3
// minLSTM).
//
// Both cells are the linear recurrence h_t = a_t * h_{t-1} + b_t, with a_t and b_t elementwise
// functions of the step's pre-activations k_t = W x_t + b, which one GEMM computes for every
// step beforehand (in Python, so autograd gives dW, db and dx from dk). The pure-torch parallel
// path (rnnlab/nn/backends/parallel.py) makes a, b and the scan's intermediates as whole
// (B, T, H) tensors, about a dozen passes over memory forwards and as many backwards; here each
// thread takes whole sequences (batch rows), reads k once and writes h once, with a and b
// computed in registers:
//
//   minGRU   z = sigmoid(k_z)                       a = 1 - z    b = z * k_h
//   minLSTM  f' = f / (f + i)                       a = f'       b = (1 - f') * k_h
//
// with f = sigmoid(k_f), i = sigmoid(k_i). k arrives without its bias (the GEMM is a plain
// x W^T): the loops add the bias b (G*H) as they read k, and the backward sums dL/db over the
// steps as it writes dk, so neither the broadcast copy of b into the GEMM's output nor a
// separate reduction of dk over B*T (two passes over a (B, T, G*H) tensor) is made. MinLSTMCell.coefficients writes f' as
// sigmoid(log f - log i) so that it stays finite where f and i both underflow; here the same
// number is (1 + e^u) / ((1 + e^u) + (1 + e^v)) with u = -k_i, v = -k_f, every term scaled by
// e^-m, m = max(u, v, 0): three exponentials of non-positive numbers (no overflow), one of them
// e^0 = 1 (so no 0 / 0), and one division, where the log form takes five transcendental calls.
// Its derivatives need no more: with a = (1 + e^u) e^-m and b = (1 + e^v) e^-m (a + b >= 1),
// f' = a / (a + b), sigmoid(-k_f) = e^{v-m} / b and sigmoid(-k_i) = e^{u-m} / a, so
// df'/dk_f = f'(1 - f') sigmoid(-k_f) = a e^{v-m} / (a + b)^2 and df'/dk_i = -b e^{u-m} / (a + b)^2:
// the same three exponentials and one division, never by a or b alone (either may underflow).
// The backward
// runs the recurrence the other way: with g_t = dL/dh_t in full (the output's gradient plus
// a_{t+1} g_{t+1}), dL/db_t = g_t and dL/da_t = g_t h_{t-1}, chained through the formulas above
// into dk_t; dL/dh0 = a_0 g_0. It recomputes a and b from k rather than storing them.
//
// Layouts are batch first and contiguous: k (B, T, G*H) with blocks [z, h~] or [f, i, h~],
// bias (G*H), h and dh (B, T, H), h0 (B, H); ``reverse`` runs time from T-1 down to 0. A padded step (mask
// false) keeps the state (a = 1, b = 0) and its k gets no gradient.
#include "recurrent.h"

#include <immintrin.h>

namespace rnnlab_ext {
namespace {

enum MinKind : int64_t { kMinGRU = 0, kMinLSTM = 1 };

// Asks for the n elements at p ahead of their use (into L2): the rows of a step two ahead. Each
// step's rows span several 4 KiB pages, and the hardware prefetcher starts over at every page.
template <typename T>
inline void prefetch(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int64_t o = 0; o < n * int64_t(sizeof(T)); o += 64) _mm_prefetch(c + o, _MM_HINT_T1);
}

// dst[j] = src[j] for j < n, with non-temporal stores where dst is 64-byte aligned: the
// backward's dk is written once and not read back here, so its lines skip the cache and the read
// that an ordinary store makes of each line first (B 64, T 128, H 512, one thread: minLSTM's
// backward 19.5 -> 14.8 ms, minGRU's 9.2 -> 6.6). The caller ends with _mm_sfence. The forward's
// h keeps ordinary stores: streamed, it ran slower in the same measurement.
inline void stream_copy(float* dst, const float* src, int64_t n) {
  int64_t j = 0;
  for (; j < n && (reinterpret_cast<uintptr_t>(dst + j) & 63) != 0; ++j) dst[j] = src[j];
  for (; j + 16 <= n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
  for (; j < n; ++j) dst[j] = src[j];
}

inline void stream_copy(double* dst, const double* src, int64_t n) {
  int64_t j = 0;
  for (; j < n && (reinterpret_cast<uintptr_t>(dst + j) & 63) != 0; ++j) dst[j] = src[j];
  for (; j + 8 <= n; j += 8) _mm512_stream_pd(dst + j, _mm512_loadu_pd(src + j));
  for (; j < n; ++j) dst[j] = src[j];
}

// minLSTM's forget terms from k_f and k_i (see the top): a = (1 + e^u) e^-m, b = (1 + e^v) e^-m,
// e^{u-m} and e^{v-m}, with u = -k_i, v = -k_f, m = max(u, v, 0); f' = f / (f + i) = a / (a + b).
template <typename T>
struct ForgetTerms {
  T a, b, eu, ev;
};

template <typename T>
inline ForgetTerms<T> forget_terms(T kf, T ki) {
  const T u = -ki, v = -kf, m = std::max(std::max(u, v), T(0));
  const T one = std::exp(-m), eu = std::exp(u - m), ev = std::exp(v - m);
  return {one + eu, one + ev, eu, ev};  // a + b >= 1: one of one, eu, ev is e^0
}

template <typename T>
inline T forget_share(T kf, T ki) {
  const ForgetTerms<T> q = forget_terms(kf, ki);
  return q.a / (q.a + q.b);
}

struct MinArgs {
  int64_t B, T, H, G;
  bool reverse;
  MinKind kind;
  const bool* mask;  // (B, T) or nullptr
  bool on(int64_t b, int64_t t) const { return mask == nullptr || mask[b * T + t]; }
  int64_t time(int64_t s) const { return reverse ? T - 1 - s : s; }  // the s-th step read
};

MinArgs min_args(const Tensor& k, const Tensor& bias, const Tensor& h0, const Tensor& mask,
                 bool reverse, int64_t kind) {
  TORCH_CHECK(kind == kMinGRU || kind == kMinLSTM, "min_scan: kind 0 (minGRU) or 1 (minLSTM), got ",
              kind);
  const int64_t G = kind == kMinGRU ? 2 : 3;
  TORCH_CHECK(k.dim() == 3 && k.is_contiguous() && k.size(2) % G == 0,
              "min_scan expects contiguous pre-activations (B, T, ", G, "*H), got ", k.sizes());
  const int64_t B = k.size(0), T = k.size(1), H = k.size(2) / G;
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == G * H && bias.is_contiguous() &&
                  bias.scalar_type() == k.scalar_type(),
              "min_scan expects a contiguous bias (", G * H, ") of k's dtype, got ",
              bias.scalar_type(), " ", bias.sizes());
  TORCH_CHECK(h0.sizes() == at::IntArrayRef({B, H}) && h0.is_contiguous() &&
                  h0.scalar_type() == k.scalar_type(),
              "min_scan expects a contiguous h0 (", B, ", ", H, ") of k's dtype, got ",
              h0.scalar_type(), " ", h0.sizes());
  const bool* m = nullptr;
  if (mask.defined()) {
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous() &&
                    mask.sizes() == at::IntArrayRef({B, T}),
                "min_scan expects a contiguous bool mask (", B, ", ", T, "), got ",
                mask.scalar_type(), " ", mask.sizes());
    m = mask.data_ptr<bool>();
  }
  return {B, T, H, G, reverse, static_cast<MinKind>(kind), m};
}

template <typename scalar_t>
void forward_rows(const MinArgs& p, const scalar_t* k, const scalar_t* bias, const scalar_t* h0,
                  scalar_t* h, int64_t b0, int64_t b1) {
  const int64_t H = p.H, GH = p.G * p.H;
  for (int64_t b = b0; b < b1; ++b) {
    const scalar_t* prev = h0 + b * H;
    for (int64_t s = 0; s < p.T; ++s) {
      const int64_t t = p.time(s);
      if (s + 2 < p.T) prefetch(k + (b * p.T + p.time(s + 2)) * GH, GH);
      scalar_t* out = h + (b * p.T + t) * H;
      if (!p.on(b, t)) {
        std::copy(prev, prev + H, out);
      } else if (p.kind == kMinGRU) {
        const scalar_t *kz = k + (b * p.T + t) * GH, *kh = kz + H, *bz = bias, *bh = bias + H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t z = sigmoid(kz[j] + bz[j]);
          out[j] = (scalar_t(1) - z) * prev[j] + z * (kh[j] + bh[j]);
        }
      } else {
        const scalar_t *kf = k + (b * p.T + t) * GH, *ki = kf + H, *kh = ki + H;
        const scalar_t *bf = bias, *bi = bias + H, *bh = bias + 2 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t f = forget_share(kf[j] + bf[j], ki[j] + bi[j]);
          out[j] = f * prev[j] + (scalar_t(1) - f) * (kh[j] + bh[j]);
        }
      }
      prev = out;
    }
  }
}

// ``db`` (G*H) accumulates dL/db of rows b0..b1 (the caller gives each thread its own).
template <typename scalar_t>
void backward_rows(const MinArgs& p, const scalar_t* k, const scalar_t* bias, const scalar_t* h0,
                   const scalar_t* h, const scalar_t* dh, scalar_t* dk, scalar_t* dh0,
                   scalar_t* db, int64_t b0, int64_t b1) {
  const int64_t H = p.H, GH = p.G * p.H;
  std::vector<scalar_t> buffer(H + GH);
  scalar_t* carry = buffer.data();  // a_{t+1} g_{t+1}, the gradient reaching h_t from later
  scalar_t* grad = carry + H;       // dk_t, in cache, then streamed into dk
  for (int64_t b = b0; b < b1; ++b) {
    std::fill(carry, carry + H, scalar_t(0));
    for (int64_t s = p.T - 1; s >= 0; --s) {
      const int64_t t = p.time(s);
      const scalar_t* prev = s == 0 ? h0 + b * H : h + (b * p.T + p.time(s - 1)) * H;
      const scalar_t* d = dh + (b * p.T + t) * H;
      if (s - 2 >= 0) {
        const int64_t ta = p.time(s - 2);
        prefetch(k + (b * p.T + ta) * GH, GH);
        prefetch(dh + (b * p.T + ta) * H, H);
        if (s - 2 >= 1) prefetch(h + (b * p.T + p.time(s - 2 - 1)) * H, H);
      }
      scalar_t* dkt = grad;
      if (!p.on(b, t)) {  // a = 1, b = 0: the gradient passes on unchanged
        std::fill(dkt, dkt + GH, scalar_t(0));
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) carry[j] += d[j];
      } else if (p.kind == kMinGRU) {
        const scalar_t *kz = k + (b * p.T + t) * GH, *kh = kz + H, *bz = bias, *bh = bias + H;
        scalar_t *dkz = dkt, *dkh = dkt + H, *dbz = db, *dbh = db + H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t g = d[j] + carry[j];
          const scalar_t z = sigmoid(kz[j] + bz[j]);
          // dz = g (h~ - h_{t-1})
          const scalar_t dz = g * (kh[j] + bh[j] - prev[j]) * z * (scalar_t(1) - z);
          const scalar_t dhh = g * z;
          dkz[j] = dz;
          dkh[j] = dhh;
          dbz[j] += dz;
          dbh[j] += dhh;
          carry[j] = (scalar_t(1) - z) * g;
        }
      } else {
        const scalar_t *kf = k + (b * p.T + t) * GH, *ki = kf + H, *kh = ki + H;
        const scalar_t *bf = bias, *bi = bias + H, *bh = bias + 2 * H;
        scalar_t *dkf = dkt, *dki = dkt + H, *dkh = dkt + 2 * H;
        scalar_t *dbf = db, *dbi = db + H, *dbh = db + 2 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t g = d[j] + carry[j];
          const ForgetTerms<scalar_t> q = forget_terms(kf[j] + bf[j], ki[j] + bi[j]);
          const scalar_t r = scalar_t(1) / (q.a + q.b);
          const scalar_t f = q.a * r;  // f'; 1 - f' = b r
          // dL/df' = g (h_{t-1} - h~); df'/dk_f = a e^{v-m} r^2, df'/dk_i = -b e^{u-m} r^2
          const scalar_t e = g * (prev[j] - kh[j] - bh[j]) * r * r;
          const scalar_t dpf = e * q.a * q.ev, dpi = -e * q.b * q.eu;
          const scalar_t dhh = g * q.b * r;
          dkf[j] = dpf;
          dki[j] = dpi;
          dkh[j] = dhh;
          dbf[j] += dpf;
          dbi[j] += dpi;
          dbh[j] += dhh;
          carry[j] = f * g;
        }
      }
      stream_copy(dk + (b * p.T + t) * GH, grad, GH);
    }
    std::copy(carry, carry + H, dh0 + b * H);
  }
  _mm_sfence();
}

}  // namespace

// h (B, T, H): every step's state, from pre-activations k (B, T, G*H) less their bias (G*H),
// and h0 (B, H).
Tensor min_scan_forward(const Tensor& k, const Tensor& bias, const Tensor& h0,
                        const c10::optional<Tensor>& mask, bool reverse, int64_t kind) {
  const MinArgs p = min_args(k, bias, h0, mask.value_or(Tensor()), reverse, kind);
  Tensor h = at::empty({p.B, p.T, p.H}, k.options());
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "min_scan_forward", [&] {
    const scalar_t *kp = k.data_ptr<scalar_t>(), *h0p = h0.data_ptr<scalar_t>();
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    scalar_t* hp = h.data_ptr<scalar_t>();
    at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
      forward_rows(p, kp, bp, h0p, hp, b0, b1);
    });
  });
  return h;
}

// {dk (B, T, G*H), dh0 (B, H), db (G*H)} from the forward's k, bias, h0 and h and the gradient
// dh (B, T, H) of h.
std::vector<Tensor> min_scan_backward(const Tensor& k, const Tensor& bias, const Tensor& h0,
                                      const Tensor& h, const Tensor& dh,
                                      const c10::optional<Tensor>& mask, bool reverse,
                                      int64_t kind) {
  const MinArgs p = min_args(k, bias, h0, mask.value_or(Tensor()), reverse, kind);
  TORCH_CHECK(h.is_contiguous() && dh.is_contiguous() &&
                  h.sizes() == at::IntArrayRef({p.B, p.T, p.H}) && dh.sizes() == h.sizes() &&
                  dh.scalar_type() == k.scalar_type(),
              "min_scan_backward expects contiguous h and dh (", p.B, ", ", p.T, ", ", p.H,
              ") of k's dtype, got ", h.sizes(), " and ", dh.scalar_type(), " ", dh.sizes());
  Tensor dk = at::empty_like(k), dh0 = at::empty_like(h0);
  // one row of bias gradient per thread, summed at the end (a fixed order for a fixed thread
  // count, so a run is reproducible)
  Tensor db_rows = at::zeros({at::get_num_threads(), p.G * p.H}, k.options());
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "min_scan_backward", [&] {
    const scalar_t *kp = k.data_ptr<scalar_t>(), *h0p = h0.data_ptr<scalar_t>();
    const scalar_t *hp = h.data_ptr<scalar_t>(), *dhp = dh.data_ptr<scalar_t>();
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    scalar_t *dkp = dk.data_ptr<scalar_t>(), *dh0p = dh0.data_ptr<scalar_t>();
    scalar_t* dbp = db_rows.data_ptr<scalar_t>();
    at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
      scalar_t* db = dbp + at::get_thread_num() * p.G * p.H;
      backward_rows(p, kp, bp, h0p, hp, dhp, dkp, dh0p, db, b0, b1);
    });
  });
  return {dk, dh0, db_rows.sum(0)};
}

}  // namespace rnnlab_ext
