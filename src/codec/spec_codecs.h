// Codec lookup for calls: the codecs of each spec a communicator meets, made
// on first use and kept, so that calls allocate nothing. Specs are found by
// the text callers gave ("" = the communicator's own codec).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "codec/codec.h"
#include "codec/spec.h"
#include "compressedcoll.h"

namespace cc {

struct SpecCodecs {
  CodecSpec spec;
  std::unique_ptr<Codec> block[CC_NUM_DATATYPES][CC_NUM_OPS];
  std::unique_ptr<VectorCodec> vector;
  bool loggedBiased = false;  // the call path says once that a biased spec runs without error feedback
};

// The block codec of `codecs.spec` for (datatype, op), made on first use.
cc_result_t blockCodec(SpecCodecs& codecs, cc_datatype_t datatype, cc_red_op_t op, const Codec** out);
// Its whole-vector codec (float32 values), made on first use.
cc_result_t vectorCodec(SpecCodecs& codecs, const VectorCodec** out);

class SpecCodecCache {
 public:
  // The codecs of the spec written `text` (null or "": `ownSpec`), parsed and
  // checked the first time that text is seen; entries live as long as the
  // cache, so pointers to them stay valid.
  cc_result_t find(const char* text, const CodecSpec& ownSpec, SpecCodecs** out);

 private:
  std::map<std::string, std::unique_ptr<SpecCodecs>> specs_;
};

}  // namespace cc
