// CUDA kernel of keyed_dropout: one fused read-multiply-write pass, no mask tensor. x is viewed as [B, F]
// (contiguous); a thread takes one Philox call's group of 4 consecutive elements of a row at a time, so a warp
// reads 32 consecutive groups (16-byte vectors for float32 when F % 4 == 0). The generator and the keep rule are
// the CPU kernel's (csrc/keyed_dropout_math.h), so both backends produce the same bits.
//
// Cost per group (to verify on a GPU): Philox4x32-10 is 10 rounds of 2 IMAD.HI + 2 IMAD + 2 LOP3 + key adds,
// about 70 integer instructions per 4 elements, against 32 (float32) or 16 (bf16) bytes moved: like nn.Dropout's
// curand Philox it sits near the issue-rate limit for bf16, but it writes no mask, so it moves fewer bytes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../keyed_dropout.h"
#include "mc_scores_cuda.h"

namespace entropy_al {
namespace {

constexpr int kThreads = 256;
// Resident blocks per SM for the grid-stride loop (2048 threads per SM on sm_80/sm_90).
constexpr int kBlocksPerSm = 8;

template <typename scalar_t>
struct alignas(4 * sizeof(scalar_t)) Pack4 {
  scalar_t v[4];
};

// Where the grid-stride loop is: group `group` of row `row`. Advancing by the grid's stride is one add and one
// compare (stride = quotient rows + remainder groups), so the only 64-bit division is the one at the start.
struct GroupCursor {
  int64_t row, group;
};

template <typename scalar_t, bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    keyed_dropout_kernel(const scalar_t* __restrict__ x,  // [B, F] contiguous
                         int64_t rows, int64_t F, int64_t groups_per_row,
                         const int64_t* __restrict__ sample_ids,  // [B]
                         const int64_t* __restrict__ pass_ids,    // [B]
                         uint32_t key0, uint32_t key1, uint32_t threshold, bool random,
                         at::opmath_type<scalar_t> scale,
                         int64_t stride_rows, int64_t stride_groups,  // the grid's stride as (rows, groups)
                         scalar_t* __restrict__ out) {               // [B, F] contiguous
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  GroupCursor at{start / groups_per_row, start % groups_per_row};
  // p = 1 (not random): every factor is 0; p = 0 never launches.
  const opmath_t constant_factor = threshold == 0 ? scale : opmath_t(0);
  while (at.row < rows) {
    opmath_t factor[4];
    if (random) {
      const int64_t sample = sample_ids[at.row];
      const PhiloxWords words = philox4x32_10(static_cast<uint32_t>(at.group), low_word(pass_ids[at.row]),
                                              low_word(sample), high_word(sample), key0, key1);
#pragma unroll
      for (int j = 0; j < 4; ++j) factor[j] = keep_element(words.w[j], threshold) ? scale : opmath_t(0);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) factor[j] = constant_factor;
    }
    const int64_t first = at.row * F + at.group * 4;
    if constexpr (kVectorized) {
      const Pack4<scalar_t> in = *reinterpret_cast<const Pack4<scalar_t>*>(x + first);
      Pack4<scalar_t> result;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        result.v[j] = static_cast<scalar_t>(dropout_product(static_cast<opmath_t>(in.v[j]), factor[j]));
      }
      *reinterpret_cast<Pack4<scalar_t>*>(out + first) = result;
    } else {
      const int64_t count = F - at.group * 4 < 4 ? F - at.group * 4 : 4;  // the row's last group may be short
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < count) {
          out[first + j] = static_cast<scalar_t>(dropout_product(static_cast<opmath_t>(x[first + j]), factor[j]));
        }
      }
    }
    at.row += stride_rows;
    at.group += stride_groups;
    if (at.group >= groups_per_row) {
      at.group -= groups_per_row;
      ++at.row;
    }
  }
}

template <typename scalar_t>
bool aligned_for_pack(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % sizeof(Pack4<scalar_t>) == 0;
}

at::Tensor keyed_dropout_cuda(const at::Tensor& x, double p, int64_t seed, const at::Tensor& sample_ids,
                              const at::Tensor& pass_ids) {
  const int64_t F = check_keyed_dropout(x, p, sample_ids, pass_ids);
  TORCH_INTERNAL_ASSERT(x.is_cuda(), "keyed_dropout_cuda: the dispatcher sent x on ", x.device());
  const c10::cuda::CUDAGuard device_guard(x.device());
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  if (p == 0.0) return out.copy_(input);
  const at::Tensor samples = sample_ids.contiguous(), passes = pass_ids.contiguous();
  const uint32_t threshold = keep_threshold(p);
  const bool random = threshold > 0 && threshold < kUniformScale;
  const int64_t rows = x.size(0);
  const int64_t groups_per_row = (F + 3) / 4;
  const int64_t total_groups = rows * groups_per_row;
  const int64_t grid = std::min<int64_t>((total_groups + kThreads - 1) / kThreads,
                                         int64_t{multiprocessor_count()} * kBlocksPerSm);
  const int64_t stride = grid * kThreads;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "keyed_dropout_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const scalar_t* src = input.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const bool vectorized = F % 4 == 0 && aligned_for_pack<scalar_t>(src) && aligned_for_pack<scalar_t>(dst);
    const auto launch = [&](auto kernel) {
      kernel<<<static_cast<unsigned int>(grid), kThreads, 0, stream>>>(
          src, rows, F, groups_per_row, samples.const_data_ptr<int64_t>(), passes.const_data_ptr<int64_t>(),
          low_word(seed), high_word(seed), threshold, random, keep_scale<opmath_t>(p), stride / groups_per_row,
          stride % groups_per_row, dst);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (vectorized) {
      launch(keyed_dropout_kernel<scalar_t, true>);
    } else {
      launch(keyed_dropout_kernel<scalar_t, false>);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(entropy_al, CUDA, m) { m.impl("keyed_dropout", &keyed_dropout_cuda); }

}  // namespace entropy_al
