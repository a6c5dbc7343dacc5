// v2 CUDA score kernel: [K, N, C] logits whose rows are contiguous and consecutive (strides (any, C, 1): a
// contiguous tensor or a slice of samples of one), C <= kV2MaxClasses (csrc/mc_scores_tiles.h has the tiles
// and the index arithmetic). No ATen here.
//
// Per block and tile of S samples, for each pass k: the slab of the tile's S rows (S * C contiguous elements) is
// loaded with 16-byte vectors (one vector per thread and step, coalesced), converted to float32 and stored to
// shared memory; the loads of the next slab are issued before the current one is scored, so a slab per block is
// always in flight. G lanes score a sample (G = 1 up to C = 32: no collectives), lane `rank` holding classes
// rank + G j, j < V, of the row in registers:
//   max -> t = (z - max) log2 e -> e = ex2(t) -> S = sum e (T = sum e t for BALD) -> p̄ += e / (K S).
// Reductions across a sample's lanes are xor shuffles of the whole warp (every lane runs the same trip
// counts). A NaN or +inf logit, or a row of only -inf, turns S into NaN (no per-element test); such a sample
// scores NaN. Budget per logit: one shared load, one ex2, a handful of FP ops; one rcp per row, one lg2 per
// (sample, class); float32 accumulation throughout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "../acquisition_math.h"
#include "../mc_scores_math.h"
#include "../mc_scores_tiles.h"

// Marks a rarely taken path (a zero-length sleep, one instruction) so that benchmarks/sass_report.py can leave it
// out of the steady-state count of the compiled kernel.
#define ENTROPY_AL_COLD_PATH() asm volatile("nanosleep.u32 0;")

namespace entropy_al {

// Where a block's results go: float scores, or top-k keys, or (when `threshold` is set) only the keys that beat
// *threshold, appended at candidates[atomicAdd(count, 1)].
struct ScoreOutput {
  float* scores;             // [N] or null
  int64_t* keys;             // [N] or null
  int64_t first_index;       // pool index of sample 0
  const int64_t* threshold;  // device scalar or null
  int64_t* candidates;       // [N] when threshold is set
  unsigned int* count;       // device scalar when threshold is set
  AcquisitionParams acquisition;  // how keys rank scores (acquisition_key)
};

namespace v2 {

__device__ __forceinline__ float xor_max(float v, int lane_mask) {
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, lane_mask));
}

// Folds the values of the G lanes of each sample (G a power of two dividing 32): the whole warp shuffles.
template <int kGroup>
__device__ __forceinline__ float group_max(float v) {
  ENTROPY_AL_UNROLL
  for (int m = kGroup / 2; m > 0; m /= 2) v = xor_max(v, m);
  return v;
}
template <int kGroup>
__device__ __forceinline__ float group_sum(float v) {
  ENTROPY_AL_UNROLL
  for (int m = kGroup / 2; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}
template <int kGroup>
__device__ __forceinline__ MeanProbStats group_stats(MeanProbStats s) {
  ENTROPY_AL_UNROLL
  for (int m = kGroup / 2; m > 0; m /= 2) {
    MeanProbStats o;
    o.entropy = __shfl_xor_sync(0xffffffffu, s.entropy, m);
    o.top1 = __shfl_xor_sync(0xffffffffu, s.top1, m);
    o.top2 = __shfl_xor_sync(0xffffffffu, s.top2, m);
    s.merge(o);
  }
  return s;
}

// The elements [lo, hi) of vector v of a slab (an edge vector: partial in general), the rest zero, read 2 bytes
// at a time (every dtype is 2 or 4 bytes wide) so that nothing outside the slab is touched. Only
// threads 0 and 1 run it, once per slab, as a loop that is not unrolled.
__device__ __forceinline__ uint4 load_edge_vector(const char* aligned, SlabPlan plan, int v, int element_bytes) {
  ENTROPY_AL_COLD_PATH();
  int lo, hi;
  slab_vector_range(plan, v, kVectorBytes / element_bytes, &lo, &hi);
  uint64_t low = 0u, high = 0u;  // halves 0..3 and 4..7 (no array: it would live in local memory)
  const unsigned short* halves = reinterpret_cast<const unsigned short*>(aligned + v * kVectorBytes);
#pragma unroll 1
  for (int h = lo * element_bytes / 2; h < hi * element_bytes / 2; ++h) {
    const uint64_t half = halves[h];
    if (h < 4) {
      low |= half << (16 * h);
    } else {
      high |= half << (16 * (h - 4));
    }
  }
  return make_uint4(static_cast<uint32_t>(low), static_cast<uint32_t>(low >> 32), static_cast<uint32_t>(high),
                    static_cast<uint32_t>(high >> 32));
}

// Input dtypes. The slab is staged as raw bytes; rows are converted to float32 as they are read: float32 one
// element per shared load, the 16-bit dtypes a pair per 32-bit shared load (C even: every row starts at an even
// element), converted with one integer op per element for bfloat16.
template <typename T>
struct Input;
template <>
struct Input<float> {
  static constexpr int kBytes = 4;
  static constexpr bool kPairs = false;
  __device__ __forceinline__ static float at(const char* data, int64_t i) {
    return reinterpret_cast<const float*>(data)[i];
  }
};
template <>
struct Input<__nv_bfloat16> {
  static constexpr int kBytes = 2;
  static constexpr bool kPairs = true;
  static constexpr uint32_t kNegInfPair = 0xff80ff80u;
  // A bfloat16 is the high half of a float32.
  __device__ __forceinline__ static float2 unpack(uint32_t w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  }
  __device__ __forceinline__ static float at(const char* data, int64_t i) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(data)[i]);
  }
};
template <>
struct Input<__half> {
  static constexpr int kBytes = 2;
  static constexpr bool kPairs = true;
  static constexpr uint32_t kNegInfPair = 0xfc00fc00u;
  __device__ __forceinline__ static float2 unpack(uint32_t w) {
    __half2 h;
    memcpy(&h, &w, sizeof(h));
    return __half22float2(h);
  }
  __device__ __forceinline__ static float at(const char* data, int64_t i) {
    return __half2float(reinterpret_cast<const __half*>(data)[i]);
  }
};

