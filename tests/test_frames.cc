// Bad input from the network: foreign, corrupted, truncated or mismatched
// frames must fail with CC_REMOTE_ERROR and a message, never crash or decode.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "prims/prims.h"
#include "transports/transport.h"

namespace {

constexpr size_t kSlotBytes = cc::kFrameHeaderBytes + 4096;

struct Link {
  std::unique_ptr<cc::Transport> senderTransport, receiverTransport;
  std::unique_ptr<cc::SendChannel> send;
  std::unique_ptr<cc::RecvChannel> recv;
};

Link makeLink(uint64_t key) {
  Link link;
  cc::TransportSetup setup;
  setup.nranks = 2;
  setup.timeoutMs = 2000;
  setup.nonce = key;
  setup.rank = 1;
  EXPECT_EQ(cc::createLocalTransport(setup, &link.senderTransport), CC_SUCCESS);
  setup.rank = 0;
  EXPECT_EQ(cc::createLocalTransport(setup, &link.receiverTransport), CC_SUCCESS);
  EXPECT_EQ(link.senderTransport->openSend(0, 0, kSlotBytes, 2, &link.send), CC_SUCCESS);
  EXPECT_EQ(link.receiverTransport->openRecv(1, 0, kSlotBytes, 2, &link.recv), CC_SUCCESS);
  return link;
}

struct Collective {
  std::vector<float> input = std::vector<float>(64, 1.5f);
  std::vector<float> output = std::vector<float>(64, -7.0f);
  std::unique_ptr<cc::Codec> codec = cc::makeCodec(cc::CodecId::Nat, CC_FLOAT32, CC_SUM);
  cc::CollectiveArgs args(int rank) {
    return cc::CollectiveArgs{input.data(), output.data(), input.size(), CC_FLOAT32, CC_SUM,
                              codec.get(),  42,            7,            rank,         2};
  }
};

// Rank 1 sends a good frame for values [0, 64) at step 0, `tamper` edits it
// in the slot before it is posted, and rank 0 receives it as step 1 expects.
std::string receiveTampered(const std::function<void(unsigned char* slot)>& tamper,
                            cc_result_t* result) {
  static uint64_t key = 0xF00D;
  Link link = makeLink(++key);
  Collective senderSide, receiverSide;
  {
    // Encode into the slot like encodeSend does, but tamper before posting.
    void* slot = nullptr;
    EXPECT_EQ(link.send->acquire(&slot), CC_SUCCESS);
    cc::Prims sender(senderSide.args(1));
    Link scratch = makeLink(++key);
    EXPECT_EQ(sender.encodeSend(*scratch.send, 0, 64, 0), CC_SUCCESS);
    void* encoded = nullptr;
    EXPECT_EQ(scratch.recv->wait(&encoded), CC_SUCCESS);
    std::memcpy(slot, encoded, kSlotBytes);
    tamper(static_cast<unsigned char*>(slot));
    EXPECT_EQ(link.send->post(kSlotBytes), CC_SUCCESS);
  }
  cc::Prims receiver(receiverSide.args(0));
  *result = receiver.recvForwardDecode(*link.recv, 1, nullptr, 0, 64, 1);
  // Nothing may have been decoded from a rejected frame.
  if (*result != CC_SUCCESS) {
    for (float value : receiverSide.output) EXPECT_EQ(value, -7.0f);
  }
  return cc_get_last_error(nullptr);
}

TEST(Frames, AnUntamperedFrameDecodes) {
  cc_result_t result;
  std::string message = receiveTampered([](unsigned char*) {}, &result);
  EXPECT_EQ(result, CC_SUCCESS) << message;
}

TEST(Frames, ForeignBytesAreRejected) {
  cc_result_t result;
  std::string message = receiveTampered([](unsigned char* slot) { std::memset(slot, 0xAB, 64); }, &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("not a libcompressedcoll frame"), std::string::npos) << message;
}

TEST(Frames, CorruptedHeaderIsRejected) {
  cc_result_t result;
  // Flip one bit of the first index: only the checksum can tell.
  std::string message = receiveTampered(
      [](unsigned char* slot) { slot[offsetof(cc::FrameHeader, firstIndex)] ^= 0x20; }, &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("corrupted"), std::string::npos) << message;
}

// A sender whose header is consistent but describes something else: fix the
// checksum after editing so the field checks themselves are exercised.
void editAndReseal(unsigned char* slot, const std::function<void(cc::FrameHeader&)>& edit) {
  cc::FrameHeader header;
  std::memcpy(&header, slot, sizeof(header));
  edit(header);
  header.checksum = cc::frameHeaderChecksum(header);
  std::memcpy(slot, &header, sizeof(header));
}

TEST(Frames, TruncatedPayloadIsRejected) {
  cc_result_t result;
  std::string message = receiveTampered(
      [](unsigned char* slot) { editAndReseal(slot, [](cc::FrameHeader& h) { h.payloadBytes -= 36; }); },
      &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("payload bytes"), std::string::npos) << message;
}

TEST(Frames, OversizedCountIsRejectedBeforeDecoding) {
  cc_result_t result;
  std::string message = receiveTampered(
      [](unsigned char* slot) {
        editAndReseal(slot, [](cc::FrameHeader& h) {
          h.count = 1u << 30;
          h.payloadBytes = 36u << 25;
        });
      },
      &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("expected step 0, range [0, +64)"), std::string::npos) << message;
}

TEST(Frames, MismatchedCollectiveIsNamed) {
  cc_result_t result;
  std::string message = receiveTampered(
      [](unsigned char* slot) { editAndReseal(slot, [](cc::FrameHeader& h) { h.collectiveSeq = 8; }); },
      &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("collective #8"), std::string::npos) << message;
}

TEST(Frames, MismatchedDatatypeIsNamed) {
  cc_result_t result;
  std::string message = receiveTampered(
      [](unsigned char* slot) {
        editAndReseal(slot, [](cc::FrameHeader& h) { h.datatype = CC_BFLOAT16; });
      },
      &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("datatype 9"), std::string::npos) << message;
}

TEST(Frames, ImpostorSenderIsNamed) {
  cc_result_t result;
  std::string message = receiveTampered(
      [](unsigned char* slot) { editAndReseal(slot, [](cc::FrameHeader& h) { h.senderRank = 5; }); },
      &result);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("claims to come from rank 5"), std::string::npos) << message;
}

