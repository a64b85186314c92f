// Shared by the simulator tests: the technology table they price with
// (data/sim/tech_28nm.json, PERMDNN_TEST_TECH) and a check that a call
// throws permdnn::Error with a given phrase in its message.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "permdnn/core/error.h"
#include "permdnn/sim/tech.h"

namespace permdnn::sim::test_util {

inline const TechTable& Tech() {
  static const TechTable t = TechTable::Load(PERMDNN_TEST_TECH);
  return t;
}

// Runs f and checks it throws Error whose message contains `needle`.
template <typename F>
void ExpectError(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

}  // namespace permdnn::sim::test_util
