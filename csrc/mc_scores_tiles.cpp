// The `_tile_plan` test op: the v2 CUDA score kernel's index arithmetic (csrc/mc_scores_tiles.h) evaluated on
// the host for one block and one pass, so that CPU tests can check which element every thread stages and reads.
// Compiled in every build; no CUDA needed.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <tuple>

#include "mc_scores_tiles.h"

namespace entropy_al {

// Returns (info, vectors, reads) for block `tile` at pass `pass_index` of [passes, num_samples, num_classes]
// logits of `element_bytes`-wide elements whose data pointer sits `misalignment` elements into its 16 bytes:
//   info    int64 [10]: tile index (-1: the v1 kernels serve C), G, V, min_classes, threads, R, samples per
//           block, interior vectors per thread, shared bytes per slab buffer, pairs (16-bit reads);
//   vectors int64 [vectors, 5]: per 16-byte vector of the slab: element index of its first element, the range
//           [lo, hi) of its elements inside the slab, the thread that copies it and its step (-1: edge vector);
//   reads   int64 [threads * R * V, 4]: per (thread, r, position): the sample index, the class (-1: a position
//           past C, which reads -inf), the staged element it reads, and the logit element staged there.
std::tuple<at::Tensor, at::Tensor, at::Tensor> tile_plan(int64_t num_classes, int64_t num_samples, int64_t passes,
                                                         int64_t element_bytes, int64_t misalignment, int64_t tile,
                                                         int64_t pass_index) {
  TORCH_CHECK_VALUE(element_bytes == 2 || element_bytes == 4, "_tile_plan: expected element_bytes 2 or 4, got ",
                    element_bytes);
  const int elems_per_vector = vector_elements(static_cast<int>(element_bytes));
  TORCH_CHECK_VALUE(misalignment >= 0 && misalignment < elems_per_vector, "_tile_plan: expected misalignment in [0, ",
                    elems_per_vector, "), got ", misalignment);
  TORCH_CHECK_VALUE(num_classes >= 1 && num_samples >= 1 && passes >= 1, "_tile_plan: expected C, N, K >= 1");
  TORCH_CHECK_VALUE(pass_index >= 0 && pass_index < passes, "_tile_plan: expected pass_index in [0, K)");
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  at::Tensor info = at::zeros({10}, long_options);
  int64_t* i = info.mutable_data_ptr<int64_t>();
  const int index = v2_tile_index(num_classes);
  i[0] = index;
  if (index < 0) return {info, at::empty({0, 5}, long_options), at::empty({0, 4}, long_options)};
  const V2Tile t = kV2Tiles[index];
  const bool pairs = element_bytes == 2;
  const int vectors_per_thread = v2_vectors_per_thread(t, static_cast<int>(element_bytes));
  i[1] = t.group;
  i[2] = t.values;
  i[3] = t.min_classes;
  i[4] = t.threads;
  i[5] = t.rows;
  i[6] = t.samples();
  i[7] = vectors_per_thread;
  i[8] = v2_shared_bytes(t, static_cast<int>(element_bytes));
  i[9] = pairs;
  const int64_t tiles = (num_samples + t.samples() - 1) / t.samples();
  TORCH_CHECK_VALUE(tile >= 0 && tile < tiles, "_tile_plan: expected tile in [0, ", tiles, "), got ", tile);

  // The kernel's sequence of plans: the tile's first pass, then one next_pass_plan per pass.
  SlabPlan plan = slab_plan(0, tile, num_samples, num_classes, t.samples(), elems_per_vector,
                            static_cast<int>(misalignment));
  for (int64_t k = 0; k < pass_index; ++k) {
    plan = next_pass_plan(plan, num_samples * num_classes, elems_per_vector, static_cast<int>(misalignment));
  }

  at::Tensor vectors = at::full({plan.vectors, 5}, -2, long_options);
  int64_t* v = vectors.mutable_data_ptr<int64_t>();
  for (int thread = 0; thread < t.threads; ++thread) {
    for (int step = 0; step < vectors_per_thread; ++step) {
      const int vector = interior_vector(thread, step, t.threads);
      if (!slab_vector_is_interior(plan, vector)) continue;
      v[vector * 5 + 3] = thread;
      v[vector * 5 + 4] = step;
    }
    if (thread_has_edge_vector(plan, thread)) {
      const int vector = edge_vector(plan, thread);
      v[vector * 5 + 3] = thread;
      v[vector * 5 + 4] = -1;
    }
  }
  for (int vector = 0; vector < plan.vectors; ++vector) {
    int lo, hi;
    slab_vector_range(plan, vector, elems_per_vector, &lo, &hi);
    v[vector * 5 + 0] = plan.first - plan.shift + static_cast<int64_t>(vector) * elems_per_vector;
    v[vector * 5 + 1] = lo;
    v[vector * 5 + 2] = hi;
  }

  at::Tensor reads = at::empty({static_cast<int64_t>(t.threads) * t.rows * t.values, 4}, long_options);
  int64_t* r = reads.mutable_data_ptr<int64_t>();
  const int always_real = always_real_positions(t);
  for (int thread = 0; thread < t.threads; ++thread) {
    const int rank = thread_rank(t, thread);
    const int real_positions = lane_real_positions(t, rank, num_classes, pairs);
    for (int row = 0; row < t.rows; ++row) {
      const int sample = thread_sample(t, thread, row);
      const int row_start = sample * static_cast<int>(num_classes);
      for (int j = 0; j < t.values; ++j) {
        int64_t* out = r + ((static_cast<int64_t>(thread) * t.rows + row) * t.values + j) * 4;
        const int staged = staged_element(plan.shift, row_start, rank, t.group, j, pairs);
        out[0] = tile * t.samples() + sample;
        out[1] = position_is_class(j, always_real, real_positions, pairs) ? lane_class(rank, t.group, j, pairs) : -1;
        out[2] = staged;
        out[3] = plan.first - plan.shift + staged;
      }
    }
  }
  return {info, vectors, reads};
}

}  // namespace entropy_al
