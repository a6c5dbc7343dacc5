// CPU kernel of mc_scores: one task per range of samples (at::parallel_for); per sample, each of its K rows
// is converted to float once, then max -> exp2 -> sums -> p̄ += e / (K S) in loops the compiler vectorizes.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

#include "../mc_scores.h"
#include "cpu_kernels.h"

ENTROPY_AL_CPU_KERNELS_BEGIN
namespace entropy_al::ENTROPY_AL_CPU_CAPABILITY {
namespace {

// Work (in logits) below which a task is not split further.
constexpr int64_t kGrainElements = 1 << 15;
// Sums over the classes run in blocks of this many classes (vectorized within a block, one scalar add per block):
// with thousands of classes, one running sum per vector lane would lose about 1e-5 of the entropy in float32.
constexpr int64_t kSumBlock = 64;

template <typename scalar_t>
void load_row(const scalar_t* row, int64_t num_classes, int64_t stride_c, float* z) {
  if (stride_c == 1) {
    for (int64_t c = 0; c < num_classes; ++c) z[c] = static_cast<float>(row[c]);
  } else {
    for (int64_t c = 0; c < num_classes; ++c) z[c] = static_cast<float>(row[c * stride_c]);
  }
}

struct RowSums {
  float sum_e;    // sum_c 2^t_c
  float sum_e_t;  // sum_c 2^t_c t_c
  bool bad;       // NaN or +inf in the row, or no finite logit at all
};

// e_c = 2^((z_c - max) log2 e) for one row, and the sums that give its normalizer and entropy.
inline RowSums exp_row(const float* z, int64_t num_classes, float* e) {
  float max_z = -kInf;
  int bad = 0;
#pragma omp simd reduction(max : max_z) reduction(| : bad)
  for (int64_t c = 0; c < num_classes; ++c) {
    max_z = z[c] > max_z ? z[c] : max_z;
    bad |= is_bad_logit(z[c]);
  }
  if (bad || max_z == -kInf) return {0.0f, 0.0f, true};
  float sum_e = 0.0f, sum_e_t = 0.0f;
  for (int64_t block = 0; block < num_classes; block += kSumBlock) {
    const int64_t end = std::min(num_classes, block + kSumBlock);
    float block_e = 0.0f, block_e_t = 0.0f;
#pragma omp simd reduction(+ : block_e, block_e_t)
    for (int64_t c = block; c < end; ++c) {
      const float t = clamp_exp2_arg(exp2_exponent(z[c], max_z));  // -inf logits: e = 0 and e * t = 0, not NaN
      const float ec = fast_exp2(t);
      e[c] = ec;
      block_e += ec;
      block_e_t += ec * t;
    }
    sum_e += block_e;
    sum_e_t += block_e_t;
  }
  return {sum_e, sum_e_t, false};
}

// p_mean holds the C values of p̄ followed by zeros up to padded.
inline MeanProbStats mean_prob_stats(const float* p_mean, int64_t padded, Score score) {
  MeanProbStats stats;
  if (score == Score::kEntropy || score == Score::kBald) {
    float entropy = 0.0f;
    for (int64_t block = 0; block < padded; block += kSumBlock) {
      const int64_t end = std::min(padded, block + kSumBlock);
      float block_entropy = 0.0f;
#pragma omp simd reduction(+ : block_entropy)
      for (int64_t c = block; c < end; ++c) block_entropy += neg_p_log_p(p_mean[c]);
      entropy += block_entropy;
    }
    stats.entropy = entropy;
  } else {
    // The same top-2 as MeanProbStats::add (a repeated maximum is also the second largest), as two reductions
    // the compiler vectorizes. The zero padding cannot change it: C >= 2 for margin, and p̄ >= 0.
    float top1 = -1.0f;
#pragma omp simd reduction(max : top1)
    for (int64_t c = 0; c < padded; ++c) top1 = p_mean[c] > top1 ? p_mean[c] : top1;
    stats.top1 = top1;
    if (score == Score::kMargin) {
      float below = -1.0f;
      int ties = 0;
#pragma omp simd reduction(max : below) reduction(+ : ties)
      for (int64_t c = 0; c < padded; ++c) {
        below = (p_mean[c] < top1 && p_mean[c] > below) ? p_mean[c] : below;
        ties += p_mean[c] == top1;
      }
      stats.top2 = ties > 1 ? top1 : below;
    }
  }
  return stats;
}

// Few classes: a row is too short to vectorize over, so vectorize over kLanes samples at once instead. The
// tile holds z[c][lane] for one pass; every loop below runs over lanes with unit stride.
constexpr int64_t kLanes = 8;
constexpr int64_t kSmallClasses = 16;

template <typename scalar_t>
void small_classes_tile(const scalar_t* logits, int64_t K, int64_t C, int64_t stride_k, int64_t stride_n,
                        int64_t stride_c, Score score, int64_t first, int64_t count, float* out) {
  float z[kSmallClasses][kLanes], e[kSmallClasses][kLanes], p_mean[kSmallClasses][kLanes] = {};
  float sum_row_entropy[kLanes] = {};
  int bad[kLanes] = {};
  const float inv_passes = 1.0f / static_cast<float>(K);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const scalar_t* row = logits + k * stride_k + (first + std::min(j, count - 1)) * stride_n;
      for (int64_t c = 0; c < C; ++c) z[c][j] = static_cast<float>(row[c * stride_c]);
    }
    float max_z[kLanes], sum_e[kLanes] = {}, sum_e_t[kLanes] = {}, r[kLanes];
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) max_z[j] = -kInf;
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) {
        max_z[j] = z[c][j] > max_z[j] ? z[c][j] : max_z[j];
        bad[j] |= is_bad_logit(z[c][j]);
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) bad[j] |= max_z[j] == -kInf;
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) {
        const float t = clamp_exp2_arg(exp2_exponent(z[c][j], max_z[j]));
        e[c][j] = fast_exp2(t);
        sum_e[j] += e[c][j];
        sum_e_t[j] += e[c][j] * t;
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) r[j] = inv_passes / sum_e[j];
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) p_mean[c][j] += e[c][j] * r[j];
    }
    if (score == Score::kBald) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) sum_row_entropy[j] += row_entropy(sum_e[j], sum_e_t[j]);
    }
  }
  float entropy[kLanes] = {};
  if (score == Score::kEntropy || score == Score::kBald) {
    for (int64_t c = 0; c < C; ++c) {
#pragma omp simd
      for (int64_t j = 0; j < kLanes; ++j) entropy[j] += neg_p_log_p(p_mean[c][j]);
    }
  }
  for (int64_t j = 0; j < count; ++j) {
    MeanProbStats stats;
    if (score == Score::kMargin || score == Score::kLeastConfidence) {
      for (int64_t c = 0; c < C; ++c) stats.add(p_mean[c][j]);
    }
    stats.entropy = entropy[j];
    out[first + j] = finalize_score(score, stats, sum_row_entropy[j] * inv_passes, bad[j] != 0);
  }
}

