// CUDA streaming top-k: the state is the best keys so far (int64, descending; see encode_key and, for
// stochastic acquisition, acquisition_key: keys of perturbed scores rank and merge like any keys).
//
// Full state (len(state) == k): the state's last key is the running k-th key, on the device. The block's keys
// that beat it are appended to a candidate list (warp-aggregated atomics on a device-side count; the v2 score
// kernel does it while scoring), and one block merges the candidates into the state: three launches (count
// reset, scoring or filtering, merge), no host synchronization, work O(k + candidates). A random-order pool
// has few candidates per block once the state is full; an adversarial (ascending) one has many, which the merge
// takes in chunks: slower, still exact.
// Filling state (len(state) < k): the block's keys are written after a copy of the state and at::topk(sorted)
// of that buffer is the new state. Either way the output size min(k, len(state) + B) follows from sizes alone,
// and keys are unique, so the result equals the CPU's bit for bit.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/topk.h>
#include <ATen/ops/zeros.h>
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

// Keys of scores[i] (any stride) that beat *threshold, appended to candidates at atomicAdd(count). (The
// min-blocks hint of 1 stops ptxas from capping registers at an occupancy step and spilling.)
__global__ void __launch_bounds__(kEncodeThreads, 1)
    filter_keys_kernel(const float* __restrict__ scores,  // [n] with stride `stride`
                       int64_t stride, int64_t n, int64_t first_index, AcquisitionParams acquisition,
                       const int64_t* __restrict__ threshold, int64_t* __restrict__ candidates,
                       unsigned int* __restrict__ count) {
  const int64_t limit = *threshold;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kEncodeThreads;
  const int64_t rounds = (n + step - 1) / step;  // uniform trip count: every lane reaches the ballot
  for (int64_t round = 0; round < rounds; ++round) {
    const int64_t i = round * step + static_cast<int64_t>(blockIdx.x) * kEncodeThreads + threadIdx.x;
    const int64_t key = i < n ? acquisition_key(scores[i * stride], first_index + i, acquisition) : 0;
    const bool take = i < n && beats_threshold(key, limit);
    const unsigned int takers = __ballot_sync(0xffffffffu, take);
    if (takers == 0u) continue;
    const int lane = static_cast<int>(threadIdx.x % 32);
    const int first_lane = __ffs(takers) - 1;
    unsigned int base = 0;
    if (lane == first_lane) base = atomicAdd(count, static_cast<unsigned int>(__popc(takers)));
    base = __shfl_sync(0xffffffffu, base, first_lane);
    if (take) candidates[base + __popc(takers & ((1u << lane) - 1u))] = key;
  }
}

constexpr int kMergeThreads = 1024;  // one candidate per thread per chunk

// How many keys of the descending array a[0, n) are greater than x.
__device__ __forceinline__ int64_t count_greater(const int64_t* a, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (a[mid] > x) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// out = the best k of state [k] (descending) and the *count candidates (any order; all keys distinct). One
// block: chunks of kMergeThreads candidates are ranked by counting in shared memory, then every state key
// and every candidate goes to its merged position (its index plus the number of keys of the other list above
// it); positions >= k are dropped. Chunks alternate between `scratch` and `out` so that the last lands in out
// (no __restrict__ on what the block reads back after writing it: those loads must not go through the
// read-only cache).
__global__ void __launch_bounds__(kMergeThreads)
    merge_candidates_kernel(const int64_t* state, int64_t k, const int64_t* __restrict__ candidates,
                            const unsigned int* __restrict__ count, int64_t* out, int64_t* scratch) {
  __shared__ int64_t chunk[kMergeThreads];
  __shared__ int64_t sorted[kMergeThreads];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t total = *count;
  const int64_t chunks = (total + kMergeThreads - 1) / kMergeThreads;
  if (chunks == 0) {
    for (int64_t i = t; i < k; i += kMergeThreads) out[i] = state[i];
    return;
  }
  const int64_t* src = state;
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t* dst = (chunks - 1 - c) % 2 == 0 ? out : scratch;
    const int64_t here = min(static_cast<int64_t>(kMergeThreads), total - c * kMergeThreads);
    const int64_t key = t < here ? candidates[c * kMergeThreads + t] : 0;
    chunk[t] = key;
    __syncthreads();
    if (t < here) {
      int rank = 0;
      for (int j = 0; j < here; ++j) rank += chunk[j] > key;
      sorted[rank] = key;
    }
    __syncthreads();
    for (int64_t i = t; i < k; i += kMergeThreads) {
      const int64_t x = src[i];
      const int64_t position = i + count_greater(sorted, here, x);
      if (position < k) dst[position] = x;
    }
    if (t < here) {
      const int64_t x = sorted[t];
      const int64_t position = t + count_greater(src, k, x);
      if (position < k) dst[position] = x;
    }
    __syncthreads();  // dst complete (global writes of the block are visible after the barrier); chunk reusable
    src = dst;
  }
}

