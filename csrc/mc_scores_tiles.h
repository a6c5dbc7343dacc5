// Index and tile arithmetic of the v2 CUDA score kernel: which tile serves C classes, which bytes one block
// stages into shared memory for one MC pass, and which staged element each thread reads. Host and device
// functions with no ATen, so that the CPU build exercises exactly the arithmetic the GPU runs (the `_tile_plan`
// op in csrc/mc_scores_tiles.cpp exposes it to the tests).
//
// The v2 kernel reads contiguous [K, N, C] logits. A block owns a tile of S consecutive samples; for each pass k
// their rows form one contiguous slab of S * C elements, which the block copies into shared memory (converted
// to float32) with 16-byte vector loads, then G lanes score each sample from shared memory: lane `rank` holds
// classes rank + G * j, j < V, in registers.
#pragma once

#include <cstdint>

#include "common.h"

namespace entropy_al {

// One compile-time tile: G lanes per sample, V classes per lane, the smallest C it serves (class positions
// below it are real classes for every C the tile serves: no bounds test there), the block's threads and R, the
// samples each group of G lanes scores per tile (more work per pass amortizes the staging and loop overhead).
struct V2Tile {
  int group;
  int values;
  int min_classes;
  int threads;
  int rows;
  ENTROPY_AL_HOST_DEVICE constexpr int width() const { return group * values; }
  ENTROPY_AL_HOST_DEVICE constexpr int groups() const { return threads / group; }
  ENTROPY_AL_HOST_DEVICE constexpr int samples() const { return groups() * rows; }
};

// Tiles by class count, each serving min_classes <= C <= width. A thread per sample up to C = 32 (no
// collectives at all), then groups of 4..32 lanes of one warp with xor shuffles.
constexpr V2Tile kV2Tiles[] = {
    {1, 2, 1, 128, 4},     {1, 4, 3, 128, 4},      {1, 6, 5, 128, 4},     {1, 8, 7, 128, 4},
    {1, 10, 9, 128, 4},    {1, 12, 11, 128, 4},    {1, 16, 13, 128, 2},   {1, 24, 17, 128, 2},
    {1, 32, 25, 128, 1},   {4, 12, 33, 128, 2},    {4, 16, 49, 128, 2},   {4, 20, 65, 128, 2},
    {4, 26, 81, 128, 2},   {8, 16, 105, 256, 2},   {16, 12, 129, 256, 1}, {16, 16, 193, 256, 1},
    {32, 12, 257, 256, 1}, {32, 16, 385, 256, 1},  {32, 24, 513, 256, 2}, {32, 32, 769, 256, 2},
};
constexpr int kNumV2Tiles = static_cast<int>(sizeof(kV2Tiles) / sizeof(kV2Tiles[0]));
constexpr int kV2MaxClasses = 1024;
constexpr int kVectorBytes = 16;

// The tile for C classes, or -1 when C is beyond every tile (the v1 kernels serve it). Host only (the kernels
// get their tile as template arguments).
inline int v2_tile_index(int64_t num_classes) {
  for (int i = 0; i < kNumV2Tiles; ++i) {
    if (num_classes >= kV2Tiles[i].min_classes && num_classes <= kV2Tiles[i].width()) return i;
  }
  return -1;
}

// Elements per 16-byte vector of the input dtype (4 for float32, 8 for 16-bit floats).
ENTROPY_AL_HOST_DEVICE int vector_elements(int element_bytes) { return kVectorBytes / element_bytes; }

// The slab of one block for one pass: elements [first, first + length) of the logits (counted from the data
// pointer), covered by `vectors` aligned 16-byte vectors of which vector v holds elements
// first - shift + v * VE ... + VE - 1. Staged, element first + i sits at shared index shift + i.
struct SlabPlan {
  int64_t first;
  int32_t length;
  int32_t shift;
  int32_t vectors;
};

// `misalignment` = (data pointer / element bytes) mod VE: where the data pointer sits in its 16-byte vector.
ENTROPY_AL_HOST_DEVICE SlabPlan slab_plan(int64_t k, int64_t tile, int64_t N, int64_t C, int samples,
                                          int elems_per_vector, int misalignment) {
  const int64_t n0 = tile * samples;
  const int64_t count = N - n0 < samples ? N - n0 : samples;
  SlabPlan plan;
  plan.first = (k * N + n0) * C;
  plan.length = static_cast<int32_t>(count * C);
  plan.shift = static_cast<int32_t>(static_cast<uint64_t>(plan.first + misalignment) % static_cast<unsigned>(elems_per_vector));
  plan.vectors = (plan.shift + plan.length + elems_per_vector - 1) / elems_per_vector;
  return plan;
}

// The same samples' slab one pass later: `pass_elements` = N * C further on.
ENTROPY_AL_HOST_DEVICE SlabPlan next_pass_plan(SlabPlan plan, int64_t pass_elements, int elems_per_vector,
                                               int misalignment) {
  plan.first += pass_elements;
  plan.shift = static_cast<int32_t>(static_cast<uint64_t>(plan.first + misalignment) % static_cast<unsigned>(elems_per_vector));
  plan.vectors = (plan.shift + plan.length + elems_per_vector - 1) / elems_per_vector;
  return plan;
}

// Interior vectors (1 .. vectors - 2) go round-robin over the block's threads: step i of thread `thread` loads
// vector 1 + thread + i * threads. The first and the last vector (partial in general) belong to threads 0 and 1.
ENTROPY_AL_HOST_DEVICE int interior_vector(int thread, int step, int threads) { return 1 + thread + step * threads; }
ENTROPY_AL_HOST_DEVICE int edge_vector(const SlabPlan& p, int thread) { return thread == 0 ? 0 : p.vectors - 1; }
ENTROPY_AL_HOST_DEVICE bool thread_has_edge_vector(const SlabPlan& p, int thread) {
  return thread < 2 && thread < p.vectors;
}

// Interior vectors per thread: a slab of the widest C the tile serves has at most S * width / VE of them.
ENTROPY_AL_HOST_DEVICE constexpr int v2_vectors_per_thread(const V2Tile& t, int element_bytes) {
  return (t.samples() * t.width() * element_bytes / kVectorBytes + t.threads - 1) / t.threads;
}

// Shared-memory bytes of the slab buffer: the widest slab plus two vectors (the shift and the partial tail).
ENTROPY_AL_HOST_DEVICE constexpr int v2_shared_bytes(const V2Tile& t, int element_bytes) {
  return t.samples() * t.width() * element_bytes + 2 * kVectorBytes;
}

// Vectors 1 .. vectors - 2 lie inside the slab; the first and the last may be partial (the range below).
ENTROPY_AL_HOST_DEVICE bool slab_vector_is_interior(const SlabPlan& p, int v) { return v >= 1 && v <= p.vectors - 2; }

// Range [lo, hi) of the elements of vector v that belong to the slab.
ENTROPY_AL_HOST_DEVICE void slab_vector_range(const SlabPlan& p, int v, int elems_per_vector, int* lo, int* hi) {
  const int start = v * elems_per_vector;
  *lo = p.shift > start ? p.shift - start : 0;
  const int end = p.shift + p.length - start;
  *hi = end < elems_per_vector ? end : elems_per_vector;
}

// Thread t scores the block's samples t / G + r * (threads / G), r < R, as lane t mod G of its group.
ENTROPY_AL_HOST_DEVICE int thread_sample(const V2Tile& t, int thread, int r) { return thread / t.group + r * t.groups(); }
ENTROPY_AL_HOST_DEVICE int thread_rank(const V2Tile& t, int thread) { return thread % t.group; }

// Which staged element position j of a lane reads. float32 (`pairs` false): class rank + G j. 16-bit inputs read
// a pair per 32-bit word: positions 2p and 2p + 1 are classes 2 (rank + G p) and 2 (rank + G p) + 1, which needs
// every row to start on an even element (C even, data pointer on a 4-byte boundary: v2_pairs_possible).
// `row_start` = (the block's sample) * C.
ENTROPY_AL_HOST_DEVICE int lane_class(int rank, int group, int j, bool pairs) {
  return pairs ? 2 * (rank + group * (j / 2)) + j % 2 : rank + group * j;
}
ENTROPY_AL_HOST_DEVICE int staged_element(int shift, int row_start, int rank, int group, int j, bool pairs) {
  return shift + row_start + lane_class(rank, group, j, pairs);
}
ENTROPY_AL_HOST_DEVICE bool v2_pairs_possible(int64_t C, int misalignment) { return C % 2 == 0 && misalignment % 2 == 0; }

// Positions of a lane that hold classes: j (float32) or j / 2 (pairs) below this count, i.e. ceil((C - rank) / G)
// positions or ceil((C / 2 - rank) / G) pairs. Positions j < always_real_positions hold classes for every C
// the tile serves, so the kernel tests only the others.
ENTROPY_AL_HOST_DEVICE int lane_real_positions(const V2Tile& t, int rank, int64_t C, bool pairs) {
  const int units = static_cast<int>(pairs ? C / 2 : C);
  return (units - rank + t.group - 1) / t.group;
}
ENTROPY_AL_HOST_DEVICE constexpr int always_real_positions(const V2Tile& t) { return t.min_classes / t.group; }
ENTROPY_AL_HOST_DEVICE bool position_is_class(int j, int always_real, int real_positions, bool pairs) {
  return pairs ? (j / 2 < always_real / 2 || j / 2 < real_positions) : (j < always_real || j < real_positions);
}

}  // namespace entropy_al
