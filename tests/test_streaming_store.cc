// Streaming stores (codec/streaming_store.h): a copy gives memcpy's bytes for
// every alignment of source and destination and every length, touching
// nothing outside the destination; a streamed decode gives codec.decode's
// bytes (divided as divideInPlace) for nat in every element type, the exact
// codec, and dithering (decoded in one piece).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "codec/codec.h"
#include "codec/spec.h"
#include "codec/streaming_store.h"

namespace cc {
namespace {

TEST(StreamingStore, CopyIsMemcpyForEveryAlignmentAndLength) {
  std::mt19937 random(7);
  std::vector<unsigned char> source(4096 + 256), target(source.size() + 256);
  for (auto& byte : source) byte = static_cast<unsigned char>(random());
  for (size_t from : {0, 1, 16, 63}) {
    for (size_t to : {0, 3, 16, 48, 64}) {
      for (size_t bytes : {0, 1, 15, 63, 64, 65, 127, 128, 1000, 4096}) {
        std::fill(target.begin(), target.end(), 0xA5);
        copyStreaming(target.data() + to, source.data() + from, bytes);
        ASSERT_EQ(std::memcmp(target.data() + to, source.data() + from, bytes), 0)
            << "from +" << from << ", to +" << to << ", " << bytes << " bytes";
        for (size_t i = 0; i < target.size(); ++i) {
          if (i >= to && i < to + bytes) continue;
          ASSERT_EQ(target[i], 0xA5) << "byte " << i << " outside the destination was written (to +" << to << ", "
                                     << bytes << " bytes)";
        }
      }
    }
  }
}

TEST(StreamingStore, DivideInPlaceIsFloatDivision) {
  std::mt19937 random(3);
  std::uniform_real_distribution<float> value(-1e3f, 1e3f);
  std::vector<float> values(1000);
  for (float& v : values) v = value(random);
  values[0] = 1e-40f;  // subnormal
  values[1] = 3e38f;
  for (uint32_t divisor : {1u, 2u, 3u, 4u, 7u, 8u, 64u}) {
    std::vector<float> divided = values;
    divideInPlace(divided.data(), divided.size(), divisor);
    for (size_t i = 0; i < values.size(); ++i) {
      const float expected = divisor > 1 ? values[i] / static_cast<float>(divisor) : values[i];
      ASSERT_EQ(std::memcmp(&divided[i], &expected, sizeof(float)), 0) << "value " << i << " / " << divisor;
    }
  }
}

std::unique_ptr<Codec> codecFor(const char* text, cc_datatype_t type) {
  CodecSpec spec;
  EXPECT_EQ(parseCodecSpec(text, &spec), CC_SUCCESS) << text;
  return makeBlockCodec(spec, type, CC_SUM);
}

TEST(StreamingStore, DecodeGivesTheCodecsBytes) {
  std::mt19937 random(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  struct Case {
    const char* codec;
    cc_datatype_t type;
    size_t elementBytes;
  };
  for (const Case& c : {Case{"nat", CC_FLOAT32, 4}, Case{"nat", CC_BFLOAT16, 2}, Case{"nat", CC_FLOAT16, 2},
                        Case{"none", CC_FLOAT32, 4}, Case{"dither_nat", CC_FLOAT32, 4}}) {
    const std::unique_ptr<Codec> codec = codecFor(c.codec, c.type);
    ASSERT_NE(codec, nullptr);
    for (size_t count : {size_t{1}, size_t{31}, size_t{2048}, size_t{2048 * 3 + 32}, size_t{10000 + 5}}) {
      std::vector<float> f32(count);
      for (float& v : f32) v = normal(random);
      std::vector<unsigned char> input(count * c.elementBytes);
      if (c.elementBytes == 4) {
        std::memcpy(input.data(), f32.data(), input.size());
      } else {
        for (size_t i = 0; i < count; ++i) {  // the top half of float32: bfloat16, and a valid float16 pattern
          uint32_t bits;
          std::memcpy(&bits, &f32[i], 4);
          const uint16_t half = static_cast<uint16_t>(c.type == CC_BFLOAT16 ? bits >> 16 : (bits >> 16) & 0x3bff);
          std::memcpy(input.data() + 2 * i, &half, 2);
        }
      }
      std::vector<unsigned char> packed(codec->packedBytes(count));
      codec->encode(input.data(), count, 0, RandomStream{5, 6}, packed.data());
      std::vector<unsigned char> expected(count * c.elementBytes + 64), streamed(expected.size());
      codec->decode(packed.data(), count, expected.data());
      for (size_t offset : {size_t{0}, size_t{4}, size_t{16}}) {  // the output's alignment
        std::fill(streamed.begin(), streamed.end(), 0);
        decodeStreaming(*codec, packed.data(), count, c.elementBytes, 1, streamed.data() + offset);
        ASSERT_EQ(std::memcmp(streamed.data() + offset, expected.data(), count * c.elementBytes), 0)
            << c.codec << " type " << c.type << ", " << count << " values, output at +" << offset;
      }
      if (c.type == CC_FLOAT32) {
        for (uint32_t divisor : {3u, 4u}) {
          std::vector<float> divided(count), reference(count);
          std::memcpy(reference.data(), expected.data(), count * sizeof(float));
          divideInPlace(reference.data(), count, divisor);
          decodeStreaming(*codec, packed.data(), count, sizeof(float), divisor, divided.data());
          ASSERT_EQ(std::memcmp(divided.data(), reference.data(), count * sizeof(float)), 0)
              << c.codec << ", " << count << " values, divided by " << divisor;
        }
      }
    }
  }
}

}  // namespace
}  // namespace cc
