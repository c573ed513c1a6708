// Linked into every GoogleTest executable. The tests check the codecs
// through auto, which would send many of their small calls on the exact path
// (src/algo/auto/compression.h): there auto compresses every call, unless
// the environment already says otherwise (the tests of that choice set their
// own CC_COMPRESS_MIN_BYTES, or unset it).
#include <cstdlib>

namespace {
const bool kCompressEveryCall = setenv("CC_COMPRESS_MIN_BYTES", "0", /*overwrite=*/0) == 0;
}  // namespace
