// Bootstrap: unique ids, CC_COMM_ID, the rendezvous store (client and
// server), its join checks and failure modes, and Gloo connecting its full
// mesh through it. Every address used is a loopback address.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gloo/common/error.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/buffer.h>
#include <gloo/transport/pair.h>
#include <gloo/transport/tcp/device.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "comm/bootstrap.h"
#include "comm/store_protocol.h"
#include "test_helpers.h"

#if defined(__SANITIZE_ADDRESS__)
// A fork()ed child sees the parent's store threads' heap blocks without their
// stacks, so LeakSanitizer would report them when the child exits. This hook
// (read by LSan at exit) turns it off in such children only.
static volatile int gInForkedChild = 0;
extern "C" int __lsan_is_turned_off() { return gInForkedChild; }
#define MARK_FORKED_CHILD() (gInForkedChild = 1)
#else
#define MARK_FORKED_CHILD() ((void)0)
#endif

namespace cc {
using cctest::ScopedEnv;

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kTimeoutMs = 10000;  // generous: only failing tests wait this long

long long millisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}


std::vector<char> bytes(const std::string& text) { return std::vector<char>(text.begin(), text.end()); }
std::string text(const std::vector<char>& data) { return std::string(data.begin(), data.end()); }

sockaddr_storage loopback(int family, uint16_t port) {
  sockaddr_storage addr{};
  if (family == AF_INET) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    in.sin_port = htons(port);
    std::memcpy(&addr, &in, sizeof(in));
  } else {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_addr = in6addr_loopback;
    in6.sin6_port = htons(port);
    std::memcpy(&addr, &in6, sizeof(in6));
  }
  return addr;
}

// A loopback port nobody listens on right now (0 when the family is missing).
uint16_t freeLoopbackPort(int family = AF_INET) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_storage addr = loopback(family, 0);
  uint16_t port = 0;
  socklen_t len = store::sockaddrLength(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = store::sockaddrPort(addr);
  }
  close(fd);
  return port;
}

RootAddress loopbackRoot(int family, uint16_t port, uint64_t nonce) {
  RootAddress root;
  root.addr = loopback(family, port);
  root.addrLen = store::sockaddrLength(root.addr);
  root.nonce = nonce;
  return root;
}

// A store started the way cc_get_unique_id starts it, on the loopback interface.
// CC_COMM_ID needs a shared secret beside it.
constexpr const char* kTestSecret = "test-secret-0123456789";

RootAddress startLoopbackStore() {
  ScopedEnv noCommId("CC_COMM_ID", nullptr);
  ScopedEnv ifname("CC_SOCKET_IFNAME", "lo");
  cc_unique_id_t id;
  EXPECT_EQ(createUniqueId(&id), CC_SUCCESS) << lastErrorMessage();
  RootAddress root;
  EXPECT_EQ(decodeUniqueId(id, &root), CC_SUCCESS) << lastErrorMessage();
  return root;
}

std::unique_ptr<StoreClient> join(const RootAddress& root, int rank, int nranks,
                                  int timeoutMs = kTimeoutMs) {
  std::unique_ptr<StoreClient> client;
  EXPECT_EQ(StoreClient::connect(root, rank, nranks, timeoutMs, &client), CC_SUCCESS)
      << lastErrorMessage();
  return client;
}

// The result and message of a join that is expected to fail.
cc_result_t joinFails(const RootAddress& root, int rank, int nranks, std::string* message) {
  std::unique_ptr<StoreClient> client;
  cc_result_t rc = StoreClient::connect(root, rank, nranks, kTimeoutMs, &client);
  *message = lastErrorMessage();
  EXPECT_EQ(client, nullptr);
  return rc;
}

