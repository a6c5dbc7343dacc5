// CPU streaming top-k: the state is the best keys so far, sorted descending. A block only contributes keys
// above the current k-th best (typically few once the state is full), which are sorted and merged in O(k).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "../mc_scores.h"
#include "mc_scores_cpu.h"

namespace entropy_al {
namespace {

// Merges the keys of scores[0..count) (pool indices offset..) into `state`. Stochastic acquisition passes the
// perturbed scores (see acquisition_math.h): they are encoded like any score.
at::Tensor merge_block(const float* scores, int64_t count, const at::Tensor& state_in, int64_t offset, int64_t k) {
  const at::Tensor state = state_in.contiguous();
  const int64_t kept = state.numel();
  const int64_t* state_keys = state.const_data_ptr<int64_t>();
  // Once the state holds k keys, a candidate must beat its last (k-th best) key to matter.
  const bool full = kept >= k;
  const int64_t threshold = (full && k > 0) ? state_keys[kept - 1] : INT64_MIN;
  std::vector<int64_t> candidates;
  if (k > 0) {
    candidates.reserve(full ? 0 : count);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t key = encode_key(scores[i], offset + i);
      if (!full || beats_threshold(key, threshold)) candidates.push_back(key);
    }
  }
  const int64_t merged = std::min<int64_t>(k, kept + static_cast<int64_t>(candidates.size()));
  at::Tensor out = at::empty({merged}, state.options());
  if (merged == 0) return out;
  // Only the best `merged` candidates can survive.
  const int64_t useful = std::min<int64_t>(merged, static_cast<int64_t>(candidates.size()));
  // Selection in O(candidates), then a sort of the survivors only.
  const auto survivors_end = candidates.begin() + useful;
  if (useful < static_cast<int64_t>(candidates.size())) {
    std::nth_element(candidates.begin(), survivors_end, candidates.end(), std::greater<int64_t>());
  }
  std::sort(candidates.begin(), survivors_end, std::greater<int64_t>());
  int64_t* out_keys = out.mutable_data_ptr<int64_t>();
  int64_t a = 0, b = 0;
  for (int64_t i = 0; i < merged; ++i) {
    const bool take_state = b >= useful || (a < kept && state_keys[a] > candidates[b]);
    out_keys[i] = take_state ? state_keys[a++] : candidates[b++];
  }
  return out;
}

at::Tensor topk_update_cpu(const at::Tensor& scores, const at::Tensor& state, int64_t offset, int64_t k,
                           c10::string_view acquisition, double coldness, int64_t acquisition_seed) {
  check_topk_scores("topk_update", scores);
  check_topk_state("topk_update", state, scores.device(), offset, scores.numel(), k);
  const AcquisitionParams params = parse_acquisition("topk_update", acquisition, coldness, acquisition_seed);
  const at::Tensor block = scores.to(at::kFloat).contiguous();
  if (params.kind == Acquisition::kTop || k == 0) {
    return merge_block(block.const_data_ptr<float>(), block.numel(), state, offset, k);
  }
  std::vector<float> perturbed(block.numel());
  perturb_scores_cpu(block.const_data_ptr<float>(), block.numel(), offset, params, perturbed.data());
  return merge_block(perturbed.data(), block.numel(), state, offset, k);
}

at::Tensor mc_topk_update_cpu(const at::Tensor& logits, const at::Tensor& state, int64_t offset, int64_t k,
                              c10::string_view score, c10::string_view acquisition, double coldness,
                              int64_t acquisition_seed) {
  check_logits("mc_topk_update", logits);
  parse_score("mc_topk_update", score, logits.size(2));
  check_topk_state("mc_topk_update", state, logits.device(), offset, logits.size(1), k);
  const AcquisitionParams params =
      parse_acquisition("mc_topk_update", acquisition, coldness, acquisition_seed, score);
  if (params.kind == Acquisition::kTop || k == 0) {
    const at::Tensor block = mc_scores_cpu(logits, score);
    return merge_block(block.const_data_ptr<float>(), block.numel(), state, offset, k);
  }
  // The scoring tasks perturb their own samples' scores (no second parallel region).
  std::vector<float> perturbed(logits.size(1));
  mc_scores_cpu_perturbed(logits, score, {params, offset, perturbed.data()});
  return merge_block(perturbed.data(), logits.size(1), state, offset, k);
}

}  // namespace

TORCH_LIBRARY_IMPL(entropy_al, CPU, m) {
  m.impl("topk_update", &topk_update_cpu);
  m.impl("mc_topk_update", &mc_topk_update_cpu);
}

}  // namespace entropy_al
