// CUDA streaming top-k: the state is the best keys so far (int64, descending; see encode_key). A block's keys
// are written after a copy of the state into one buffer, and at::topk(sorted) of that buffer is the new state.
// The output size min(k, len(state) + B) is known from sizes alone, so nothing synchronizes with the host.
//
// What the issue's ideal design adds, left for a session with a GPU to measure:
// - the running k-th key (threshold) kept on the device; the scoring kernel appends only keys above it to a
//   fixed-capacity candidate list (warp-aggregated atomics on a device-side count), so the merge sorts about
//   k (1 + ln(N / k)) candidates over a whole random-order pool instead of k + B per block;
// - merges deferred until the candidate list passes a capacity, done with a CUB radix sort of the packed keys
//   (or cub::DeviceTopK where CCCL has it), the new threshold written on the device.
// Filtering against the threshold without compaction would not shrink at::topk's input (a compacted size is
// data-dependent and would need a host sync), so this version does not filter.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/topk.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../mc_scores.h"
#include "mc_scores_cuda.h"

namespace entropy_al {
namespace {

constexpr int kEncodeThreads = 256;
constexpr int kEncodeBlocksPerSm = 8;

__global__ void __launch_bounds__(kEncodeThreads)
    encode_keys_kernel(const float* __restrict__ scores,  // [count] with stride `stride`
                       int64_t stride, int64_t count, int64_t first_index, AcquisitionParams acquisition,
                       int64_t* __restrict__ keys) {  // [count]
  const int64_t step = static_cast<int64_t>(gridDim.x) * kEncodeThreads;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kEncodeThreads + threadIdx.x; i < count; i += step) {
    keys[i] = acquisition_key(scores[i * stride], first_index + i, acquisition);
  }
}

// A buffer of len(state) + count keys that starts with a copy of the state; the block's keys go after it.
at::Tensor keys_buffer(const at::Tensor& state, int64_t count) {
  const int64_t kept = state.numel();
  at::Tensor merged = at::empty({kept + count}, state.options());
  if (kept > 0) merged.narrow(0, 0, kept).copy_(state);  // async on the current stream
  return merged;
}

// The best min(k, len(merged)) keys, descending. Keys are unique, so the result does not depend on ties.
at::Tensor best_keys(const at::Tensor& merged, int64_t k) {
  const int64_t keep = std::min(k, merged.numel());
  return std::get<0>(at::topk(merged, keep, /*dim=*/0, /*largest=*/true, /*sorted=*/true));
}

at::Tensor topk_update_cuda(const at::Tensor& scores, const at::Tensor& state, int64_t offset, int64_t k,
                            c10::string_view acquisition, double coldness, int64_t acquisition_seed) {
  TORCH_CHECK_TYPE(scores.dim() == 1 && scores.is_floating_point(),
                   "topk_update: expected `scores` to be a 1-D floating tensor, got ", scores.scalar_type(),
                   " tensor of shape ", scores.sizes());
  check_topk_state("topk_update", state, scores.device(), offset, scores.numel(), k);
  const AcquisitionParams params = parse_acquisition("topk_update", acquisition, coldness, acquisition_seed);
  TORCH_INTERNAL_ASSERT(scores.is_cuda(), "topk_update_cuda: the dispatcher sent scores on ", scores.device());
  const c10::cuda::CUDAGuard device_guard(scores.device());
  const int64_t count = scores.numel();
  if (std::min(k, state.numel() + count) == 0) return at::empty({0}, state.options());
  // Like the CPU kernel, rank the float32 value of any floating dtype (converted by ATen: exact rounding, no
  // flush of subnormals).
  const at::Tensor block = scores.to(at::kFloat);
  at::Tensor merged = keys_buffer(state, count);
  if (count > 0) {
    const int64_t work_blocks = (count + kEncodeThreads - 1) / kEncodeThreads;
    const int64_t grid = std::min<int64_t>(work_blocks, int64_t{multiprocessor_count()} * kEncodeBlocksPerSm);
    encode_keys_kernel<<<static_cast<unsigned int>(grid), kEncodeThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        block.const_data_ptr<float>(), block.stride(0), count, offset, params,
        merged.mutable_data_ptr<int64_t>() + state.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return best_keys(merged, k);
}

at::Tensor mc_topk_update_cuda(const at::Tensor& logits, const at::Tensor& state, int64_t offset, int64_t k,
                               c10::string_view score_name, c10::string_view acquisition, double coldness,
                               int64_t acquisition_seed) {
  check_logits("mc_topk_update", logits);
  const Score score = parse_score("mc_topk_update", score_name, logits.size(2));
  check_topk_state("mc_topk_update", state, logits.device(), offset, logits.size(1), k);
  const AcquisitionParams params =
      parse_acquisition("mc_topk_update", acquisition, coldness, acquisition_seed, score_name);
  TORCH_INTERNAL_ASSERT(logits.is_cuda(), "mc_topk_update_cuda: the dispatcher sent logits on ", logits.device());
  const c10::cuda::CUDAGuard device_guard(logits.device());
  const int64_t count = logits.size(1);
  if (std::min(k, state.numel() + count) == 0) return at::empty({0}, state.options());
  at::Tensor merged = keys_buffer(state, count);
  // The scoring kernel writes the block's keys straight after the state's: no float scores in between.
  mc_scores_cuda_launch(logits, score, nullptr, merged.mutable_data_ptr<int64_t>() + state.numel(), offset, params);
  return best_keys(merged, k);
}

}  // namespace

TORCH_LIBRARY_IMPL(entropy_al, CUDA, m) {
  m.impl("topk_update", &topk_update_cuda);
  m.impl("mc_topk_update", &mc_topk_update_cuda);
}

}  // namespace entropy_al