// Connects until the store stops answering: each join is refused as a
// duplicate while it still runs, and the connection is refused once it
// stopped. Returns the last message (a "could not reach" one when it stopped).
std::string waitUntilStoreStops(const RootAddress& root) {
  std::string message;
  auto start = Clock::now();
  while (millisecondsSince(start) < 5000) {
    std::unique_ptr<StoreClient> client;
    cc_result_t rc = StoreClient::connect(root, 0, 1, 100, &client);
    message = lastErrorMessage();
    if (rc == CC_TIMEOUT) break;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return message;
}

// A raw TCP connection for speaking broken protocol at the store.
class RawClient {
 public:
  explicit RawClient(const RootAddress& root) {
    fd_ = socket(root.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<const sockaddr*>(&root.addr),
                        store::sockaddrLength(root.addr)),
              0);
  }
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  void send(const std::vector<char>& data) {
    EXPECT_EQ(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }
  // True when the store closed this connection within the time limit.
  bool closedByPeer(int timeoutMs = 5000) {
    auto start = Clock::now();
    char buf[4096];
    while (millisecondsSince(start) < timeoutMs) {
      pollfd pfd{fd_, POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return true;  // replies before the close are skipped
    }
    return false;
  }

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------------------
// Unique id
// ---------------------------------------------------------------------------

TEST(UniqueId, RoundTripOnLoopback) {
  ScopedEnv noCommId("CC_COMM_ID", nullptr);
  ScopedEnv ifname("CC_SOCKET_IFNAME", "lo");
  cc_unique_id_t first;
  cc_unique_id_t second;
  ASSERT_EQ(createUniqueId(&first), CC_SUCCESS) << lastErrorMessage();
  ASSERT_EQ(createUniqueId(&second), CC_SUCCESS) << lastErrorMessage();
  RootAddress a;
  RootAddress b;
  ASSERT_EQ(decodeUniqueId(first, &a), CC_SUCCESS) << lastErrorMessage();
  ASSERT_EQ(decodeUniqueId(second, &b), CC_SUCCESS) << lastErrorMessage();
  EXPECT_EQ(a.addr.ss_family, AF_INET);
  EXPECT_EQ(sockaddrToString(a.addr, false), "127.0.0.1");
  EXPECT_NE(store::sockaddrPort(a.addr), 0);
  EXPECT_EQ(a.addrLen, sizeof(sockaddr_in));
  EXPECT_FALSE(a.fromEnvironment);
  EXPECT_NE(a.nonce, b.nonce);
  EXPECT_NE(store::sockaddrPort(a.addr), store::sockaddrPort(b.addr));
  EXPECT_EQ(a.str(), "127.0.0.1:" + std::to_string(store::sockaddrPort(a.addr)));
  // Both stores are live; one rank each lets them finish.
  EXPECT_NE(join(a, 0, 1), nullptr);
  EXPECT_NE(join(b, 0, 1), nullptr);
}

TEST(UniqueId, RejectsIdsNotMadeByCreateUniqueId) {
  RootAddress root;
  cc_unique_id_t zeros;
  std::memset(&zeros, 0, sizeof(zeros));
  EXPECT_EQ(decodeUniqueId(zeros, &root), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastErrorMessage().find("not made by cc_get_unique_id"), std::string::npos)
      << lastErrorMessage();

  cc_unique_id_t garbage;
  for (size_t i = 0; i < sizeof(garbage.internal); ++i) {
    garbage.internal[i] = static_cast<char>(i * 37 + 11);
  }
  EXPECT_EQ(decodeUniqueId(garbage, &root), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastErrorMessage().find("not made by cc_get_unique_id"), std::string::npos);

  ScopedEnv commId("CC_COMM_ID", "127.0.0.1:29999");
  ScopedEnv secret("CC_COMM_SECRET", kTestSecret);
  cc_unique_id_t good;
  ASSERT_EQ(createUniqueId(&good), CC_SUCCESS) << lastErrorMessage();
  ASSERT_EQ(decodeUniqueId(good, &root), CC_SUCCESS);
  // Any single flipped byte (address, nonce, padding, checksum) is caught.
  for (size_t at : {size_t{12}, size_t{16}, size_t{40}, size_t{47}, size_t{100}, size_t{127}}) {
    cc_unique_id_t corrupted = good;
    corrupted.internal[at] = static_cast<char>(corrupted.internal[at] ^ 0x20);
    EXPECT_EQ(decodeUniqueId(corrupted, &root), CC_INVALID_ARGUMENT) << "byte " << at;
    EXPECT_NE(lastErrorMessage().find("not made by cc_get_unique_id"), std::string::npos);
  }
  cc_unique_id_t newer = good;
  newer.internal[8] = 3;  // format version
  EXPECT_EQ(decodeUniqueId(newer, &root), CC_INVALID_ARGUMENT);
  EXPECT_NE(lastErrorMessage().find("format 3"), std::string::npos) << lastErrorMessage();
}

TEST(UniqueId, CommIdGivesEveryRankTheSameIdAndStartsNothing) {
  struct Case {
    const char* value;
    int family;
    const char* address;
    uint16_t port;
  };
  const Case cases[] = {
      {"127.0.0.1:29500", AF_INET, "127.0.0.1", 29500},
      {"[::1]:29501", AF_INET6, "::1", 29501},
      {"localhost:1", AF_UNSPEC, nullptr, 1},
      {"127.0.0.1:65535", AF_INET, "127.0.0.1", 65535},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.value);
    ScopedEnv commId("CC_COMM_ID", c.value);
    ScopedEnv secret("CC_COMM_SECRET", kTestSecret);
    cc_unique_id_t id1;
    cc_unique_id_t id2;
    ASSERT_EQ(createUniqueId(&id1), CC_SUCCESS) << lastErrorMessage();
    ASSERT_EQ(createUniqueId(&id2), CC_SUCCESS) << lastErrorMessage();
    EXPECT_EQ(std::memcmp(&id1, &id2, sizeof(id1)), 0);
    RootAddress root;
    ASSERT_EQ(decodeUniqueId(id1, &root), CC_SUCCESS) << lastErrorMessage();
    EXPECT_TRUE(root.fromEnvironment);
    EXPECT_EQ(store::sockaddrPort(root.addr), c.port);
    if (c.family != AF_UNSPEC) {
      EXPECT_EQ(root.addr.ss_family, c.family);
      EXPECT_EQ(sockaddrToString(root.addr, false), c.address);
    } else {
      std::string address = sockaddrToString(root.addr, false);
      EXPECT_TRUE(address == "::1" || address.rfind("127.", 0) == 0) << address;
    }
  }
  // The nonce follows the text, so different texts name different stores.
  RootAddress a;
  RootAddress b;
  cc_unique_id_t id;
  ScopedEnv secret("CC_COMM_SECRET", kTestSecret);
  {
    ScopedEnv commId("CC_COMM_ID", "127.0.0.1:29500");
    ASSERT_EQ(createUniqueId(&id), CC_SUCCESS);
    ASSERT_EQ(decodeUniqueId(id, &a), CC_SUCCESS);
  }
  {
    ScopedEnv commId("CC_COMM_ID", "127.0.0.1:29501");
    ASSERT_EQ(createUniqueId(&id), CC_SUCCESS);
    ASSERT_EQ(decodeUniqueId(id, &b), CC_SUCCESS);
  }
  EXPECT_NE(a.nonce, b.nonce);
}

TEST(UniqueId, MalformedCommIdNamesTheValueAndTheExpectedForm) {
  const char* bad[] = {"nohostport", "host:", ":29500", "127.0.0.1:0", "127.0.0.1:65536",
                       "127.0.0.1:12ab", "127.0.0.1:-1", "127.0.0.1:+80", "[::1:29500",
                       "::1:29500", "[::1]29500", "[]:29500", "[not-ipv6]:29500",
                       "[127.0.0.1]:29500", "127.0.0.1:123456"};
  for (const char* value : bad) {
    SCOPED_TRACE(value);
    ScopedEnv commId("CC_COMM_ID", value);
    ScopedEnv secret("CC_COMM_SECRET", kTestSecret);
    cc_unique_id_t id;
    EXPECT_EQ(createUniqueId(&id), CC_INVALID_ARGUMENT);
    EXPECT_NE(lastErrorMessage().find(std::string("CC_COMM_ID='") + value + "'"), std::string::npos)
        << lastErrorMessage();
    EXPECT_NE(lastErrorMessage().find("host:port"), std::string::npos) << lastErrorMessage();
  }
}

TEST(UniqueId, CommIdStoreIsServedByRankZero) {
  uint16_t port = freeLoopbackPort();
  ASSERT_NE(port, 0);
  std::string value = "127.0.0.1:" + std::to_string(port);
  ScopedEnv commId("CC_COMM_ID", value.c_str());
  ScopedEnv secret("CC_COMM_SECRET", kTestSecret);
  cc_unique_id_t id;
  ASSERT_EQ(createUniqueId(&id), CC_SUCCESS) << lastErrorMessage();
  RootAddress root;
  ASSERT_EQ(decodeUniqueId(id, &root), CC_SUCCESS);
  // createUniqueId bound nothing, so rank 0 can serve; a second server cannot.
  ASSERT_EQ(serveStore(root), CC_SUCCESS) << lastErrorMessage();
  EXPECT_EQ(serveStore(root), CC_SYSTEM_ERROR);
  EXPECT_NE(lastErrorMessage().find(value), std::string::npos) << lastErrorMessage();

  std::vector<std::unique_ptr<StoreClient>> clients(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank) {
    ranks.emplace_back([&, rank] {
      clients[rank] = join(root, rank, 2);
      if (clients[rank] != nullptr) {
        EXPECT_EQ(clients[rank]->barrier("served"), CC_SUCCESS) << lastErrorMessage();
      }
    });
  }
  for (auto& t : ranks) t.join();
}

TEST(UniqueId, CommIdStoreOnIPv6Loopback) {
  uint16_t port = freeLoopbackPort(AF_INET6);
  if (port == 0) GTEST_SKIP() << "this host has no IPv6 loopback address";
  std::string value = "[::1]:" + std::to_string(port);
  ScopedEnv commId("CC_COMM_ID", value.c_str());
  ScopedEnv secret("CC_COMM_SECRET", kTestSecret);
  cc_unique_id_t id;
  ASSERT_EQ(createUniqueId(&id), CC_SUCCESS) << lastErrorMessage();
  RootAddress root;
  ASSERT_EQ(decodeUniqueId(id, &root), CC_SUCCESS);
  EXPECT_EQ(root.str(), value);
  ASSERT_EQ(serveStore(root), CC_SUCCESS) << lastErrorMessage();
  auto client = join(root, 0, 1);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->localAddressString(), "::1");
  EXPECT_EQ(client->trySet("k", bytes("v6")), CC_SUCCESS) << lastErrorMessage();
  std::vector<char> value6;
  EXPECT_EQ(client->tryGet("k", &value6), CC_SUCCESS) << lastErrorMessage();
  EXPECT_EQ(text(value6), "v6");
}

// ---------------------------------------------------------------------------
// Interfaces and address text
// ---------------------------------------------------------------------------

TEST(Interfaces, LoopbackAndUnknownNames) {
  sockaddr_storage addr{};
  ASSERT_EQ(interfaceAddress("lo", &addr), CC_SUCCESS) << lastErrorMessage();
  EXPECT_EQ(sockaddrToString(addr, false), "127.0.0.1");

  EXPECT_EQ(interfaceAddress("cc-no-such-if", &addr), CC_SYSTEM_ERROR);
  EXPECT_NE(lastErrorMessage().find("cc-no-such-if"), std::string::npos);
  EXPECT_NE(lastErrorMessage().find("lo (127.0.0.1"), std::string::npos) << lastErrorMessage();

  ScopedEnv noCommId("CC_COMM_ID", nullptr);
  ScopedEnv ifname("CC_SOCKET_IFNAME", "cc-no-such-if");
  cc_unique_id_t id;
  EXPECT_EQ(createUniqueId(&id), CC_SYSTEM_ERROR);
  EXPECT_NE(lastErrorMessage().find("CC_SOCKET_IFNAME=cc-no-such-if"), std::string::npos)
      << lastErrorMessage();
}

TEST(Interfaces, SockaddrToString) {
  EXPECT_EQ(sockaddrToString(loopback(AF_INET, 5), true), "127.0.0.1:5");
  EXPECT_EQ(sockaddrToString(loopback(AF_INET, 5), false), "127.0.0.1");
  EXPECT_EQ(sockaddrToString(loopback(AF_INET6, 5), true), "[::1]:5");
  EXPECT_EQ(sockaddrToString(loopback(AF_INET6, 5), false), "::1");
}

// ---------------------------------------------------------------------------
// Store operations
// ---------------------------------------------------------------------------

TEST(Store, SetGetAddWaitBarrierAcrossRanks) {
  static constexpr int kRanks = 4;
  RootAddress root = startLoopbackStore();
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kRanks; ++rank) {
    ranks.emplace_back([&root, rank] {
      auto client = join(root, rank, kRanks);
      ASSERT_NE(client, nullptr);
      EXPECT_EQ(client->localAddressString(), "127.0.0.1");
      ASSERT_EQ(client->trySet("addr/" + std::to_string(rank), bytes("rank" + std::to_string(rank))),
                CC_SUCCESS)
          << lastErrorMessage();
      int64_t sum = 0;
      ASSERT_EQ(client->tryAdd("counter", rank + 1, &sum), CC_SUCCESS) << lastErrorMessage();
      EXPECT_GE(sum, rank + 1);
      std::vector<std::string> all;
      for (int r = 0; r < kRanks; ++r) all.push_back("addr/" + std::to_string(r));
      client->wait(all, milliseconds(kTimeoutMs));
      for (int r = 0; r < kRanks; ++r) {
        std::vector<char> value;
        ASSERT_EQ(client->tryGet("addr/" + std::to_string(r), &value), CC_SUCCESS);
        EXPECT_EQ(text(value), "rank" + std::to_string(r));
      }
      // The same barrier name twice, then another name: each completes only
      // when every rank arrived, so the counter is complete after the first.
      ASSERT_EQ(client->barrier("phase"), CC_SUCCESS) << lastErrorMessage();
      ASSERT_EQ(client->tryAdd("counter", 0, &sum), CC_SUCCESS);
      EXPECT_EQ(sum, kRanks * (kRanks + 1) / 2);
      ASSERT_EQ(client->tryAdd("second", 1, &sum), CC_SUCCESS);
      ASSERT_EQ(client->barrier("phase"), CC_SUCCESS) << lastErrorMessage();
      ASSERT_EQ(client->tryAdd("second", 0, &sum), CC_SUCCESS);
      EXPECT_EQ(sum, kRanks);
      ASSERT_EQ(client->barrier("other"), CC_SUCCESS) << lastErrorMessage();
      // Counters are decimal text, readable with get.
      EXPECT_EQ(text(client->get("counter")), std::to_string(kRanks * (kRanks + 1) / 2));
    });
  }
  for (auto& t : ranks) t.join();
}

