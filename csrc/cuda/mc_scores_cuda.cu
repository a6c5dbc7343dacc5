// CUDA kernels of mc_scores, generation 1 (the `v1` kernels): one fused pass over the [K, N, C] logits, float32
// accumulation, 64-bit indexing, any strides. The per-element math is the CPU kernel's (csrc/mc_scores_math.h).
// They serve what the v2 kernels (mc_scores_v2.cuh) do not: strided logits, C > 1024, 16-bit logits with odd C,
// and everything when ENTROPY_AL_SCORE_KERNEL=v1. This file also holds the launcher that picks between them.
//
// Design
// - A *group* of G threads scores one sample: it walks the sample's K rows; each thread holds V classes of the
//   row in registers (class c = rank + j*G, j < V, so a row load is coalesced across the group's lanes).
//   Per row: max (group all-reduce) -> t = (z - max) log2e clamped at kMinExp2Arg -> e = ex2(t) kept in
//   registers -> S = sum e (all-reduce; T = sum e t for BALD) -> p̄ += e * (1/(K S)). p̄ of the thread's V
//   classes stays in registers across the K rows, so the logits are read from DRAM exactly once and only the
//   [N] result is written. One ex2 per element, one rcp per row, one lg2 per (sample, class).
// - G x V by C (row_tile_switch): C <= 4: 1 x 4 (a thread per sample); C <= 8, 16, 32, 64: sub-warps of
//   2, 4, 8, 16 lanes x 4; C <= 128, 256, 512, 1024: a warp x 4, 8, 16, 32; C <= 2048, 4096, 8192: a block
//   of 256 x 8, 512 x 8, 512 x 16. Warp-level groups run 256 threads to a block, grid-stride over samples,
//   grid = min(work, SMs x 2048 / block). With V <= 8 the next row's loads are issued before the current
//   row is reduced (two rows in flight per group).
// - C > 8192: a block per sample, rows too long for registers: per row one pass for the max and one for S
//   (and T), (max, 1/(K S)) of each row in a per-block global scratch [grid, K, 2], then a class-major pass
//   over the K rows accumulates p̄_c and folds it into the statistics. Up to 3 reads of the input (the
//   re-reads are L1/L2 hits when the sample's tile fits): correct, memory O(grid K), not bandwidth-optimal.
// - Reductions are CUB WarpReduce (logical warps of G lanes) and BlockReduce; the statistics of p̄ (entropy,
//   top-2) reduce as MeanProbStats with its merge. A sample with a NaN/+inf logit, or a row of only -inf, is
//   NaN. The fused top-k passes `keys`: the kernel then writes acquisition_key(score, index) instead of scores.
// - Expected (to measure on a GPU): 32..138 registers per thread, no spills; each SM keeps ~32..64 KiB of
//   fp32 loads in flight (half for bf16), so C >= 64 should approach the copy roof. C <= 16 is the weak
//   spot: sub-warp loads touch ~3 sectors per useful one (L1 absorbs it), and the shuffles per row exceed
//   the issue budget of bf16 on H200; the v2 kernels stage [N_b, C] slabs through shared memory instead.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/block/block_reduce.cuh>
#include <cub/util_ptx.cuh>
#include <cub/warp/warp_reduce.cuh>
#include <cuda/functional>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "../mc_scores.h"
#include "mc_scores_cuda.h"

// nvcc defines __CUDA_ARCH_LIST__ (e.g. 800,900) in host and device passes; the list contains commas.
#define ENTROPY_AL_STRINGIFY_(...) #__VA_ARGS__
#define ENTROPY_AL_STRINGIFY(...) ENTROPY_AL_STRINGIFY_(__VA_ARGS__)

