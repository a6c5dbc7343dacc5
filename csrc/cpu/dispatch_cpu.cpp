// Run-time choice of the CPU kernels' instruction set (see cpu_kernels.h), and their registration.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <string_view>

#include "cpu_kernels.h"
#include "mc_scores_cpu.h"

namespace entropy_al {
namespace {

enum class CpuCapability { kDefault, kAvx2 };

bool cpu_has_avx2_fma() {
#if defined(ENTROPY_AL_HAVE_AVX2_KERNELS) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;  // no AVX2 build of the kernels (not x86-64, or a compiler without __builtin_cpu_supports)
#endif
}

// The best instruction set this CPU runs, lowered by ENTROPY_AL_CPU_CAPABILITY (as ATEN_CPU_CAPABILITY lowers
// ATen's): "default" forces the baseline build, "avx2" (or unset, or empty) allows AVX2 + FMA where supported.
CpuCapability detect_capability() {
  const char* requested = std::getenv("ENTROPY_AL_CPU_CAPABILITY");
  const std::string_view name = requested != nullptr ? requested : "";
  TORCH_CHECK_VALUE(name.empty() || name == "default" || name == "avx2",
                    "ENTROPY_AL_CPU_CAPABILITY: expected 'default' or 'avx2', got '", std::string(name), "'");
  if (name == "default") return CpuCapability::kDefault;
  return cpu_has_avx2_fma() ? CpuCapability::kAvx2 : CpuCapability::kDefault;
}

CpuCapability cpu_capability() {
  static const CpuCapability capability = detect_capability();  // read once, at the first CPU kernel call
  return capability;
}

std::string cpu_capability_name() { return cpu_capability() == CpuCapability::kAvx2 ? "avx2" : "default"; }

at::Tensor keyed_dropout_dispatch(const at::Tensor& x, double p, int64_t seed, const at::Tensor& sample_ids,
                                  const at::Tensor& pass_ids) {
  if (cpu_capability() == CpuCapability::kAvx2) return cpu_avx2::keyed_dropout_cpu(x, p, seed, sample_ids, pass_ids);
  return cpu_default::keyed_dropout_cpu(x, p, seed, sample_ids, pass_ids);
}

}  // namespace

at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score) {
  if (cpu_capability() == CpuCapability::kAvx2) return cpu_avx2::mc_scores_cpu(logits, score);
  return cpu_default::mc_scores_cpu(logits, score);
}

at::Tensor mc_scores_cpu_perturbed(const at::Tensor& logits, c10::string_view score, const PerturbedScores& perturbed) {
  if (cpu_capability() == CpuCapability::kAvx2) return cpu_avx2::mc_scores_cpu_perturbed(logits, score, perturbed);
  return cpu_default::mc_scores_cpu_perturbed(logits, score, perturbed);
}

#ifndef ENTROPY_AL_HAVE_AVX2_KERNELS
// Never called (cpu_has_avx2_fma() is false); defined so that the dispatch above links without the AVX2 build.
namespace cpu_avx2 {
at::Tensor mc_scores_cpu(const at::Tensor& logits, c10::string_view score) {
  return cpu_default::mc_scores_cpu(logits, score);
}
at::Tensor mc_scores_cpu_perturbed(const at::Tensor& logits, c10::string_view score, const PerturbedScores& perturbed) {
  return cpu_default::mc_scores_cpu_perturbed(logits, score, perturbed);
}
at::Tensor keyed_dropout_cpu(const at::Tensor& x, double p, int64_t seed, const at::Tensor& sample_ids,
                             const at::Tensor& pass_ids) {
  return cpu_default::keyed_dropout_cpu(x, p, seed, sample_ids, pass_ids);
}
}  // namespace cpu_avx2
#endif

TORCH_LIBRARY_FRAGMENT(entropy_al, m) {
  // "default" or "avx2": the build of the CPU kernels this process runs.
  m.def("_cpu_capability() -> str", &cpu_capability_name);
}

TORCH_LIBRARY_IMPL(entropy_al, CPU, m) {
  m.impl("mc_scores", &mc_scores_cpu);
  m.impl("keyed_dropout", &keyed_dropout_dispatch);
}

}  // namespace entropy_al