TEST(Store, EmptyAndLargeValues) {
  RootAddress root = startLoopbackStore();
  auto client = join(root, 0, 1);
  ASSERT_NE(client, nullptr);
  std::vector<char> big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131);
  ASSERT_EQ(client->trySet("big", big), CC_SUCCESS) << lastErrorMessage();
  ASSERT_EQ(client->trySet("empty", {}), CC_SUCCESS) << lastErrorMessage();
  EXPECT_EQ(client->get("big"), big);
  EXPECT_TRUE(client->get("empty").empty());
  // Overwriting replaces the value.
  client->set("empty", bytes("now set"));
  EXPECT_EQ(text(client->get("empty")), "now set");
  // Over the limits: refused locally, the connection stays usable.
  EXPECT_EQ(client->trySet(std::string(store::kMaxKeyBytes + 1, 'k'), {}), CC_INVALID_ARGUMENT);
  EXPECT_EQ(client->trySet("k", std::vector<char>(store::kMaxValueBytes + 1)), CC_INVALID_ARGUMENT);
  EXPECT_EQ(text(client->get("empty")), "now set");
}

TEST(Store, GetAndWaitBlockUntilALaterSet) {
  RootAddress root = startLoopbackStore();
  auto reader = join(root, 0, 2);
  auto writer = join(root, 1, 2);
  ASSERT_NE(reader, nullptr);
  ASSERT_NE(writer, nullptr);
  std::atomic<bool> written{false};
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(50));
    written = true;
    writer->set("late", bytes("worth the wait"));
    std::this_thread::sleep_for(milliseconds(20));
    writer->set("b", bytes("2"));
    writer->set("a", bytes("1"));
  });
  std::vector<char> value;
  ASSERT_EQ(reader->tryGet("late", &value), CC_SUCCESS) << lastErrorMessage();
  EXPECT_TRUE(written.load());
  EXPECT_EQ(text(value), "worth the wait");
  reader->wait({"a", "b", "late"});
  EXPECT_EQ(text(reader->get("a")), "1");
  late.join();
}