// Copies slabs into shared memory: interior vectors with cp.async (global -> shared without registers, in
// flight while the previous slab is scored), the two edge vectors through registers (threads 0 and 1).
template <int kElementBytes, int kThreads, int kVectors>
struct SlabCopier {
  uint4 edge;  // threads 0 and 1: the edge vector of the slab last issued, until store_edge

  // Issues the copies of a slab into the buffer at shared address `buffer` (vector v at 16 v) and commits them
  // as one group; a plan with no vectors commits an empty group (so that wait() counts stay uniform).
  __device__ __forceinline__ void issue(const char* data, const SlabPlan& plan, uint32_t buffer) {
    const char* aligned = data + (plan.first - plan.shift) * kElementBytes;
    const int thread = static_cast<int>(threadIdx.x);
    const char* mine = aligned + interior_vector(thread, 0, kThreads) * kVectorBytes;
    const uint32_t slot = buffer + interior_vector(thread, 0, kThreads) * kVectorBytes;
    ENTROPY_AL_UNROLL
    for (int i = 0; i < kVectors; ++i) {
      if (slab_vector_is_interior(plan, interior_vector(thread, i, kThreads))) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(slot + i * kThreads * kVectorBytes),
                     "l"(mine + i * kThreads * kVectorBytes));
      }
    }
    asm volatile("cp.async.commit_group;");
    if (thread_has_edge_vector(plan, thread)) {
      edge = load_edge_vector(aligned, plan, edge_vector(plan, thread), kElementBytes);
    }
  }

  // Stores this thread's edge vector of the slab last issued (call before the next issue).
  __device__ __forceinline__ void store_edge(const SlabPlan& plan, uint32_t buffer) const {
    const int thread = static_cast<int>(threadIdx.x);
    if (thread_has_edge_vector(plan, thread)) {
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(buffer + edge_vector(plan, thread) * kVectorBytes),
                   "r"(edge.x), "r"(edge.y), "r"(edge.z), "r"(edge.w));
    }
  }

  // Waits for this thread's copies of all but the last issued group.
  __device__ __forceinline__ static void wait_all_but_last() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
};

// A lane's classes of one staged row as float32 (positions as staged_element gives them), -inf (probability 0)
// past C; only positions from kReal on can be past C.
template <typename T, int kGroup, int kValues, int kReal>
__device__ __forceinline__ void load_row(const char* staged, int shift, int row_start, int rank, int real_positions,
                                         float (&z)[kValues]) {
  constexpr bool kPairs = Input<T>::kPairs;
  const int first = staged_element(shift, row_start, rank, kGroup, 0, kPairs);
  if constexpr (kPairs) {
    const uint32_t* words = reinterpret_cast<const uint32_t*>(staged) + (static_cast<unsigned>(first) >> 1);
    ENTROPY_AL_UNROLL
    for (int p = 0; p < kValues / 2; ++p) {
      const bool real = position_is_class(2 * p, kReal, real_positions, true);
      const float2 pair = Input<T>::unpack(real ? words[p * kGroup] : Input<T>::kNegInfPair);
      z[2 * p] = pair.x;
      z[2 * p + 1] = pair.y;
    }
  } else {
    const float* row = reinterpret_cast<const float*>(staged) + first;
    ENTROPY_AL_UNROLL
    for (int j = 0; j < kValues; ++j) z[j] = position_is_class(j, kReal, real_positions, false) ? row[j * kGroup] : -kInf;
  }
}