namespace entropy_al {

std::string cuda_arch_list() {
#ifdef __CUDA_ARCH_LIST__
  return ENTROPY_AL_STRINGIFY(__CUDA_ARCH_LIST__);
#else
  return "unknown";
#endif
}

namespace {

// Threads one SM can hold (sm_80, sm_90; 1536 on sm_86/89, where the extra blocks just wait a wave).
constexpr int kMaxThreadsPerSm = 2048;
// Block size of the warp-level groups.
constexpr int kWarpGroupBlockThreads = 256;
// Block size of the path for rows too long for registers, and the classes per thread per step of its p̄ pass.
constexpr int kLargeThreads = 512;
constexpr int kLargeChunk = 4;

struct MergeStats {
  __device__ __forceinline__ MeanProbStats operator()(const MeanProbStats& a, const MeanProbStats& b) const {
    MeanProbStats merged = a;
    merged.merge(b);
    return merged;
  }
};

// The exponent t = (z - max) log2(e) of a logit, clamped as in the CPU kernel (-inf logits give e = 0, e t = 0).
__device__ __forceinline__ float exp2_arg(float z, float row_max) {
  return clamp_exp2_arg(exp2_exponent(z, row_max));
}

// True when a row's reduced max says the row (hence the sample) is bad: a NaN or +inf logit was folded in as
// +inf, or every logit is -inf.
__device__ __forceinline__ bool bad_row_max(float row_max) { return !(row_max > -kInf && row_max < kInf); }

// The threads that score one sample together. Every member calls the reductions the same number of times
// (control flow is uniform within a group). all_* results are valid in every member, reduce_* only in rank 0.
template <int kThreads, bool kIsWarp = (kThreads <= 32)>
struct Group;

// kThreads lanes of one warp (1 = a thread per sample). Groups of one warp may diverge from each other:
// CUB's logical-warp reductions and the broadcast below use only the group's own lanes.
template <int kThreads>
struct Group<kThreads, true> {
  static_assert(kThreads >= 1 && 32 % kThreads == 0, "a warp group must divide the warp");
  static constexpr int kBlockThreads = kWarpGroupBlockThreads;
  static constexpr int kGroupsPerBlock = kBlockThreads / kThreads;
  using FloatReduce = cub::WarpReduce<float, kThreads>;
  using StatsReduce = cub::WarpReduce<MeanProbStats, kThreads>;
  struct TempStorage {  // empty for the shuffle-based reductions of power-of-two logical warps
    typename FloatReduce::TempStorage floats[kGroupsPerBlock];
    typename StatsReduce::TempStorage stats[kGroupsPerBlock];
  };

  TempStorage& temp;
  int slot;              // which group of the block
  int rank;              // lane within the group
  unsigned member_mask;  // the group's lanes within the warp

  __device__ __forceinline__ explicit Group(TempStorage& storage)
      : temp(storage), slot(threadIdx.x / kThreads), rank(threadIdx.x % kThreads) {
    const unsigned lane = threadIdx.x % 32;
    member_mask = kThreads == 32 ? 0xffffffffu : ((1u << kThreads) - 1u) << (lane / kThreads * kThreads);
  }

  __device__ __forceinline__ float broadcast(float value) const {
    if constexpr (kThreads == 1) {
      return value;
    } else {
      return cub::ShuffleIndex<kThreads>(value, 0, member_mask);
    }
  }
  __device__ __forceinline__ float all_max(float value) {
    return broadcast(FloatReduce(temp.floats[slot]).Reduce(value, ::cuda::maximum<>{}));
  }
  __device__ __forceinline__ float all_sum(float value) { return broadcast(FloatReduce(temp.floats[slot]).Sum(value)); }
  __device__ __forceinline__ float reduce_sum(float value) { return FloatReduce(temp.floats[slot]).Sum(value); }
  __device__ __forceinline__ MeanProbStats reduce_stats(const MeanProbStats& stats) {
    return StatsReduce(temp.stats[slot]).Reduce(stats, MergeStats{});
  }
};

// The whole block. Each reduction starts with a barrier, so the shared storage and the broadcast slot of the
// previous reduction are free again (CUB's rule for reusing TempStorage).
template <int kThreads>
struct Group<kThreads, false> {
  static_assert(kThreads % 32 == 0, "a block group is whole warps");
  static constexpr int kBlockThreads = kThreads;
  static constexpr int kGroupsPerBlock = 1;
  using FloatReduce = cub::BlockReduce<float, kThreads>;
  using StatsReduce = cub::BlockReduce<MeanProbStats, kThreads>;
  struct TempStorage {
    union {
      typename FloatReduce::TempStorage floats;
      typename StatsReduce::TempStorage stats;
    } reduce;
    float broadcast;
  };