// The candidate path's buffers: count (zeroed: the first launch), candidates [B], the new state [k], scratch.
struct CandidateBuffers {
  at::Tensor count, candidates, out, scratch;
  CandidateBuffers(const at::Tensor& state, int64_t block, int64_t k)
      : count(at::zeros({1}, state.options().dtype(at::kInt))),
        candidates(at::empty({std::max<int64_t>(block, 1)}, state.options())),
        out(at::empty({k}, state.options())),
        scratch(at::empty({k}, state.options())) {}
  unsigned int* count_ptr() { return reinterpret_cast<unsigned int*>(count.mutable_data_ptr<int32_t>()); }

  at::Tensor merge(const at::Tensor& state, int64_t k) {
    merge_candidates_kernel<<<1, kMergeThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        state.const_data_ptr<int64_t>(), k, candidates.const_data_ptr<int64_t>(), count_ptr(),
        out.mutable_data_ptr<int64_t>(), scratch.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }
};

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
  check_topk_scores("topk_update", scores);
  check_topk_state("topk_update", state, scores.device(), offset, scores.numel(), k);
  const AcquisitionParams params = parse_acquisition("topk_update", acquisition, coldness, acquisition_seed);
  TORCH_INTERNAL_ASSERT(scores.is_cuda(), "topk_update_cuda: the dispatcher sent scores on ", scores.device());
  const c10::cuda::CUDAGuard device_guard(scores.device());
  const int64_t count = scores.numel();
  if (std::min(k, state.numel() + count) == 0) return at::empty({0}, state.options());
  // Like the CPU kernel, rank the float32 value of any floating dtype (converted by ATen: exact rounding, no
  // flush of subnormals).
  const at::Tensor block = scores.to(at::kFloat);
  const int64_t work_blocks = (count + kEncodeThreads - 1) / kEncodeThreads;
  const auto grid = static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>(work_blocks, int64_t{multiprocessor_count()} * kEncodeBlocksPerSm)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (k > 0 && state.numel() == k) {
    const at::Tensor full_state = state.contiguous();
    CandidateBuffers buffers(full_state, count, k);
    if (count > 0) {
      filter_keys_kernel<<<grid, kEncodeThreads, 0, stream>>>(
          block.const_data_ptr<float>(), block.stride(0), count, offset, params,
          full_state.const_data_ptr<int64_t>() + k - 1,
          buffers.candidates.mutable_data_ptr<int64_t>(), buffers.count_ptr());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    return buffers.merge(full_state, k);
  }
  at::Tensor merged = keys_buffer(state, count);
  if (count > 0) {
    encode_keys_kernel<<<grid, kEncodeThreads, 0, stream>>>(block.const_data_ptr<float>(), block.stride(0), count,
                                                            offset, params,
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
  if (k > 0 && state.numel() == k) {
    // The scoring kernel appends the keys that beat the state's k-th key (or, when only the v1 kernels can
    // score these logits, all of them) to the candidates.
    const at::Tensor full_state = state.contiguous();
    CandidateBuffers buffers(full_state, count, k);
    ScoreOutput out{};
    out.first_index = offset;
    out.acquisition = params;
    out.threshold = full_state.const_data_ptr<int64_t>() + k - 1;
    out.candidates = buffers.candidates.mutable_data_ptr<int64_t>();
    out.count = buffers.count_ptr();
    mc_scores_cuda_launch(logits, score, out);
    return buffers.merge(full_state, k);
  }
  at::Tensor merged = keys_buffer(state, count);
  // The scoring kernel writes the block's keys straight after the state's: no float scores in between.
  ScoreOutput out{};
  out.keys = merged.mutable_data_ptr<int64_t>() + state.numel();
  out.first_index = offset;
  out.acquisition = params;
  mc_scores_cuda_launch(logits, score, out);
  return best_keys(merged, k);
}

}  // namespace

TORCH_LIBRARY_IMPL(entropy_al, CUDA, m) {
  m.impl("topk_update", &topk_update_cuda);
  m.impl("mc_topk_update", &mc_topk_update_cuda);
}

}  // namespace entropy_al
