// Softmax cross-entropy over the rows of a language model's logits, in place, for
// rnnlab/nn/decoder_loss.py: one pass reads a row for its max and sum of exponentials (an online
// softmax), a second writes the loss gradient over it and adds it to this thread's bias-gradient
// sums. ATen's log_softmax, nll_loss, their backwards and the bias sum make about six passes over
// the (N, V) logits, which for a word-level model (V = 10,000) are larger than any other tensor
// of the step.
#include "recurrent.h"

namespace rnnlab_ext {

// logits (N, V) float32, contiguous; targets (N,) int64 in [0, V). Overwrites logits with
// scale * (softmax(logits) - onehot(targets)) and returns {loss_sum, bias_grad}: loss_sum a
// float64 scalar, the sum over rows of logsumexp(row) - row[target]; bias_grad (V,) the column
// sums of what logits now holds.
std::vector<Tensor> softmax_xent_(Tensor& logits, const Tensor& targets, double scale) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.dim() == 2 && logits.is_contiguous(),
              "softmax_xent_ expects contiguous float32 logits (N, V), got ",
              logits.scalar_type(), " ", logits.sizes());
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.dim() == 1 &&
                  targets.size(0) == logits.size(0),
              "softmax_xent_ expects int64 targets (", logits.size(0), ",), got ",
              targets.scalar_type(), " ", targets.sizes());
  const int64_t N = logits.size(0), V = logits.size(1);
  const int64_t threads = at::get_num_threads();
  Tensor parts = at::zeros({threads, V}, logits.options());                 // per-thread sums
  Tensor losses = at::empty({N}, logits.options().dtype(at::kDouble));     // per row
  Tensor tg = targets.contiguous();
  const int64_t* tp = tg.data_ptr<int64_t>();
  float* lp = logits.data_ptr<float>();
  float* pp = parts.data_ptr<float>();
  double* losses_p = losses.data_ptr<double>();
  const float s = static_cast<float>(scale);
  at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
    float* acc = pp + at::get_thread_num() * V;
    for (int64_t n = n0; n < n1; ++n) {
      float* row = lp + n * V;
      const int64_t t = tp[n];
      TORCH_CHECK(t >= 0 && t < V, "softmax_xent_: target ", t, " outside [0, ", V, ")");
      float m = -INFINITY;
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < V; ++j) m = std::max(m, row[j]);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - m);
      const float lse = m + std::log(sum);
      losses_p[n] = static_cast<double>(lse) - static_cast<double>(row[t]);
#pragma omp simd
      for (int64_t j = 0; j < V; ++j) {
        const float g = std::exp(row[j] - lse) * s;
        row[j] = g;
        acc[j] += g;
      }
      row[t] -= s;
      acc[t] -= s;
    }
  });
  return {losses.sum(), parts.sum(0)};
}

}  // namespace rnnlab_ext