TEST(Store, GetTimesOutAtTheStoreNamingWhatIsMissingAndTheConnectionSurvives) {
  RootAddress root = startLoopbackStore();
  auto other = join(root, 1, 3);
  std::unique_ptr<StoreClient> client;
  ASSERT_EQ(StoreClient::connect(root, 0, 3, 200, &client), CC_SUCCESS) << lastErrorMessage();
  auto start = Clock::now();
  std::vector<char> value;
  EXPECT_EQ(client->tryGet("never", &value), CC_TIMEOUT);
  EXPECT_LT(millisecondsSince(start), 5000);
  EXPECT_GE(millisecondsSince(start), 150);
  EXPECT_NE(lastErrorMessage().find("key 'never'"), std::string::npos) << lastErrorMessage();
  EXPECT_NE(lastErrorMessage().find("ranks that never joined the store: 2 (of 3)"), std::string::npos)
      << lastErrorMessage();
  // The store answered the timeout: the connection still serves.
  EXPECT_EQ(client->trySet("x", bytes("after")), CC_SUCCESS) << lastErrorMessage();
  // The Gloo interface reports a timeout through an exception.
  EXPECT_THROW(client->get("never"), gloo::IoException);
  EXPECT_THROW(client->wait({"never"}), gloo::IoException);
  // The other rank is unaffected.
  EXPECT_NO_THROW(other->set("x", bytes("fine")));
}