  TempStorage& temp;
  int slot = 0;
  int rank;

  __device__ __forceinline__ explicit Group(TempStorage& storage) : temp(storage), rank(threadIdx.x) {}

  __device__ __forceinline__ float broadcast(float value) {
    if (rank == 0) temp.broadcast = value;
    __syncthreads();
    return temp.broadcast;
  }
  __device__ __forceinline__ float all_max(float value) {
    __syncthreads();
    return broadcast(FloatReduce(temp.reduce.floats).Reduce(value, ::cuda::maximum<>{}));
  }
  __device__ __forceinline__ float all_sum(float value) {
    __syncthreads();
    return broadcast(FloatReduce(temp.reduce.floats).Sum(value));
  }
  __device__ __forceinline__ float reduce_sum(float value) {
    __syncthreads();
    return FloatReduce(temp.reduce.floats).Sum(value);
  }
  __device__ __forceinline__ MeanProbStats reduce_stats(const MeanProbStats& stats) {
    __syncthreads();
    return StatsReduce(temp.reduce.stats).Reduce(stats, MergeStats{});
  }
};

// The result of sample n: its score, or its top-k key when the fused top-k asked for keys.
__device__ __forceinline__ void store_result(float value, int64_t n, float* scores, int64_t* keys,
                                             int64_t first_index, const AcquisitionParams& acquisition) {
  if (keys != nullptr) {
    keys[n] = acquisition_key(value, first_index + n, acquisition);
  } else {
    scores[n] = value;
  }
}

// Loads classes rank + j * kThreads (j < kValues) of one row as float; -inf past the last class.
template <int kThreads, int kValues, typename scalar_t>
__device__ __forceinline__ void load_row(const scalar_t* __restrict__ row, int64_t C, int64_t stride_c, int rank,
                                         float (&z)[kValues]) {
#pragma unroll
  for (int j = 0; j < kValues; ++j) {
    const int c = rank + j * kThreads;
    z[j] = c < C ? static_cast<float>(row[static_cast<int64_t>(c) * stride_c]) : -kInf;
  }
}

// C <= kThreads * kValues: a group of kThreads threads per sample, each holding kValues classes of a row
// (and of p̄) in registers. With few values per thread the next row is loaded before the current one is
// reduced (two rows in flight); with many, the loads of one row already keep enough bytes in flight.
// The min-blocks hint of 1 stops ptxas from capping registers at an occupancy step and spilling a few bytes.
template <typename scalar_t, int kThreads, int kValues>
__global__ void __launch_bounds__(Group<kThreads>::kBlockThreads, 1)
    mc_scores_v1_register_kernel(const scalar_t* __restrict__ logits,  // [K, N, C], strides below
                              int64_t K, int64_t N, int64_t C, int64_t stride_k, int64_t stride_n,
                              int64_t stride_c, Score score,
                              float* __restrict__ scores,   // [N] or null
                              int64_t* __restrict__ keys,   // [N] or null
                              int64_t first_index, AcquisitionParams acquisition) {
  using G = Group<kThreads>;
  constexpr bool kPrefetch = kValues <= 8;
  __shared__ typename G::TempStorage temp;
  G group(temp);
  const float inv_passes = 1.0f / static_cast<float>(K);
  const bool bald = score == Score::kBald;
  const int64_t group_stride = static_cast<int64_t>(gridDim.x) * G::kGroupsPerBlock;
  // n is uniform within a group, so every loop and break below is too.
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * G::kGroupsPerBlock + group.slot; n < N; n += group_stride) {
    const scalar_t* sample = logits + n * stride_n;
    float p_mean[kValues];
#pragma unroll
    for (int j = 0; j < kValues; ++j) p_mean[j] = 0.0f;
    float sum_row_entropy = 0.0f;  // meaningful in rank 0
    bool bad = false;
    float z[kValues], z_next[kValues];
    if constexpr (kPrefetch) load_row<kThreads>(sample, C, stride_c, group.rank, z_next);
    for (int64_t k = 0; k < K; ++k) {
      if constexpr (kPrefetch) {
#pragma unroll
        for (int j = 0; j < kValues; ++j) z[j] = z_next[j];
        if (k + 1 < K) load_row<kThreads>(sample + (k + 1) * stride_k, C, stride_c, group.rank, z_next);
      } else {
        load_row<kThreads>(sample + k * stride_k, C, stride_c, group.rank, z);
      }
      float local_max = -kInf;
      bool local_bad = false;
#pragma unroll
      for (int j = 0; j < kValues; ++j) {
        local_bad |= is_bad_logit(z[j]);
        local_max = z[j] > local_max ? z[j] : local_max;
      }
      const float row_max = group.all_max(local_bad ? kInf : local_max);
      if (bad_row_max(row_max)) {
        bad = true;
        break;
      }
      float local_sum = 0.0f, local_sum_t = 0.0f;
#pragma unroll
      for (int j = 0; j < kValues; ++j) {
        const int c = group.rank + j * kThreads;
        const float t = exp2_arg(z[j], row_max);
        const float e = c < C ? fast_exp2(t) : 0.0f;  // padding classes contribute exactly nothing
        z[j] = e;
        local_sum += e;
        local_sum_t += e * t;
      }
      const float sum_e = group.all_sum(local_sum);
      if (bald) {
        const float sum_e_t = group.reduce_sum(local_sum_t);
        if (group.rank == 0) sum_row_entropy += row_entropy(sum_e, sum_e_t);
      }
      const float r = inv_passes / sum_e;  // sum_e >= 1: the max class has e = 1
#pragma unroll
      for (int j = 0; j < kValues; ++j) p_mean[j] += z[j] * r;
    }
    MeanProbStats stats;
    if (!bad) {
#pragma unroll
      for (int j = 0; j < kValues; ++j) {
        if (group.rank + j * kThreads < C) stats.add(p_mean[j]);
      }
    }
    stats = group.reduce_stats(stats);
    if (group.rank == 0) {
      store_result(finalize_score(score, stats, sum_row_entropy * inv_passes, bad), n, scores, keys, first_index,
                   acquisition);
    }
  }
}

// C too large for registers: a block per sample. Per row, one pass for the max and one for S (and T); the
// row's (max, 1/(K S)) go to this block's slice of `row_stats`; then p̄ is accumulated class-major. The
// launch bounds are the register kernel's.
template <typename scalar_t>
__global__ void __launch_bounds__(kLargeThreads, 1)
    mc_scores_v1_large_classes_kernel(const scalar_t* __restrict__ logits,  // [K, N, C], strides below
                                   int64_t K, int64_t N, int64_t C, int64_t stride_k, int64_t stride_n,
                                   int64_t stride_c, Score score,
                                   float* __restrict__ scores,  // [N] or null
                                   int64_t* __restrict__ keys,  // [N] or null
                                   int64_t first_index, AcquisitionParams acquisition,
                                   float* row_stats_all) {  // [gridDim.x, K, 2]; written and read here: no nc loads
  using G = Group<kLargeThreads>;
  __shared__ typename G::TempStorage temp;
  G group(temp);
  const float inv_passes = 1.0f / static_cast<float>(K);
  const bool bald = score == Score::kBald;
  float* row_stats = row_stats_all + static_cast<int64_t>(blockIdx.x) * 2 * K;
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const scalar_t* sample = logits + n * stride_n;
    float sum_row_entropy = 0.0f;  // meaningful in rank 0
    bool bad = false;
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* row = sample + k * stride_k;
      float local_max = -kInf;
      bool local_bad = false;
      for (int64_t c = group.rank; c < C; c += kLargeThreads) {
        const float z = static_cast<float>(row[c * stride_c]);
        local_bad |= is_bad_logit(z);
        local_max = z > local_max ? z : local_max;
      }
      const float row_max = group.all_max(local_bad ? kInf : local_max);
      if (bad_row_max(row_max)) {
        bad = true;
        break;
      }
      float local_sum = 0.0f, local_sum_t = 0.0f;
      for (int64_t c = group.rank; c < C; c += kLargeThreads) {
        const float t = exp2_arg(static_cast<float>(row[c * stride_c]), row_max);
        const float e = fast_exp2(t);
        local_sum += e;
        local_sum_t += e * t;
      }
      const float sum_e = group.all_sum(local_sum);
      if (bald) {
        const float sum_e_t = group.reduce_sum(local_sum_t);
        if (group.rank == 0) sum_row_entropy += row_entropy(sum_e, sum_e_t);
      }
      if (group.rank == 0) {
        row_stats[2 * k] = row_max;
        row_stats[2 * k + 1] = inv_passes / sum_e;
      }
    }
    __syncthreads();  // rank 0's row_stats are visible to the block
    MeanProbStats stats;
    if (!bad) {
      for (int64_t c0 = 0; c0 < C; c0 += kLargeThreads * kLargeChunk) {
        float p_mean[kLargeChunk];
#pragma unroll
        for (int j = 0; j < kLargeChunk; ++j) p_mean[j] = 0.0f;
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t* row = sample + k * stride_k;
          const float row_max = row_stats[2 * k];
          const float r = row_stats[2 * k + 1];
#pragma unroll
          for (int j = 0; j < kLargeChunk; ++j) {
            const int64_t c = c0 + group.rank + j * kLargeThreads;
            if (c < C) p_mean[j] += fast_exp2(exp2_arg(static_cast<float>(row[c * stride_c]), row_max)) * r;
          }
        }
#pragma unroll
        for (int j = 0; j < kLargeChunk; ++j) {
          if (c0 + group.rank + j * kLargeThreads < C) stats.add(p_mean[j]);
        }
      }
    }
    // Starts with a barrier: every thread is done reading row_stats before rank 0 rewrites them.
    stats = group.reduce_stats(stats);
    if (group.rank == 0) {
      store_result(finalize_score(score, stats, sum_row_entropy * inv_passes, bad), n, scores, keys, first_index,
                   acquisition);
    }
  }
}

