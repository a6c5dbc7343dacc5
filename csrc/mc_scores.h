// Host-side declarations shared by every backend: argument checks (one source of truth for the error
// messages, which entropy_al/ops.py repeats word for word) and the score-name parser.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/amax.h>
#include <c10/util/Exception.h>

#include <charconv>
#include <cmath>

#include <string>
#include <string_view>

#include "acquisition_math.h"
#include "common_host.h"
#include "mc_scores_math.h"

namespace entropy_al {

// float64 logits are shifted by their row max in float64 before the kernels convert them to float32: near-tied
// logits of huge magnitude (|z| ~ 1e4) would otherwise lose their difference. Softmax is shift-invariant; rows
// with NaN or +inf stay bad (inf - inf = NaN), and so do rows of only -inf.
inline at::Tensor shift_float64_rows(const at::Tensor& logits) {
  if (logits.scalar_type() != at::kDouble || logits.numel() == 0) return logits;
  return logits.sub(at::amax(logits, {2}, /*keepdim=*/true));
}

// The score names, in the order of enum Score (the one list in csrc).
constexpr const char* kScoreNames[] = {"entropy", "bald", "margin", "least_confidence"};
constexpr int kNumScores = static_cast<int>(sizeof(kScoreNames) / sizeof(kScoreNames[0]));

inline Score parse_score(const char* op, std::string_view name, int64_t num_classes) {
  int found = -1;
  std::string expected;
  for (int i = 0; i < kNumScores; ++i) {
    if (name == kScoreNames[i]) found = i;
    expected += (i == 0 ? "'" : ", '") + std::string(kScoreNames[i]) + "'";
  }
  TORCH_CHECK_VALUE(found >= 0, op, ": expected `score` to be one of ", expected, ", got '", std::string(name), "'");
  const auto score = static_cast<Score>(found);
  TORCH_CHECK_VALUE(score != Score::kMargin || num_classes >= 2, op,
                    ": score 'margin' needs C >= 2 classes, got C = ", num_classes);
  return score;
}

inline void check_logits(const char* op, const at::Tensor& logits) {
  TORCH_CHECK_VALUE(logits.dim() == 3, op, ": expected `logits` of shape [K, N, C] (3 dims), got shape ",
                    logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kDouble, op,
                   ": expected `logits` of dtype float32, float16, bfloat16 or float64, got ", dtype_name(dtype));
  TORCH_CHECK_VALUE(logits.size(0) >= 1, op, ": expected `logits` with K = size(0) >= 1 MC passes, got K = ",
                    logits.size(0));
  TORCH_CHECK_VALUE(logits.size(2) >= 1, op, ": expected `logits` with C = size(2) >= 1 classes, got C = ",
                    logits.size(2));
}

inline void check_topk_scores(const char* op, const at::Tensor& scores) {
  TORCH_CHECK_TYPE(scores.dim() == 1 && scores.is_floating_point(), op,
                   ": expected `scores` to be a 1-D floating tensor, got ", dtype_name(scores.scalar_type()),
                   " tensor of shape ", scores.sizes());
}

inline void check_topk_state(const char* op, const at::Tensor& state, const at::Device& device, int64_t offset,
                             int64_t count, int64_t k) {
  TORCH_CHECK_TYPE(state.dim() == 1 && state.scalar_type() == at::kLong, op,
                   ": expected `state` to be a 1-D int64 tensor of keys, got ", dtype_name(state.scalar_type()),
                   " tensor of shape ", state.sizes());
  TORCH_CHECK_VALUE(state.device() == device, op, ": expected `state` on ", device, " like the scores, got ",
                    state.device());
  TORCH_CHECK_VALUE(k >= 0, op, ": expected `k` to be an int >= 0, got ", k);
  TORCH_CHECK_VALUE(offset >= 0, op, ": expected `offset` to be an int >= 0, got ", offset);
  TORCH_CHECK_VALUE(offset + count - 1 <= int64_t{0xffffffff}, op,
                    ": pool indices must be below 2**32, got a block ending at index ", offset + count - 1);
}

// The acquisition arguments of the top-k ops as kernel parameters. `score` is the fused op's score name (empty
// for topk_update's raw scores): power sampling needs scores >= 0, which margin and least-confidence are not.
// A double as Python's repr writes it (shortest round trip, "0.0" not "0"), so that the compiled ops and the
// pure-PyTorch fallback word their errors alike.
inline std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[32];
  const auto end = std::to_chars(buffer, buffer + sizeof(buffer), value).ptr;
  std::string text(buffer, end);
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

inline AcquisitionParams parse_acquisition(const char* op, std::string_view name, double coldness, int64_t seed,
                                           std::string_view score = {}) {
  Acquisition kind;
  if (name == "top") {
    kind = Acquisition::kTop;
  } else if (name == "power") {
    kind = Acquisition::kPower;
  } else if (name == "softmax") {
    kind = Acquisition::kSoftmax;
  } else {
    TORCH_CHECK_VALUE(false, op, ": expected `acquisition` to be one of 'top', 'power', 'softmax', got '",
                      std::string(name), "'");
  }
  TORCH_CHECK_VALUE(std::isfinite(coldness) && coldness > 0.0, op,
                    ": expected `coldness` to be a finite float > 0, got ", python_float_repr(coldness));
  TORCH_CHECK_VALUE(kind != Acquisition::kPower || (score != "margin" && score != "least_confidence"), op,
                    ": acquisition 'power' needs scores >= 0, but score '", std::string(score),
                    "' is <= 0; use acquisition 'softmax'");
  return make_acquisition_params(kind, coldness, seed);
}

}  // namespace entropy_al
