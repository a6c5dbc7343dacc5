// Host side of the v2 score kernel: the tile for C, the grid, the dynamic shared memory. Each input dtype
// instantiates it in its own translation unit (mc_scores_v2_<dtype>.cu) so that they compile in parallel.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "mc_scores_cuda.h"

namespace entropy_al {
namespace v2 {

// Launches tile kTile; false (nothing launched) when the device cannot give a block its shared memory.
template <typename T, int kTile, bool kBald>
bool launch_tile(const char* data, int misalignment, int64_t K, int64_t N, int64_t C, int64_t pass_stride,
                 Score score, const ScoreOutput& out, cudaStream_t stream) {
  constexpr V2Tile t = kV2Tiles[kTile];
  auto* kernel = &mc_scores_v2_kernel<T, t.group, t.values, t.min_classes, t.threads, t.rows, kBald>;
  constexpr int kSharedBytes = 2 * v2_shared_bytes(t, Input<T>::kBytes);
  if (kSharedBytes > max_shared_memory_per_block()) return false;
  if constexpr (kSharedBytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
  }
  int blocks_per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, t.threads, kSharedBytes));
  const int64_t tiles = (N + t.samples() - 1) / t.samples();
  const int64_t resident = static_cast<int64_t>(multiprocessor_count()) * std::max(1, blocks_per_sm);
  const auto grid = static_cast<unsigned int>(std::max<int64_t>(1, std::min(tiles, resident)));
  kernel<<<grid, t.threads, kSharedBytes, stream>>>(data, misalignment, K, N, C, pass_stride, score, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename T, int... kTiles>
bool launch_tile_index(int tile, const char* data, int misalignment, int64_t K, int64_t N, int64_t C,
                       int64_t pass_stride, Score score, const ScoreOutput& out, cudaStream_t stream,
                       std::integer_sequence<int, kTiles...>) {
  const bool bald = score == Score::kBald;
  bool launched = false;
  const auto one = [&](auto index) {
    constexpr int kTile = decltype(index)::value;
    if (tile != kTile) return;
    launched = bald ? launch_tile<T, kTile, true>(data, misalignment, K, N, C, pass_stride, score, out, stream)
                    : launch_tile<T, kTile, false>(data, misalignment, K, N, C, pass_stride, score, out, stream);
  };
  (one(std::integral_constant<int, kTiles>{}), ...);
  return launched;
}

}  // namespace v2

template <typename T>
bool mc_scores_v2_launch(const at::Tensor& logits, Score score, const ScoreOutput& out, cudaStream_t stream) {
  const int64_t K = logits.size(0), N = logits.size(1), C = logits.size(2);
  const int tile = v2_tile_index(C);
  // Rows contiguous and consecutive within each pass (size-1 dimensions have no meaningful stride).
  const bool rows_dense = (C == 1 || logits.stride(2) == 1) && (N == 1 || logits.stride(1) == C);
  if (tile < 0 || !rows_dense) return false;
  const int64_t pass_stride = K == 1 ? N * C : logits.stride(0);
  const auto address = reinterpret_cast<uintptr_t>(logits.const_data_ptr());
  const int element_bytes = v2::Input<T>::kBytes;
  const int misalignment = static_cast<int>((address / element_bytes) % vector_elements(element_bytes));
  if (v2::Input<T>::kPairs && !(v2_pairs_possible(C, misalignment) && pass_stride % 2 == 0)) return false;
  return v2::launch_tile_index<T>(tile, static_cast<const char*>(logits.const_data_ptr()), misalignment, K, N, C,
                                  pass_stride, score, out, stream, std::make_integer_sequence<int, kNumV2Tiles>{});
}

}  // namespace entropy_al