TEST(Store, ABarrierThatTimesOutNamesTheRanksThatDidNotCome) {
  RootAddress root = startLoopbackStore();
  auto late = join(root, 1, 4, 300);
  std::unique_ptr<StoreClient> client;
  ASSERT_EQ(StoreClient::connect(root, 0, 4, 300, &client), CC_SUCCESS) << lastErrorMessage();
  // Rank 1 joined but never reaches the barrier; ranks 2 and 3 never joined.
  EXPECT_EQ(client->barrier("gate"), CC_TIMEOUT);
  EXPECT_NE(lastErrorMessage().find("ranks that did not reach it: 1, 2, 3"), std::string::npos)
      << lastErrorMessage();
  EXPECT_NE(lastErrorMessage().find("never joined the bootstrap store: 2, 3"), std::string::npos)
      << lastErrorMessage();
}

TEST(Store, WaitWithGlooTimeoutExpires) {
  RootAddress root = startLoopbackStore();
  auto client = join(root, 0, 1);
  auto start = Clock::now();
  try {
    client->wait({"never"}, milliseconds(100));
    ADD_FAILURE() << "wait returned without the key";
  } catch (const gloo::IoException& error) {
    EXPECT_NE(std::string(error.what()).find("CC_TIMEOUT"), std::string::npos) << error.what();
  }
  EXPECT_LT(millisecondsSince(start), 5000);
}