// (threads per sample, classes per thread) of the register kernel as compile-time constants.
template <int kThreads_, int kValues_>
struct RowTile {
  static constexpr int kThreads = kThreads_;
  static constexpr int kValues = kValues_;
};

// Calls fn(RowTile<G, V>{}) with the smallest tile that holds C classes, like FA2's static switches; returns
// false when C is too large for registers.
template <typename Fn>
bool row_tile_switch(int64_t num_classes, Fn&& fn) {
  if (num_classes <= 4) { fn(RowTile<1, 4>{}); return true; }
  if (num_classes <= 8) { fn(RowTile<2, 4>{}); return true; }
  if (num_classes <= 16) { fn(RowTile<4, 4>{}); return true; }
  if (num_classes <= 32) { fn(RowTile<8, 4>{}); return true; }
  if (num_classes <= 64) { fn(RowTile<16, 4>{}); return true; }
  if (num_classes <= 128) { fn(RowTile<32, 4>{}); return true; }
  if (num_classes <= 256) { fn(RowTile<32, 8>{}); return true; }
  if (num_classes <= 512) { fn(RowTile<32, 16>{}); return true; }
  if (num_classes <= 1024) { fn(RowTile<32, 32>{}); return true; }
  if (num_classes <= 2048) { fn(RowTile<256, 8>{}); return true; }
  if (num_classes <= 4096) { fn(RowTile<512, 8>{}); return true; }
  if (num_classes <= 8192) { fn(RowTile<512, 16>{}); return true; }
  return false;
}

