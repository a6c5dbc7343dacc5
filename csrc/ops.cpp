// The schemas of every entropy_al op (the API contract) and the empty Python module that lets
// `torch.ops.load_library` and `import entropy_al._C` find this library.
#include <Python.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>
#include <tuple>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

namespace entropy_al {

#ifdef WITH_CUDA
std::string cuda_arch_list();  // csrc/cuda: the architectures nvcc compiled for
#endif

// csrc/mc_scores_tiles.cpp: the v2 CUDA kernel's index arithmetic on the host, for the tests.
std::tuple<at::Tensor, at::Tensor, at::Tensor> tile_plan(int64_t num_classes, int64_t num_samples, int64_t passes,
                                                         int64_t element_bytes, int64_t misalignment, int64_t tile,
                                                         int64_t pass_index);

// "key=value;..." facts about this build, for `python -m entropy_al info`.
std::string build_info() {
#ifdef WITH_CUDA
  const std::string cuda = "cuda=1;archs=" + cuda_arch_list();
#else
  const std::string cuda = "cuda=0;archs=";
#endif
  return cuda + ";torch=" + TORCH_VERSION;
}

TORCH_LIBRARY(entropy_al, m) {
  // [K, N, C] logits of K MC passes -> float32 [N] scores of the mean softmax (score names: csrc/mc_scores.h).
  m.def("mc_scores(Tensor logits, str score) -> Tensor");
  // Merges float scores [B] of pool indices offset.. into the int64 keys `state` (descending); returns the
  // best min(k, len(state) + B) keys, descending. acquisition "top" ranks the scores; "power" and "softmax" rank
  // coldness * log(s) + G and coldness * s + G, G Gumbel noise keyed on (acquisition_seed, pool index).
  m.def(
      "topk_update(Tensor scores, Tensor state, int offset, int k, str acquisition=\"top\", float coldness=1.0, "
      "int acquisition_seed=0) -> Tensor");
  // mc_scores of a [K, B, C] logit block fused with topk_update.
  m.def(
      "mc_topk_update(Tensor logits, Tensor state, int offset, int k, str score, str acquisition=\"top\", "
      "float coldness=1.0, int acquisition_seed=0) -> Tensor");
  // float64 Gumbel noise of pool indices under acquisition_seed, as the top-k kernels draw it (for the tests).
  m.def("_acquisition_noise(Tensor indices, int acquisition_seed) -> Tensor");
  // x [B, ...] * keep / (1 - p), keep drawn per element from Philox(seed; sample_ids[b], pass_ids[b], position).
  m.def("keyed_dropout(Tensor x, float p, int seed, Tensor sample_ids, Tensor pass_ids) -> Tensor");
  m.def("_build_info() -> str", &build_info);
  // Test only: which elements one block of the v2 CUDA score kernel stages and reads (CPU tensors).
  m.def(
      "_tile_plan(int num_classes, int num_samples, int passes, int element_bytes, int misalignment, int tile, "
      "int pass_index) -> (Tensor, Tensor, Tensor)",
      &tile_plan);
}

}  // namespace entropy_al
