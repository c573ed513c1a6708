// The codec spec grammar: what parses, what it means, and what is refused
// with a message that names the problem and gives the grammar.
#include <gtest/gtest.h>

#include <string>

#include "base/error.h"
#include "codec/codec.h"
#include "codec/spec.h"

namespace cc {
namespace {

CodecSpec parsed(const std::string& text) {
  CodecSpec spec;
  EXPECT_EQ(parseCodecSpec(text, &spec), CC_SUCCESS) << text << ": " << lastErrorMessage();
  return spec;
}

TEST(CodecSpec, ParameterlessNames) {
  EXPECT_EQ(parsed("none").quantizer, Quantizer::Exact);
  EXPECT_EQ(parsed("nat").quantizer, Quantizer::Nat);
  EXPECT_EQ(parsed("nat_det").quantizer, Quantizer::NatDet);
  EXPECT_TRUE(parsed("nat").unbiased());
  EXPECT_FALSE(parsed("nat_det").unbiased());
  EXPECT_EQ(parsed("nat").canonical, "nat");
  EXPECT_EQ(parsed("nat").label, "nat");
}

TEST(CodecSpec, DitheringDefaultsAndKeys) {
  const CodecSpec d = parsed("dither_nat");
  EXPECT_EQ(d.quantizer, Quantizer::DitherNat);
  EXPECT_EQ(d.dither.norm, NormKind::L2);
  EXPECT_EQ(d.dither.levels, 8u);
  EXPECT_FALSE(d.dither.natNorm);
  EXPECT_EQ(d.scope, Scope::Bucket);
  EXPECT_EQ(d.bucketValues, kDefaultDitherBucketValues);
  EXPECT_EQ(d.canonical, "dither_nat:p=2,s=8,norm=f32,bucket=512");

  const CodecSpec e = parsed("dither_nat:p=inf,s=3,norm=nat,bucket=1024");
  EXPECT_EQ(e.dither.norm, NormKind::Max);
  EXPECT_EQ(e.dither.levels, 3u);
  EXPECT_TRUE(e.dither.natNorm);
  EXPECT_EQ(e.bucketValues, 1024u);
  EXPECT_TRUE(e.hopReencodable());

  const CodecSpec t = parsed("dither_nat:p=2,s=8,norm=nat,scope=tensor");
  EXPECT_EQ(t.scope, Scope::Tensor);
  EXPECT_FALSE(t.hopReencodable());
  EXPECT_EQ(parsed("dither_std:scope=model").scope, Scope::Model);

  // dither_std: s gives u = 2^(s-1) levels (REFERENCE); u= gives them directly.
  EXPECT_EQ(parsed("dither_std:s=3").dither.levels, 4u);
  EXPECT_EQ(parsed("dither_std:u=5").dither.levels, 5u);
  EXPECT_EQ(parsed("dither_std:s=3").canonical, parsed("dither_std:u=4").canonical);
}

TEST(CodecSpec, PresetsAreStandardDithering) {
  const CodecSpec q = parsed("qsgd:s=16");
  EXPECT_EQ(q.quantizer, Quantizer::DitherStd);
  EXPECT_EQ(q.dither.norm, NormKind::L2);
  EXPECT_EQ(q.dither.levels, 16u);  // QSGD's s: levels j/s
  EXPECT_EQ(q.label, "qsgd");
  EXPECT_TRUE(q.unbiased());

  const CodecSpec t = parsed("terngrad");
  EXPECT_EQ(t.quantizer, Quantizer::DitherStd);
  EXPECT_EQ(t.dither.norm, NormKind::Max);
  EXPECT_EQ(t.dither.levels, 1u);
  EXPECT_EQ(t.dither.clip, 0.0f);
  EXPECT_FLOAT_EQ(parsed("terngrad:clip=2.5").dither.clip, 2.5f);
}

TEST(CodecSpec, Compositions) {
  const CodecSpec r = parsed("randk:ratio=0.1+nat");
  EXPECT_EQ(r.selector, Selector::RandK);
  EXPECT_DOUBLE_EQ(r.ratio, 0.1);
  EXPECT_EQ(r.quantizer, Quantizer::Nat);
  EXPECT_TRUE(r.unbiased());
  EXPECT_TRUE(r.hopReencodable());
  EXPECT_EQ(r.label, "randk+nat");
  EXPECT_EQ(r.canonical, "randk:ratio=0.10000000000000001+nat");

  const CodecSpec alone = parsed("randk:ratio=0.5");
  EXPECT_EQ(alone.quantizer, Quantizer::Exact);

  const CodecSpec k = parsed("topk:ratio=0.01+nat");
  EXPECT_EQ(k.selector, Selector::TopK);
  EXPECT_EQ(k.quantizer, Quantizer::Nat);
  EXPECT_EQ(k.scope, Scope::Tensor);  // top-k selects per tensor unless told otherwise
  EXPECT_FALSE(k.unbiased());
  EXPECT_FALSE(k.hopReencodable());

  const CodecSpec kAbs = parsed("topk:k=100,scope=model");
  EXPECT_EQ(kAbs.topK, 100u);
  EXPECT_EQ(kAbs.scope, Scope::Model);
  EXPECT_EQ(parsed("topk:bucket=256").scope, Scope::Bucket);

  const CodecSpec rd = parsed("randk:ratio=0.5+dither_nat:s=4,norm=nat");
  EXPECT_EQ(rd.quantizer, Quantizer::DitherNat);
  EXPECT_EQ(rd.dither.levels, 4u);
}

TEST(CodecSpec, EqualSpecsHashEqual) {
  EXPECT_EQ(parsed("qsgd:s=16").hash, parsed("dither_std:p=2,u=16").hash);
  EXPECT_EQ(parsed("dither_nat").hash, parsed("dither_nat:s=8,p=2,norm=f32,bucket=512").hash);
  EXPECT_NE(parsed("dither_nat").hash, parsed("dither_nat:s=7").hash);
  EXPECT_NE(parsed("nat").hash, parsed("nat_det").hash);
}

void expectRefused(const std::string& text, const std::string& needle) {
  CodecSpec spec;
  EXPECT_EQ(parseCodecSpec(text, &spec), CC_INVALID_ARGUMENT) << text;
  const std::string message = lastErrorMessage();
  EXPECT_NE(message.find("CC_INVALID_ARGUMENT"), std::string::npos) << message;
  EXPECT_NE(message.find("grammar: name[:key=value,...][+name...]"), std::string::npos) << message;
  EXPECT_NE(message.find(needle), std::string::npos) << text << " -> " << message;
}

TEST(CodecSpec, BadSpecsAreRefusedWithTheGrammar) {
  expectRefused("", "empty spec");
  expectRefused("zstd", "unknown codec 'zstd'");
  expectRefused("NAT", "unknown codec 'NAT'");
  expectRefused("nat:", "no key=value");
  expectRefused("nat:s=3", "unknown key 's' for nat");
  expectRefused("dither_nat:s", "'s' in dither_nat is not key=value");
  expectRefused("dither_nat:s=0", "s=0 in dither_nat is not an integer in [1, 126]");
  expectRefused("dither_nat:s=abc", "s=abc");
  expectRefused("dither_nat:p=3", "p=3 in dither_nat is not one of 2, inf");
  expectRefused("dither_nat:norm=f16", "norm=f16");
  expectRefused("dither_nat:bucket=100", "not a multiple of 32");
  expectRefused("dither_nat:bucket=64,scope=tensor", "bucket= needs scope=bucket");
  expectRefused("dither_nat:s=3,s=4", "given twice");
  expectRefused("dither_std:s=3,u=4", "not both");
  expectRefused("randk:ratio=0", "ratio > 0");
  expectRefused("randk:ratio=1.5", "ratio=1.5");
  expectRefused("randk:scope=tensor", "unknown key 'scope' for randk");
  expectRefused("topk:ratio=0.1,k=5", "not both");
  expectRefused("topk+qsgd", "topk composes only with nat");
  expectRefused("nat+randk", "cannot be followed");
  expectRefused("randk+topk", "must be a quantizer");
  expectRefused("randk+none", "adds nothing");
  expectRefused("randk++nat", "empty component");
  expectRefused("randk+nat+nat", "at most two components");
}

TEST(CodecSpec, BlockCodecsFollowTheSpec) {
  EXPECT_EQ(makeBlockCodec(parsed("nat"), CC_FLOAT32, CC_SUM)->id(), CodecId::Nat);
  EXPECT_EQ(makeBlockCodec(parsed("nat_det"), CC_BFLOAT16, CC_AVG)->id(), CodecId::NatDet);
  const auto dither = makeBlockCodec(parsed("dither_nat:bucket=256"), CC_FLOAT16, CC_SUM);
  EXPECT_EQ(dither->id(), CodecId::Dither);
  EXPECT_EQ(dither->alignmentValues(), 256u);
  // Ops and types that are not compressed take the exact codec whatever the spec.
  EXPECT_EQ(makeBlockCodec(parsed("qsgd"), CC_FLOAT32, CC_MAX)->id(), CodecId::None);
  EXPECT_EQ(makeBlockCodec(parsed("qsgd"), CC_INT32, CC_SUM)->id(), CodecId::None);
  EXPECT_FALSE(specCompresses(parsed("none"), CC_FLOAT32, CC_SUM));
  EXPECT_TRUE(specCompresses(parsed("randk"), CC_FLOAT32, CC_SUM));
  EXPECT_EQ(makeVectorCodec(parsed("topk:ratio=0.1"))->id(), CodecId::TopK);
  EXPECT_EQ(makeVectorCodec(parsed("dither_nat:scope=tensor"))->id(), CodecId::Dither);
}

}  // namespace
}  // namespace cc
