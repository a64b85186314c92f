// The data sets the tests read from Debian packages. A missing one fails the
// test (ASSERT_TRUE(Installed(...))) instead of skipping it: `make test`
// installs both through scripts/install-deps.sh, so a test that cannot read
// them is a broken setup, not a test to pass over.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace permdnn::testing {

inline constexpr const char* kFashionMnistPackage = "dataset-fashion-mnist";
inline constexpr const char* kOnnxTestdataPackage = "libonnx-testdata";

inline ::testing::AssertionResult Installed(const std::filesystem::path& path, const std::string& package) {
  if (std::filesystem::exists(path)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << path.string() << " is missing: install the Debian package " << package
                                       << " (scripts/install-deps.sh; `make test` runs it)";
}

}  // namespace permdnn::testing