// auto's announcements (direct and tree announce themselves on the ring
// channel): rank 1 sends what `sender` does, rank 0 expects `expected`'s
// announcement and then a data frame of step 1.
cc_result_t announceThenReceive(const std::function<cc_result_t(cc::Prims&, cc::SendChannel&)>& sender,
                                const char* expected, std::string* message) {
  static uint64_t key = 0xA110;
  Link link = makeLink(++key);
  Collective senderSide, receiverSide;
  cc::Prims senderPrims(senderSide.args(1));
  EXPECT_EQ(sender(senderPrims, *link.send), CC_SUCCESS);
  cc::Prims receiver(receiverSide.args(0));
  receiver.expectAnnouncement(*link.recv, 1, expected);
  const cc_result_t result = receiver.recvForwardDecode(*link.recv, 1, nullptr, 0, 64, 1);
  *message = cc_get_last_error(nullptr);
  return result;
}

TEST(Announcements, AMatchingAnnouncementIsConsumedBeforeTheData) {
  std::string message;
  const cc_result_t result = announceThenReceive(
      [](cc::Prims& prims, cc::SendChannel& to) {
        cc_result_t announced = prims.announce(to, "tree");
        return announced != CC_SUCCESS ? announced : prims.encodeSend(to, 0, 64, 0);
      },
      "tree", &message);
  EXPECT_EQ(result, CC_SUCCESS) << message;
}

TEST(Announcements, ADifferentAlgorithmIsNamed) {
  std::string message;
  const cc_result_t result = announceThenReceive(
      [](cc::Prims& prims, cc::SendChannel& to) { return prims.announce(to, "direct"); }, "tree", &message);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("rank 1 runs direct"), std::string::npos) << message;
  EXPECT_NE(message.find("this rank runs tree"), std::string::npos) << message;
}

TEST(Announcements, ADataFrameWhereAnAnnouncementWasExpectedIsNamed) {
  std::string message;
  const cc_result_t result = announceThenReceive(
      [](cc::Prims& prims, cc::SendChannel& to) { return prims.encodeSend(to, 0, 64, 0); }, "direct", &message);
  EXPECT_EQ(result, CC_REMOTE_ERROR);
  EXPECT_NE(message.find("expected its announcement"), std::string::npos) << message;
}

TEST(Announcements, AnAnnouncementWhereDataWasExpectedIsNamed) {
  static uint64_t key = 0xB110;
  Link link = makeLink(++key);
  Collective senderSide, receiverSide;
  cc::Prims sender(senderSide.args(1));
  ASSERT_EQ(sender.announce(*link.send, "tree"), CC_SUCCESS);
  cc::Prims receiver(receiverSide.args(0));
  EXPECT_EQ(receiver.recvForwardDecode(*link.recv, 1, nullptr, 0, 64, 1), CC_REMOTE_ERROR);
  const std::string message = cc_get_last_error(nullptr);
  EXPECT_NE(message.find("rank 1 sent its announcement of tree"), std::string::npos) << message;
  for (float value : receiverSide.output) EXPECT_EQ(value, -7.0f);
}

}  // namespace
