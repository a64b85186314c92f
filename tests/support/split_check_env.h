// Sets PERMDNN_SPLIT_CHECK (nullptr: unsets it) for its lifetime, then
// restores what was there (ctest sets it to split for the runtime tests, so
// that they compare the split kernels; a test that forces the one-thread
// path or times the check sets it for its own scope).
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace permdnn::testing {

class SplitCheckEnv {
 public:
  explicit SplitCheckEnv(const char* value) {
    if (const char* old = std::getenv("PERMDNN_SPLIT_CHECK")) old_ = old;
    Set(value);
  }
  ~SplitCheckEnv() { Set(old_ ? old_->c_str() : nullptr); }
  SplitCheckEnv(const SplitCheckEnv&) = delete;
  SplitCheckEnv& operator=(const SplitCheckEnv&) = delete;
  static void Set(const char* value) {
    if (value) setenv("PERMDNN_SPLIT_CHECK", value, 1);
    else unsetenv("PERMDNN_SPLIT_CHECK");
  }

 private:
  std::optional<std::string> old_;
};

}  // namespace permdnn::testing
