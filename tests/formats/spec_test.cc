// The compression SPEC parser and its default rule.
#include "permdnn/formats/spec.h"

#include <gtest/gtest.h>

#include "permdnn/core/error.h"

namespace permdnn::formats {
namespace {

// The error CompressSpec::Parse throws for `text`, or "accepted".
std::string message(const char* text) {
  try {
    CompressSpec::Parse(text);
  } catch (const Error& e) {
    return std::string(e.what());
  }
  return std::string("accepted");
}

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

// ternary (issue 18): group required, density and t optional, both
// spellings; ToString parses back to the same method; bad values named.
TEST(CompressSpec, Ternary) {
  const LayerCompression t = ParseLayerCompression("ternary:group=16");
  EXPECT_EQ(t.kind, CompressKind::kTernary);
  EXPECT_EQ(t.p, 16);
  EXPECT_DOUBLE_EQ(t.density, 1.0);
  EXPECT_DOUBLE_EQ(t.threshold, 0.05);
  CompressSpec s = CompressSpec::Parse("ternary:group=16,density=0.5,t=0.03,fc3=dense");
  ASSERT_TRUE(s.global);
  EXPECT_DOUBLE_EQ(s.global->density, 0.5);
  EXPECT_DOUBLE_EQ(s.global->threshold, 0.03);
  EXPECT_TRUE(s.Resolve("fc3", false).is_dense());
  EXPECT_EQ(ParseLayerCompression(s.global->ToString()), *s.global);
  EXPECT_FALSE(t.alpha_per_layer);
  const LayerCompression layer = ParseLayerCompression("ternary:group=16:alpha=layer");
  EXPECT_TRUE(layer.alpha_per_layer);
  EXPECT_EQ(ParseLayerCompression(layer.ToString()), layer);
  EXPECT_FALSE(ParseLayerCompression("ternary:group=16:alpha=row").alpha_per_layer);
  for (const auto& [text, what] : std::vector<std::pair<std::string, std::string>>{
           {"ternary", "needs group=N"},
           {"ternary:group=16:alpha=channel",
            "alpha=channel in 'ternary:group=16:alpha=channel' must be row (one scale per output row) or layer"},
           {"ternary:group=16:density=0", "density=0 in 'ternary:group=16:density=0' must be a number in (0, 1]"},
           {"ternary:group=16:t=1", "t=1 in 'ternary:group=16:t=1' must be a number in [0, 1)"},
           {"ternary:group=16:bits=2", "unknown parameter 'bits' for ternary"}}) {
    try {
      ParseLayerCompression(text);
      ADD_FAILURE() << text << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  }
}

TEST(CompressSpec, PruneBitsBothForms) {
  // Issue 6 writes the comma form; the ':' form is one METHOD.
  for (const char* text : {"prune:density=0.1,bits=4", "prune:density=0.1:bits=4", "prune:density=0.1, bits=4"}) {
    CompressSpec s = CompressSpec::Parse(text);
    ASSERT_TRUE(s.global) << text;
    EXPECT_EQ(s.global->kind, CompressKind::kPrune) << text;
    EXPECT_DOUBLE_EQ(s.global->density, 0.1) << text;
    EXPECT_EQ(s.global->bits, 4) << text;
    EXPECT_TRUE(s.layers.empty()) << text;
    EXPECT_EQ(s.ToString(), "prune:density=0.1:bits=4") << text;
    EXPECT_EQ(CompressSpec::Parse(s.ToString()).global, s.global) << text;
  }
  EXPECT_EQ(ParseLayerCompression("prune:density=0.1").bits, 0);
  // Continuation of a per-layer method, followed by more items.
  CompressSpec s = CompressSpec::Parse("prune:density=0.5,fc2=prune:density=0.2,bits=3,fc3=dense");
  EXPECT_EQ(s.global->bits, 0);
  EXPECT_DOUBLE_EQ(s.global->density, 0.5);
  EXPECT_EQ(s.layers.at("fc2").bits, 3);
  EXPECT_DOUBLE_EQ(s.layers.at("fc2").density, 0.2);
  EXPECT_TRUE(s.layers.at("fc3").is_dense());
  // The comma form also continues any other parameter of the preceding kind.
  EXPECT_EQ(CompressSpec::Parse("prune:bits=2,density=0.3").global->bits, 2);
}

TEST(CompressSpec, PruneBitsErrors) {
  for (const char* bad : {"prune:density=0.1,bits=0", "prune:density=0.1:bits=9", "prune:density=0.1,bits=2.5",
                          "prune:density=0.1:bits=x", "prune:density=0.1:bits="}) {
    std::string m = message(bad);
    EXPECT_NE(m.find("bits"), std::string::npos) << bad << ": " << m;
  }
  EXPECT_NE(message("prune:density=0.1,bits=9").find("[1, 8]"), std::string::npos);
  // bits on non-prune kinds.
  for (const char* bad : {"permdiag:p=8,bits=4", "circulant:p=8:bits=4", "dense,bits=4", "fc1=permdiag:p=4,bits=4",
                          "bits=4", "prune:density=0.1,bits=4,bits=4"}) {
    std::string m = message(bad);
    EXPECT_NE(m, "accepted") << bad;
    EXPECT_NE(m.find("bits"), std::string::npos) << bad << ": " << m;
  }
  EXPECT_NE(message("permdiag:p=8,bits=4").find("permdiag has no parameter 'bits'"), std::string::npos);
}

// index=R: relative column indices (the csr-relative format), with bits only.
TEST(CompressSpec, PruneRelativeIndex) {
  for (const char* text : {"prune:density=0.05:bits=4:index=5", "prune:density=0.05,bits=4,index=5"}) {
    const LayerCompression c = *CompressSpec::Parse(text).global;
    EXPECT_EQ(c.index_bits, 5) << text;
    EXPECT_EQ(c.ToString(), "prune:density=0.05:bits=4:index=5") << text;
    EXPECT_EQ(ParseLayerCompression(c.ToString()), c) << text;
  }
  EXPECT_EQ(ParseLayerCompression("prune:density=0.05:bits=4").index_bits, 0);
  EXPECT_NE(message("prune:density=0.1:index=5").find("index=5 in 'prune:density=0.1:index=5' needs bits=B"),
            std::string::npos);
  for (const char* bad : {"prune:density=0.1:bits=4:index=1", "prune:density=0.1:bits=4:index=9",
                          "prune:density=0.1:bits=4:index=x"})
    EXPECT_NE(message(bad).find("must be an integer in [2, 8]"), std::string::npos) << bad << ": " << message(bad);
  EXPECT_NE(message("permdiag:p=8:index=4").find("index"), std::string::npos);
}

// offsets=column (the permdiag-column format): both forms, per layer, the
// canonical text; a second, unknown or misplaced offsets is an error naming it.
TEST(CompressSpec, ColumnOffsets) {
  for (const char* text : {"permdiag:p=8,offsets=column", "permdiag:p=8:offsets=column"}) {
    CompressSpec s = CompressSpec::Parse(text);
    ASSERT_TRUE(s.global) << text;
    EXPECT_TRUE(s.global->column_offsets) << text;
    EXPECT_EQ(s.global->p, 8) << text;
    EXPECT_EQ(s.ToString(), "permdiag:p=8:offsets=column") << text;
    EXPECT_EQ(CompressSpec::Parse(s.ToString()).global, s.global) << text;
  }
  CompressSpec s = CompressSpec::Parse("fc1=permdiag:p=4,offsets=column,fc2=permdiag:p=8");
  EXPECT_TRUE(s.layers.at("fc1").column_offsets);
  EXPECT_FALSE(s.layers.at("fc2").column_offsets);
  EXPECT_FALSE(CompressSpec::Parse("permdiag:p=8,offsets=block").global->column_offsets);
  EXPECT_EQ(CompressSpec::Parse("permdiag:p=8,offsets=block").ToString(), "permdiag:p=8");
  EXPECT_NE(message("permdiag:p=8,offsets=diagonal").find("offsets=diagonal in 'permdiag:p=8:offsets=diagonal' must "
                                                          "be 'block'"), std::string::npos)
      << message("permdiag:p=8,offsets=diagonal");
  EXPECT_NE(message("permdiag:p=8,offsets=column,offsets=block").find("parameter 'offsets' given twice"),
            std::string::npos);
  EXPECT_NE(message("circulant:p=8,offsets=column").find("circulant has no parameter 'offsets'"), std::string::npos);
  EXPECT_NE(message("prune:density=0.1:offsets=column").find("unknown parameter 'offsets' for prune"),
            std::string::npos);
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
}  // namespace permdnn::formats
