// The libFuzzer entry point of one target: built once per target with
// PERMDNN_FUZZ_FN set to its function (fuzz/CMakeLists.txt).
#include "fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return permdnn::fuzz::PERMDNN_FUZZ_FN(data, size);
}
