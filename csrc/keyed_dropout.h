// Host-side argument checks of keyed_dropout, shared by every backend (entropy_al/keyed.py repeats the messages
// word for word).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "keyed_dropout_math.h"
#include "mc_scores.h"

namespace entropy_al {

// Philox counters hold the element group e / 4 in 32 bits.
constexpr int64_t kMaxKeyedElementsPerSample = int64_t{1} << 34;

inline void check_keyed_ids(const at::Tensor& x, const at::Tensor& ids, const char* name) {
  TORCH_CHECK_TYPE(ids.scalar_type() == at::kLong, "keyed_dropout: expected `", name,
                   "` to be an int64 tensor, got ", dtype_name(ids.scalar_type()));
  TORCH_CHECK_VALUE(ids.dim() == 1 && ids.size(0) == x.size(0), "keyed_dropout: expected `", name,
                    "` of shape [B] = [", x.size(0), "], one id per row of `x`, got shape ", ids.sizes());
  TORCH_CHECK_VALUE(ids.device() == x.device(), "keyed_dropout: expected `", name, "` on ", x.device(),
                    " like `x`, got ", ids.device());
}

// Returns F, the elements per sample (the product of x's trailing sizes).
inline int64_t check_keyed_dropout(const at::Tensor& x, double p, const at::Tensor& sample_ids,
                                   const at::Tensor& pass_ids) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble,
                   "keyed_dropout: expected `x` of dtype float32, float16, bfloat16 or float64, got ",
                   dtype_name(dtype));
  TORCH_CHECK_VALUE(x.dim() >= 1, "keyed_dropout: expected `x` of shape [B, ...] (samples first), got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(p >= 0.0 && p <= 1.0, "keyed_dropout: expected `p` in [0, 1], got ", p);
  check_keyed_ids(x, sample_ids, "sample_ids");
  check_keyed_ids(x, pass_ids, "pass_ids");
  int64_t per_sample = 1;
  for (int64_t d = 1; d < x.dim(); ++d) per_sample *= x.size(d);
  TORCH_CHECK_VALUE(per_sample <= kMaxKeyedElementsPerSample,
                    "keyed_dropout: expected at most 2**34 elements per sample, got ", per_sample);
  return per_sample;
}

}  // namespace entropy_al