// Enough blocks to fill every SM (the kernels loop over samples), never more than there is work for.
unsigned int grid_size(int64_t work_blocks, int block_threads) {
  const int64_t resident = static_cast<int64_t>(multiprocessor_count()) * (kMaxThreadsPerSm / block_threads);
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(work_blocks, resident)));
}

}  // namespace

namespace {

__global__ void set_count_kernel(unsigned int* count, unsigned int value) { *count = value; }

// ENTROPY_AL_SCORE_KERNEL=v1 selects the v1 kernels for everything (read on every launch, so that one process
// can compare the generations).
bool v1_requested() {
  const char* choice = std::getenv("ENTROPY_AL_SCORE_KERNEL");
  return choice != nullptr && std::string(choice) == "v1";
}

void mc_scores_v1_launch(const at::Tensor& logits, Score score, float* scores, int64_t* keys, int64_t first_index,
                         const AcquisitionParams& acquisition, cudaStream_t stream) {
  const int64_t K = logits.size(0), N = logits.size(1), C = logits.size(2);
  const int64_t stride_k = logits.stride(0), stride_n = logits.stride(1), stride_c = logits.stride(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "mc_scores_cuda", [&] {
    const scalar_t* data = logits.const_data_ptr<scalar_t>();
    const bool in_registers = row_tile_switch(C, [&](auto tile) {
      using Tile = decltype(tile);
      using G = Group<Tile::kThreads>;
      const int64_t work_blocks = (N + G::kGroupsPerBlock - 1) / G::kGroupsPerBlock;
      mc_scores_v1_register_kernel<scalar_t, Tile::kThreads, Tile::kValues>
          <<<grid_size(work_blocks, G::kBlockThreads), G::kBlockThreads, 0, stream>>>(
              data, K, N, C, stride_k, stride_n, stride_c, score, scores, keys, first_index, acquisition);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (!in_registers) {
      const unsigned int grid = grid_size(N, kLargeThreads);
      at::Tensor row_stats = at::empty({static_cast<int64_t>(grid) * K * 2}, logits.options().dtype(at::kFloat));
      mc_scores_v1_large_classes_kernel<scalar_t><<<grid, kLargeThreads, 0, stream>>>(
          data, K, N, C, stride_k, stride_n, stride_c, score, scores, keys, first_index, acquisition,
          row_stats.mutable_data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace

void mc_scores_cuda_launch(const at::Tensor& raw_logits, Score score, const ScoreOutput& out) {
  at::Tensor logits = shift_float64_rows(raw_logits);
  if (logits.size(1) == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (!v1_requested()) {
    if (logits.scalar_type() == at::kDouble) logits = logits.to(at::kFloat);  // already shifted by its row max
    bool served = false;
    switch (logits.scalar_type()) {
      case at::kFloat:
        served = mc_scores_v2_launch<float>(logits, score, out, stream);
        break;
      case at::kHalf:
        served = mc_scores_v2_launch<__half>(logits, score, out, stream);
        break;
      case at::kBFloat16:
        served = mc_scores_v2_launch<__nv_bfloat16>(logits, score, out, stream);
        break;
      default:
        break;
    }
    if (served) return;
  }
  if (out.threshold == nullptr) {
    mc_scores_v1_launch(logits, score, out.scores, out.keys, out.first_index, out.acquisition, stream);
    return;
  }
  // The v1 kernels do not filter: every key becomes a candidate (the merge drops those below the threshold).
  mc_scores_v1_launch(logits, score, nullptr, out.candidates, out.first_index, out.acquisition, stream);
  set_count_kernel<<<1, 1, 0, stream>>>(out.count, static_cast<unsigned int>(logits.size(1)));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

namespace {

at::Tensor mc_scores_cuda(const at::Tensor& logits, c10::string_view score_name) {
  check_logits("mc_scores", logits);
  const Score score = parse_score("mc_scores", score_name, logits.size(2));
  TORCH_INTERNAL_ASSERT(logits.is_cuda(), "mc_scores_cuda: the dispatcher sent a tensor on ", logits.device());
  const c10::cuda::CUDAGuard device_guard(logits.device());
  at::Tensor out = at::empty({logits.size(1)}, logits.options().dtype(at::kFloat));
  if (out.numel() == 0) return out;
  ScoreOutput result{};
  result.scores = out.mutable_data_ptr<float>();
  mc_scores_cuda_launch(logits, score, result);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(entropy_al, CUDA, m) { m.impl("mc_scores", &mc_scores_cuda); }

}  // namespace entropy_al