// Writes a sample's result (by lanes with rank 0 and n < N); every lane of the warp must call it.
__device__ __forceinline__ void emit_result(const ScoreOutput& out, bool leader, int64_t n, float score,
                                            int64_t threshold) {
  int64_t key;
  if (out.acquisition.kind == Acquisition::kTop) {
    key = acquisition_key(score, out.first_index + n, out.acquisition);  // the score's own key
  } else {
    // Stochastic acquisition: a Gumbel perturbation per sample (marked so that the static report counts the
    // default, top acquisition).
    ENTROPY_AL_COLD_PATH();
    key = acquisition_key(score, out.first_index + n, out.acquisition);
  }
  if (out.threshold != nullptr) {
    // Warp-aggregated append of the keys that beat the threshold: one atomic per warp.
    const bool take = leader && beats_threshold(key, threshold);
    const unsigned int takers = __ballot_sync(0xffffffffu, take);
    const int lane = static_cast<int>(threadIdx.x % 32);
    const int first_lane = takers == 0u ? 0 : __ffs(takers) - 1;
    unsigned int base = 0;
    if (takers != 0u && lane == first_lane) base = atomicAdd(out.count, static_cast<unsigned int>(__popc(takers)));
    base = __shfl_sync(0xffffffffu, base, first_lane);
    if (take) out.candidates[base + __popc(takers & ((1u << lane) - 1u))] = key;
  } else if (leader) {
    if (out.keys != nullptr) {
      out.keys[n] = key;
    } else {
      out.scores[n] = score;
    }
  }
}

// Per-sample accumulators of one lane across the K passes.
template <int kValues>
struct SampleState {
  float p_mean[kValues];
  float sum_row_bits;  // BALD: sum over the passes of the row entropies in bits
  float sum_of_sums;  // sum over the passes of S: NaN iff some row was bad (else at most K C)
};

// One pass of one sample: softmax statistics of its row z (this lane's classes, as load_row gives them;
// overwritten by e) and p̄ += e / (K S). BALD also needs T = sum e t, computed with the unclamped exponent
// (one FFMA per element): a -inf logit makes it 0 * -inf = NaN, and such samples are recounted at the end of
// the tile (recount_row_entropy; positions past C never enter T).
template <typename T, int kGroup, int kValues, int kReal, bool kBald>
__device__ __forceinline__ void score_pass(float (&z)[kValues], int real_positions, float inv_passes,
                                           SampleState<kValues>& state) {
  float row_max = z[0];
  ENTROPY_AL_UNROLL
  for (int j = 1; j < kValues; ++j) row_max = fmaxf(row_max, z[j]);  // NaN is caught by S below
  row_max = group_max<kGroup>(row_max);
  float sum_e = 0.0f, sum_e_t = 0.0f;
  if (__any_sync(0xffffffffu, fabsf(row_max) > kMaxFmaLogit && fabsf(row_max) < kInf)) {
    // |max| beyond 1e7: subtract first (two ops per element; only rows of such huge logits come here).
    ENTROPY_AL_COLD_PATH();
    ENTROPY_AL_UNROLL
    for (int j = 0; j < kValues; ++j) {
      const float t = exp2_exponent(z[j], row_max);
      const float e = fast_exp2(t);
      z[j] = e;
      sum_e += e;
      if constexpr (kBald) {
        if (position_is_class(j, kReal, real_positions, Input<T>::kPairs)) sum_e_t += e * t;
      }
    }
  } else {
    const float scaled_max = scaled_row_max(row_max);
    ENTROPY_AL_UNROLL
    for (int j = 0; j < kValues; ++j) {
      const float t = exp2_exponent_fma(z[j], scaled_max);
      const float e = fast_exp2(t);
      z[j] = e;
      sum_e += e;
      if constexpr (kBald) {
        if (position_is_class(j, kReal, real_positions, Input<T>::kPairs)) sum_e_t += e * t;
      }
    }
  }
  sum_e = group_sum<kGroup>(sum_e);
  state.sum_of_sums += sum_e;  // NaN: a row had a NaN or +inf logit, or no finite one
  const float inv_sum_e = 1.0f / sum_e;  // one rcp per row (fast math)
  if constexpr (kBald) state.sum_row_bits += row_entropy_bits(sum_e, group_sum<kGroup>(sum_e_t), inv_sum_e);
  const float r = inv_sum_e * inv_passes;
  ENTROPY_AL_UNROLL
  for (int j = 0; j < kValues; ++j) state.p_mean[j] += z[j] * r;
}

