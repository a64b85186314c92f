// The compression SPEC parser and its default rule.
#include "permdnn/train/compress_spec.h"

#include <gtest/gtest.h>

#include "permdnn/core/error.h"

namespace permdnn::train {
namespace {

TEST(CompressSpec, GlobalMethod) {
  CompressSpec s = CompressSpec::Parse("permdiag:p=8");
  ASSERT_TRUE(s.global);
  EXPECT_EQ(s.global->kind, CompressKind::kPermDiag);
  EXPECT_EQ(s.global->p, 8);
  EXPECT_TRUE(s.layers.empty());
  EXPECT_EQ(s.ToString(), "permdiag:p=8");
}

TEST(CompressSpec, PerLayerAndDefaultRule) {
  CompressSpec s = CompressSpec::Parse("permdiag:p=4,fc3=dense, fc1=permdiag:p=16");
  EXPECT_EQ(s.Resolve("fc1", false).p, 16);
  EXPECT_TRUE(s.Resolve("fc3", false).is_dense());
  EXPECT_EQ(s.Resolve("fc2", false).p, 4);
  EXPECT_TRUE(s.Resolve("conv1", true).is_dense());  // edge layer stays dense
  CompressSpec named = CompressSpec::Parse("conv1=permdiag:p=2");
  EXPECT_EQ(named.Resolve("conv1", true).p, 2);      // unless named
  EXPECT_TRUE(named.Resolve("fc1", false).is_dense());  // no global: dense
  EXPECT_TRUE(CompressSpec::Parse("dense").Resolve("fc1", false).is_dense());
}

TEST(CompressSpec, OtherKinds) {
  EXPECT_EQ(ParseLayerCompression("circulant:p=8").kind, CompressKind::kCirculant);
  LayerCompression pr = ParseLayerCompression("prune:density=0.1");
  EXPECT_EQ(pr.kind, CompressKind::kPrune);
  EXPECT_DOUBLE_EQ(pr.density, 0.1);
}

TEST(CompressSpec, Errors) {
  for (const char* bad : {"", "permdiag", "permdiag:p=0", "permdiag:p=x", "permdiag:q=4", "foo:p=2",
                          "dense,permdiag:p=2", "fc1=dense,fc1=dense", "=dense", "prune:density=2",
                          "permdiag:p=4,,fc1=dense"}) {
    EXPECT_THROW(CompressSpec::Parse(bad), Error) << bad;
  }
  CompressSpec s = CompressSpec::Parse("fc9=dense");
  try {
    s.CheckLayerNames({"fc1", "fc2"});
    FAIL() << "unknown layer accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fc9"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("fc1, fc2"), std::string::npos);
  }
}

}  // namespace
}  // namespace permdnn::train
