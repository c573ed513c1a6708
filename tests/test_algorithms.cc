// Placeholder: replaced by the algorithm tests.
#include <gtest/gtest.h>
TEST(Algorithms, Placeholder) { SUCCEED(); }