// BALD's sum over the passes of sample n's row entropies in bits, recounted from global memory with the clamped
// exponent (so that a -inf logit gives e t = 0): the rare path for samples whose T came out NaN. Every lane of
// the warp calls it (shuffles); lanes of samples past N get NaN. Rows are read straight from global memory.
template <typename T, int kGroup, int kValues, int kReal>
__device__ __forceinline__ float recount_row_entropy(const char* data, int64_t K, int64_t N, int64_t C,
                                                     int64_t pass_stride, int64_t n, int rank, int real_positions) {
  ENTROPY_AL_COLD_PATH();
  float bits = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    ENTROPY_AL_COLD_PATH();  // in the loop too: benchmarks/sass.py skips loops that contain the marker
    float z[kValues];
    float row_max = -kInf;
    ENTROPY_AL_UNROLL
    for (int j = 0; j < kValues; ++j) {
      const bool real = n < N && position_is_class(j, kReal, real_positions, Input<T>::kPairs);
      const int64_t c = lane_class(rank, kGroup, j, Input<T>::kPairs);
      z[j] = real ? Input<T>::at(data, k * pass_stride + n * C + c) : -kInf;
      row_max = fmaxf(row_max, z[j]);
    }
    row_max = group_max<kGroup>(row_max);
    float sum_e = 0.0f, sum_e_t = 0.0f;
    ENTROPY_AL_UNROLL
    for (int j = 0; j < kValues; ++j) {
      const float t = clamp_exp2_arg(exp2_exponent(z[j], row_max));
      const float e = fast_exp2(t);
      sum_e += e;
      sum_e_t += e * t;
    }
    sum_e = group_sum<kGroup>(sum_e);
    bits += row_entropy_bits(sum_e, group_sum<kGroup>(sum_e_t), 1.0f / sum_e);
  }
  return bits;
}

