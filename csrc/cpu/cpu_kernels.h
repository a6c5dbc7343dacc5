// The CPU kernels are compiled twice, as ATen's are: once for any x86-64 CPU (namespace cpu_default) and, on
// x86-64, once more for AVX2 + FMA (namespace cpu_avx2, csrc/cpu/avx2/). csrc/cpu/dispatch_cpu.cpp picks one at run
// time from what the CPU supports (ENTROPY_AL_CPU_CAPABILITY=default forces the baseline), so a build runs on any
// x86-64 CPU whatever machine built it.
//
// A kernel file includes every header first, then wraps its own code in ENTROPY_AL_CPU_KERNELS_BEGIN/END: in the
// AVX2 build that code, and only that code, is compiled for AVX2 + FMA. Inline functions of the headers keep the
// baseline target in both builds, so the one copy the linker keeps of each runs on every CPU (it is still inlined,
// and so vectorized, into the AVX2 kernels).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include "mc_scores_cpu.h"

#ifdef ENTROPY_AL_CPU_AVX2
#define ENTROPY_AL_CPU_CAPABILITY cpu_avx2
#if defined(__clang__)
#define ENTROPY_AL_CPU_KERNELS_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define ENTROPY_AL_CPU_KERNELS_END _Pragma("clang attribute pop")
#else
#define ENTROPY_AL_CPU_KERNELS_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define ENTROPY_AL_CPU_KERNELS_END _Pragma("GCC pop_options")
#endif
#else
#define ENTROPY_AL_CPU_CAPABILITY cpu_default
#define ENTROPY_AL_CPU_KERNELS_BEGIN
#define ENTROPY_AL_CPU_KERNELS_END
#endif

namespace entropy_al {

#define ENTROPY_AL_DECLARE_CPU_KERNELS(capability)                                                       \
  namespace capability {                                                                                 \
  at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score);                            \
  at::Tensor mc_scores_cpu_perturbed(const at::Tensor& logits, c10::string_view score,                   \
                                     const PerturbedScores& perturbed);                                  \
  at::Tensor keyed_dropout_cpu(const at::Tensor& x, double p, int64_t seed, const at::Tensor& sample_ids, \
                               const at::Tensor& pass_ids);                                              \
  }

ENTROPY_AL_DECLARE_CPU_KERNELS(cpu_default)
ENTROPY_AL_DECLARE_CPU_KERNELS(cpu_avx2)

#undef ENTROPY_AL_DECLARE_CPU_KERNELS

}  // namespace entropy_al
