// CPU kernels that other CPU translation units call directly (the fused top-k scores its block in place).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include "../acquisition_math.h"

namespace entropy_al {

at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score);

// Where the fused top-k wants the perturbed scores of its block (stochastic acquisition), out[n] =
// perturbed_score(score_n, first_index + n, params): written by each scoring task right after the scores of its
// range, while they are in cache and without a parallel region of their own. out == nullptr: not wanted.
struct PerturbedScores {
  AcquisitionParams params;
  int64_t first_index = 0;
  float* out = nullptr;
};

// mc_scores_cpu that also fills `perturbed` (logits and score already checked).
at::Tensor mc_scores_cpu_perturbed(const at::Tensor& logits, c10::string_view score, const PerturbedScores& perturbed);

// out[i] = perturbed_score(scores[i], first_index + i, params) for begin <= i < end, in the calling thread;
// params.kind must not be kTop.
void perturb_scores_range(const float* scores, int64_t begin, int64_t end, int64_t first_index,
                          const AcquisitionParams& params, float* out);

// The same for i < count, over at::parallel_for.
void perturb_scores_cpu(const float* scores, int64_t count, int64_t first_index, const AcquisitionParams& params,
                        float* out);

}  // namespace entropy_al