// One tile shape and input dtype; kBald adds T = sum e t per row (with the clamped exponent) for BALD's mean
// row entropy. 16-bit inputs need C even and the data pointer 4-byte aligned (rows start on pair boundaries).
template <typename T, int kGroup, int kValues, int kMinClasses, int kThreads, int kRows, bool kBald>
__global__ void __launch_bounds__(kThreads, 1)
    mc_scores_v2_kernel(const char* __restrict__ data,  // [K, N, C] of T, strides (pass_stride, C, 1)
                        int misalignment,                // (data / sizeof(T)) mod (16 / sizeof(T))
                        int64_t K, int64_t N, int64_t C, int64_t pass_stride, Score score, ScoreOutput out) {
  constexpr V2Tile kTile{kGroup, kValues, kMinClasses, kThreads, kRows};
  constexpr int kSamples = kTile.samples();
  constexpr int kBytes = Input<T>::kBytes;
  constexpr int kVectors = v2_vectors_per_thread(kTile, kBytes);
  constexpr int kReal = always_real_positions(kTile);
  constexpr int kElemsPerVector = kVectorBytes / kBytes;
  constexpr int kBufferBytes = v2_shared_bytes(kTile, kBytes);
  static_assert(kBufferBytes % kVectorBytes == 0, "the second slab buffer must start on a 16-byte boundary");
  extern __shared__ __align__(16) char staged[];  // 2 * kBufferBytes: one slab buffer filling, one scored
  const uint32_t staged_address = static_cast<uint32_t>(__cvta_generic_to_shared(staged));

  const int64_t tiles = (N + kSamples - 1) / kSamples;
  const int thread = static_cast<int>(threadIdx.x);
  const int rank = thread_rank(kTile, thread);
  const float inv_passes = 1.0f / static_cast<float>(K);
  const bool top_two = score == Score::kMargin || score == Score::kLeastConfidence;
  const int64_t threshold = out.threshold != nullptr ? *out.threshold : 0;
  const int real_positions = lane_real_positions(kTile, rank, C, Input<T>::kPairs);
  int row_starts[kRows];  // staged element index of each of this thread's rows, before the slab's shift
  ENTROPY_AL_UNROLL
  for (int r = 0; r < kRows; ++r) row_starts[r] = thread_sample(kTile, thread, r) * static_cast<int>(C);

  int64_t tile = blockIdx.x;
  if (tile >= tiles) return;  // uniform in the block
  SlabPlan plan = slab_plan(0, tile, N, C, kSamples, kElemsPerVector, misalignment);
  SlabCopier<kBytes, kThreads, kVectors> copier;
  int buffer = 0;
  copier.issue(data, plan, staged_address);

  // Scores the slab of `plan` (copied into `buffer`) once the copy of `next` into the other buffer is issued.
  auto pass = [&](const SlabPlan& next, SampleState<kValues>(&state)[kRows]) {
    const uint32_t current = staged_address + buffer * kBufferBytes;
    copier.store_edge(plan, current);
    const int shift = plan.shift;
    plan = next;
    copier.issue(data, plan, staged_address + (buffer ^ 1) * kBufferBytes);
    copier.wait_all_but_last();
    __syncthreads();  // the whole slab is in `buffer`
    const char* slab = staged + buffer * kBufferBytes;
    ENTROPY_AL_UNROLL
    for (int r = 0; r < kRows; ++r) {
      float z[kValues];
      load_row<T, kGroup, kValues, kReal>(slab, shift, row_starts[r], rank, real_positions, z);
      score_pass<T, kGroup, kValues, kReal, kBald>(z, real_positions, inv_passes, state[r]);
    }
    __syncthreads();  // everyone is done with `buffer` before it is filled again
    buffer ^= 1;
  };

  for (;;) {
    SampleState<kValues> state[kRows];
    ENTROPY_AL_UNROLL
    for (int r = 0; r < kRows; ++r) {
      ENTROPY_AL_UNROLL
      for (int j = 0; j < kValues; ++j) state[r].p_mean[j] = 0.0f;
      state[r].sum_row_bits = 0.0f;
      state[r].sum_of_sums = 0.0f;
    }
    // Passes 0 .. K-2: the next slab is this tile's next pass.
    for (int64_t k = 0; k + 1 < K; ++k) pass(next_pass_plan(plan, pass_stride, kElemsPerVector, misalignment), state);
    // The last pass: the next slab is the next tile's first pass, if any.
    const int64_t next_tile = tile + gridDim.x;
    SlabPlan next = slab_plan(0, next_tile, N, C, kSamples, kElemsPerVector, misalignment);
    if (next_tile >= tiles) next.vectors = 0;
    pass(next, state);

    if constexpr (kBald) {
      bool recount = false;
      ENTROPY_AL_UNROLL
      for (int r = 0; r < kRows; ++r) {
        recount |= !(state[r].sum_row_bits == state[r].sum_row_bits) && state[r].sum_of_sums == state[r].sum_of_sums;
      }
      if (__any_sync(0xffffffffu, recount)) {
        ENTROPY_AL_UNROLL
        for (int r = 0; r < kRows; ++r) {
          const int64_t n = tile * kSamples + thread_sample(kTile, thread, r);
          const float bits = recount_row_entropy<T, kGroup, kValues, kReal>(data, K, N, C, pass_stride, n, rank,
                                                                            real_positions);
          if (!(state[r].sum_row_bits == state[r].sum_row_bits)) state[r].sum_row_bits = bits;
        }
      }
    }
    // Positions past C hold p̄ = 0, which changes neither the entropy nor (C >= 2 for margin) the top two.
    ENTROPY_AL_UNROLL
    for (int r = 0; r < kRows; ++r) {
      MeanProbStats stats;
      if (top_two) {
        ENTROPY_AL_UNROLL
        for (int j = 0; j < kValues; ++j) stats.add_to_top_two(state[r].p_mean[j]);
      } else {
        ENTROPY_AL_UNROLL
        for (int j = 0; j < kValues; ++j) stats.entropy += neg_p_log_p(state[r].p_mean[j]);
      }
      stats = group_stats<kGroup>(stats);
      const int64_t n = tile * kSamples + thread_sample(kTile, thread, r);
      const float value = finalize_score(score, stats, kLn2 * state[r].sum_row_bits * inv_passes,
                                         !(state[r].sum_of_sums == state[r].sum_of_sums));
      emit_result(out, rank == 0 && n < N, n, value, threshold);
    }
    tile = next_tile;
    if (tile >= tiles) break;
  }
}

}  // namespace v2
}  // namespace entropy_al
