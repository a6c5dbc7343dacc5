// Host-side helpers every backend's argument checks share (ATen; not for device code).
#pragma once

#include <c10/core/ScalarType.h>

#include <string>

namespace entropy_al {

// "torch.int64" rather than "Long": the name users write, as the Python layer prints it.
inline std::string dtype_name(at::ScalarType dtype) {
  return "torch." + std::string(c10::getDtypeNames(dtype).first);
}

}  // namespace entropy_al
