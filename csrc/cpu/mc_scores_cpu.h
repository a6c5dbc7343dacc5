// CPU kernels that other CPU translation units call directly (the fused top-k scores its block in place).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include "../acquisition_math.h"

namespace entropy_al {

at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score);

// out[i] = perturbed_score(scores[i], first_index + i, params) for i < count; params.kind must not be kTop.
void perturb_scores_cpu(const float* scores, int64_t count, int64_t first_index, const AcquisitionParams& params,
                        float* out);

}  // namespace entropy_al