TEST(Store, AddOnANonIntegerIsRefusedAndTheConnectionSurvives) {
  RootAddress root = startLoopbackStore();
  auto client = join(root, 0, 1);
  client->set("word", bytes("hello"));
  int64_t sum = 0;
  EXPECT_EQ(client->tryAdd("word", 1, &sum), CC_INVALID_USAGE);
  EXPECT_NE(lastErrorMessage().find("not a decimal integer"), std::string::npos)
      << lastErrorMessage();
  client->set("n", bytes("-5"));
  ASSERT_EQ(client->tryAdd("n", 7, &sum), CC_SUCCESS) << lastErrorMessage();
  EXPECT_EQ(sum, 2);
  client->set("max", bytes("9223372036854775807"));
  EXPECT_EQ(client->tryAdd("max", 1, &sum), CC_INVALID_USAGE);
  EXPECT_NE(lastErrorMessage().find("overflows"), std::string::npos) << lastErrorMessage();
  ASSERT_EQ(client->tryAdd("n", 1, &sum), CC_SUCCESS);
  EXPECT_EQ(sum, 3);
}

// ---------------------------------------------------------------------------
// Join checks
// ---------------------------------------------------------------------------

TEST(Join, RefusesMismatchesWithTheStoresReason) {
  RootAddress root = startLoopbackStore();
  auto rank0 = join(root, 0, 3);
  ASSERT_NE(rank0, nullptr);
  std::string message;

  EXPECT_EQ(joinFails(root, 1, 4, &message), CC_INVALID_USAGE);
  EXPECT_NE(message.find("nranks mismatch: rank 1 says 4 ranks but rank 0 (the first to join) said 3"),
            std::string::npos)
      << message;

  EXPECT_EQ(joinFails(root, 0, 3, &message), CC_INVALID_USAGE);
  EXPECT_NE(message.find("rank 0 joined twice"), std::string::npos) << message;

  EXPECT_EQ(joinFails(root, 3, 3, &message), CC_INVALID_USAGE);
  EXPECT_NE(message.find("rank 3 is outside [0, 3)"), std::string::npos) << message;
  EXPECT_EQ(joinFails(root, -1, 3, &message), CC_INVALID_USAGE);
  EXPECT_NE(message.find("rank -1 is outside [0, 3)"), std::string::npos) << message;

  RootAddress stranger = root;
  stranger.nonce ^= 1;
  EXPECT_EQ(joinFails(stranger, 1, 3, &message), CC_INVALID_USAGE);
  EXPECT_NE(message.find("this store serves another communicator"), std::string::npos) << message;

  // The refused joins took no slot: ranks 1 and 2 still join, and rank 2's
  // second attempt is a duplicate.
  auto rank1 = join(root, 1, 3);
  auto rank2 = join(root, 2, 3);
  EXPECT_NE(rank1, nullptr);
  EXPECT_NE(rank2, nullptr);
  EXPECT_EQ(joinFails(root, 2, 3, &message), CC_INVALID_USAGE);
  EXPECT_NE(message.find("rank 2 joined twice"), std::string::npos) << message;
}

TEST(Join, RejectsBadArgumentsLocally) {
  RootAddress root = loopbackRoot(AF_INET, 1, 1);
  std::unique_ptr<StoreClient> client;
  EXPECT_EQ(StoreClient::connect(root, 0, 1, 0, &client), CC_INVALID_ARGUMENT);
  EXPECT_EQ(StoreClient::connect(root, 0, 0, 100, &client), CC_INVALID_ARGUMENT);
  EXPECT_EQ(StoreClient::connect(RootAddress{}, 0, 1, 100, &client), CC_INVALID_ARGUMENT);
  EXPECT_EQ(serveStore(RootAddress{}), CC_INVALID_ARGUMENT);
}