// The perturbed scores of samples begin..end - 1, when the fused top-k asked for them.
inline void perturb_if_wanted(const float* out, int64_t begin, int64_t end, const PerturbedScores& perturbed) {
  if (perturbed.out != nullptr && begin < end) {
    perturb_scores_range(out, begin, end, perturbed.first_index, perturbed.params, perturbed.out);
  }
}

template <typename scalar_t>
void mc_scores_kernel(const scalar_t* logits,  // [K, N, C] with the strides below
                      int64_t K, int64_t N, int64_t C, int64_t stride_k, int64_t stride_n, int64_t stride_c,
                      Score score, float* out,  // [N]
                      const PerturbedScores& perturbed) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (K * C));
  if (C <= kSmallClasses) {
    const int64_t tiles = (N + kLanes - 1) / kLanes;
    at::parallel_for(0, tiles, std::max<int64_t>(1, grain / kLanes), [&](int64_t begin, int64_t end) {
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t first = tile * kLanes;
        small_classes_tile(logits, K, C, stride_k, stride_n, stride_c, score, first,
                           std::min(kLanes, N - first), out);
      }
      perturb_if_wanted(out, begin * kLanes, std::min(end * kLanes, N), perturbed);
    });
    return;
  }
  // Rows are padded with -inf (probability 0) to a whole number of vectors, so no loop has a scalar tail.
  const int64_t padded = (C + kLanes - 1) / kLanes * kLanes;
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> z(padded, -kInf), e(padded), p_mean(padded);
    const float inv_passes = 1.0f / static_cast<float>(K);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(p_mean.begin(), p_mean.end(), 0.0f);
      float sum_row_entropy = 0.0f;
      bool bad = false;
      for (int64_t k = 0; k < K && !bad; ++k) {
        load_row(logits + k * stride_k + n * stride_n, C, stride_c, z.data());
        const RowSums sums = exp_row(z.data(), padded, e.data());
        bad = sums.bad;
        const float r = inv_passes / sums.sum_e;  // one division per row, none per element
        float* pm = p_mean.data();
        const float* ep = e.data();
#pragma omp simd
        for (int64_t c = 0; c < padded; ++c) pm[c] += ep[c] * r;
        if (score == Score::kBald) sum_row_entropy += row_entropy(sums.sum_e, sums.sum_e_t);
      }
      const MeanProbStats stats = bad ? MeanProbStats{} : mean_prob_stats(p_mean.data(), padded, score);
      out[n] = finalize_score(score, stats, sum_row_entropy * inv_passes, bad);
    }
    perturb_if_wanted(out, begin, end, perturbed);
  });
}

}  // namespace

at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score_name) {
  check_logits("mc_scores", logits);
  return mc_scores_cpu_perturbed(logits, score_name, {});
}

at::Tensor mc_scores_cpu_perturbed(const at::Tensor& logits, c10::string_view score_name,
                                   const PerturbedScores& perturbed) {
  const Score score = parse_score("mc_scores", score_name, logits.size(2));
  const int64_t K = logits.size(0), N = logits.size(1), C = logits.size(2);
  at::Tensor out = at::empty({N}, logits.options().dtype(at::kFloat));
  if (N == 0) return out;
  const at::Tensor input = shift_float64_rows(logits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "mc_scores_cpu", [&] {
    mc_scores_kernel<scalar_t>(input.const_data_ptr<scalar_t>(), K, N, C, input.stride(0), input.stride(1),
                               input.stride(2), score, out.mutable_data_ptr<float>(), perturbed);
  });
  return out;
}

}  // namespace entropy_al::ENTROPY_AL_CPU_CAPABILITY
ENTROPY_AL_CPU_KERNELS_END