TEST(Join, UnreachableRootTimesOutNamingTheAddress) {
  uint16_t port = freeLoopbackPort();
  ASSERT_NE(port, 0);
  RootAddress root = loopbackRoot(AF_INET, port, 42);
  std::unique_ptr<StoreClient> client;
  auto start = Clock::now();
  EXPECT_EQ(StoreClient::connect(root, 0, 2, 500, &client), CC_TIMEOUT);
  long long elapsed = millisecondsSince(start);
  EXPECT_GE(elapsed, 450);
  EXPECT_LT(elapsed, 5000);
  std::string expected = "could not reach the bootstrap root 127.0.0.1:" + std::to_string(port) +
                         " within 500 ms (last error: Connection refused)";
  EXPECT_NE(lastErrorMessage().find(expected), std::string::npos) << lastErrorMessage();
}

TEST(Join, ConnectRetriesUntilTheRootListens) {
  uint16_t port = freeLoopbackPort();
  ASSERT_NE(port, 0);
  RootAddress root = loopbackRoot(AF_INET, port, 77);
  std::thread lateRoot([&] {
    std::this_thread::sleep_for(milliseconds(100));
    EXPECT_EQ(serveStore(root), CC_SUCCESS) << lastErrorMessage();
  });
  auto client = join(root, 0, 1);
  lateRoot.join();
  ASSERT_NE(client, nullptr);
  client->set("k", bytes("v"));
}

// ---------------------------------------------------------------------------
// Server robustness and lifetime
// ---------------------------------------------------------------------------

TEST(Server, MalformedClientsAreDroppedAndOthersContinue) {
  RootAddress root = startLoopbackStore();
  auto good = join(root, 0, 2);
  ASSERT_NE(good, nullptr);
  good->set("before", bytes("1"));

  {  // Plain text: its first four bytes announce a ~1.8 GB message.
    RawClient raw(root);
    raw.send(bytes("hello store, how are you?\n"));
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // A length over the cap.
    RawClient raw(root);
    raw.send({'\xff', '\xff', '\xff', '\x7f'});
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // An unknown operation.
    RawClient raw(root);
    store::FrameWriter frame;
    frame.u8(0x7f).u32(0);
    raw.send(frame.finish());
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // An empty message.
    RawClient raw(root);
    raw.send({0, 0, 0, 0});
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // A JOIN without our protocol magic.
    RawClient raw(root);
    store::FrameWriter frame;
    frame.u8(static_cast<uint8_t>(store::Op::Join)).u32(0xdeadbeef).u16(1).u64(root.nonce).i32(1).i32(2);
    raw.send(frame.finish());
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // Requests before JOIN are answered with an error, then closed.
    RawClient raw(root);
    store::FrameWriter frame;
    frame.u8(static_cast<uint8_t>(store::Op::Get)).str("before");
    raw.send(frame.finish());
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // A SET whose key length runs past the message.
    RawClient raw(root);
    store::FrameWriter frame;
    frame.u8(static_cast<uint8_t>(store::Op::Set)).u32(1000).raw("abc", 3);
    raw.send(frame.finish());
    EXPECT_TRUE(raw.closedByPeer());
  }
  {  // Half a message, then gone.
    RawClient raw(root);
    raw.send({16, 0, 0, 0, 2, 1});
  }
  // A joined rank that then breaks the protocol is dropped too (rank 1).
  {
    RawClient raw(root);
    store::FrameWriter joinFrame;
    joinFrame.u8(static_cast<uint8_t>(store::Op::Join))
        .u32(store::kProtocolMagic)
        .u16(store::kProtocolVersion)
        .u64(root.nonce)
        .raw(reinterpret_cast<const char*>(root.secret), sizeof(root.secret))
        .i32(1)
        .i32(2);
    raw.send(joinFrame.finish());
    store::FrameWriter oversizedKey;
    oversizedKey.u8(static_cast<uint8_t>(store::Op::Get)).str(std::string(store::kMaxKeyBytes + 1, 'k'));
    raw.send(oversizedKey.finish());
    EXPECT_TRUE(raw.closedByPeer());
  }
  // The well-behaved rank never noticed.
  EXPECT_EQ(text(good->get("before")), "1");
  good->set("after", bytes("2"));
  EXPECT_EQ(text(good->get("after")), "2");
}

TEST(Server, StopsOnceEveryRankJoinedAndLeft) {
  RootAddress root = startLoopbackStore();
  {
    auto rank0 = join(root, 0, 2);
    rank0->set("k", bytes("v"));
  }
  // Rank 0 left before rank 1 came: the store must still hold its key.
  {
    auto rank1 = join(root, 1, 2);
    ASSERT_NE(rank1, nullptr);
    EXPECT_EQ(text(rank1->get("k")), "v");
  }
  std::string message = waitUntilStoreStops(root);
  EXPECT_NE(message.find("could not reach the bootstrap root"), std::string::npos) << message;
}

TEST(Server, ForkedChildLeavesTheParentsStoreAlone) {
  RootAddress root = startLoopbackStore();
  int toChild[2];
  ASSERT_EQ(pipe(toChild), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    MARK_FORKED_CHILD();
    close(toChild[1]);
    // Hold the inherited memory until the parent is done, then exit through
    // the atexit handlers, which must not touch the parent's store thread.
    char ignored;
    pollfd pfd{toChild[0], POLLIN, 0};
    poll(&pfd, 1, 10000);
    ssize_t got = read(toChild[0], &ignored, 1);
    (void)got;
    std::exit(0);
  }
  close(toChild[0]);
  {
    auto rank0 = join(root, 0, 1);
    ASSERT_NE(rank0, nullptr);
    rank0->set("k", bytes("parent"));
    EXPECT_EQ(text(rank0->get("k")), "parent");
  }
  // Had the child kept its copy of the listening socket, connections would
  // be accepted by the kernel and hang instead of being refused.
  std::string message = waitUntilStoreStops(root);
  EXPECT_NE(message.find("could not reach the bootstrap root"), std::string::npos) << message;

  close(toChild[1]);
  int status = -1;
  auto start = Clock::now();
  while (waitpid(child, &status, WNOHANG) == 0) {
    if (millisecondsSince(start) > 10000) {
      kill(child, SIGKILL);
      waitpid(child, &status, 0);
      break;
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_TRUE(WIFEXITED(status)) << "child did not exit (status " << status << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Runs in a fresh process (see below): a store with a rank still connected
// and another never coming, which only the exit handler can stop.
[[noreturn]] void exitWithAStoreServing() {
  alarm(5);  // a hanging exit kills the process instead of the test run
  RootAddress root = startLoopbackStore();
  std::unique_ptr<StoreClient> client;
  if (StoreClient::connect(root, 0, 2, kTimeoutMs, &client) != CC_SUCCESS) std::_Exit(2);
  // Reachable from a static (so no leak report), open while exit() runs.
  static std::unique_ptr<StoreClient> openAtExit;
  openAtExit = std::move(client);
  std::exit(0);
}

TEST(Server, ProcessExitStopsStoresStillServing) {
  // "threadsafe" re-executes the binary for the statement: a child forked
  // from this multi-threaded process could not safely start the store thread.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto start = Clock::now();
  EXPECT_EXIT(exitWithAStoreServing(), ::testing::ExitedWithCode(0), "");
  EXPECT_LT(millisecondsSince(start), 5000);
}

// ---------------------------------------------------------------------------
// Gloo through our store
// ---------------------------------------------------------------------------

TEST(Gloo, ConnectFullMeshAndExchangeBytes) {
  constexpr int kRanks = 3;
  constexpr int kSlot = 7;
  RootAddress root = startLoopbackStore();
  std::mutex failuresMutex;
  std::vector<std::string> failures;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kRanks; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        auto client = join(root, rank, kRanks);
        if (client == nullptr) throw std::runtime_error("join failed");
        gloo::transport::tcp::attr attr;
        attr.hostname = "127.0.0.1";
        auto device = gloo::transport::tcp::CreateDevice(attr);
        auto context = std::make_shared<gloo::rendezvous::Context>(rank, kRanks);
        context->setTimeout(milliseconds(kTimeoutMs));
        context->connectFullMesh(*client, device);

        int next = (rank + 1) % kRanks;
        int prev = (rank + kRanks - 1) % kRanks;
        std::array<char, 32> out{};
        std::array<char, 32> in{};
        std::string message = "hello from rank " + std::to_string(rank);
        std::memcpy(out.data(), message.data(), message.size());
        auto recvBuffer = context->getPair(prev)->createRecvBuffer(kSlot, in.data(), in.size());
        auto sendBuffer = context->getPair(next)->createSendBuffer(kSlot, out.data(), out.size());
        // Every receive buffer exists before anyone sends into it.
        if (client->barrier("gloo-buffers") != CC_SUCCESS) throw std::runtime_error(lastErrorMessage());
        sendBuffer->send();
        recvBuffer->waitRecv();
        sendBuffer->waitSend();
        std::string expected = "hello from rank " + std::to_string(prev);
        if (std::string(in.data()) != expected) {
          throw std::runtime_error("rank " + std::to_string(rank) + " received '" +
                                   std::string(in.data()) + "'");
        }
        if (client->barrier("gloo-done") != CC_SUCCESS) throw std::runtime_error(lastErrorMessage());
      } catch (const std::exception& error) {
        std::lock_guard<std::mutex> lock(failuresMutex);
        failures.push_back("rank " + std::to_string(rank) + ": " + error.what());
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (const auto& failure : failures) ADD_FAILURE() << failure;
}

}  // namespace
}  // namespace cc
