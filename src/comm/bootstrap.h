// Bootstrap: the unique id (unique_id.cc) and the rendezvous store served by
// the root (store_client.cc, store_server.cc).
//
// The id carries the root's address, port and a random nonce. Ranks meet in a
// small TCP key-value store (it implements gloo::rendezvous::Store, so Gloo
// connects its full mesh through it). The store checks each joining rank:
// right nonce, rank in range, same nranks as the others, no duplicate rank.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "compressedcoll.h"
#include "transports/rendezvous.h"

namespace cc {

struct RootAddress {
  sockaddr_storage addr{};  // AF_INET or AF_INET6, port included
  socklen_t addrLen = 0;
  uint64_t nonce = 0;  // names the job: a stale id finds another job's store and is told so
  // Proves a joining rank holds the id (or CC_COMM_SECRET): random, never
  // derived from the address (docs/bootstrap.md, "Threat model").
  uint8_t secret[16] = {};
  bool fromEnvironment = false;  // CC_COMM_ID: rank 0 serves the store at init
  std::string str() const;       // "host:port"
};

// cc_get_unique_id: with CC_COMM_ID=host:port, encodes that address (nonce
// derived from the text, identical on every rank). Otherwise picks this host's
// address (CC_SOCKET_IFNAME, else the first interface that is up and not
// loopback, else loopback), starts the store server on an ephemeral port in
// this process and encodes its address with a random nonce.
cc_result_t createUniqueId(cc_unique_id_t* id);
// The id CC_COMM_ID=`address` with CC_COMM_SECRET=`secret` gives
// (cc_get_unique_id_from_address); `secret` null: CC_COMM_SECRET. `source`
// names where the address came from in messages.
cc_result_t uniqueIdFromAddress(const char* address, const char* secret, const char* source, cc_unique_id_t* id);
// Decodes and validates an id (CC_INVALID_ARGUMENT when it was not made by
// cc_get_unique_id).
cc_result_t decodeUniqueId(const cc_unique_id_t& id, RootAddress* root);

// Starts serving the store for `root` in this process (rank 0 under
// CC_COMM_ID). Fails with CC_SYSTEM_ERROR naming the address when it cannot bind.
cc_result_t serveStore(const RootAddress& root);

// One rank's connection to the store: the transports' RendezvousStore. All
// calls time out after timeoutMs. The gloo::rendezvous::Store overrides throw
// gloo::IoException (Gloo expects that); the try* calls return a cc_result_t
// with a message instead.
class StoreClient : public RendezvousStore {
 public:
  // Connects (retrying until the timeout while the root is not yet listening),
  // then joins as `rank` of `nranks`. A wrong nonce, nranks mismatch or a
  // duplicate rank fails with CC_INVALID_USAGE and the store's reason; an
  // unreachable root fails with CC_TIMEOUT naming the address.
  static cc_result_t connect(const RootAddress& root, int rank, int nranks, int timeoutMs,
                             std::unique_ptr<StoreClient>* out);
  ~StoreClient() override;

  // The local address of the connection to the root: the interface that
  // reaches it, which Gloo listens on unless CC_SOCKET_IFNAME says otherwise.
  const sockaddr_storage& localAddress() const { return local_; }
  std::string localAddressString() const;

  // RendezvousStore
  cc_result_t trySet(const std::string& key, const std::vector<char>& value) override;
  cc_result_t tryGet(const std::string& key, std::vector<char>* value) override;
  cc_result_t tryAdd(const std::string& key, int64_t delta, int64_t* result) override;
  cc_result_t barrier(const std::string& name) override;
  std::string localHost() const override { return localAddressString(); }

  // gloo::rendezvous::Store
  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  StoreClient(int fd, int rank, int nranks, int timeoutMs, const sockaddr_storage& local);
  // Sends one request frame and reads its reply before `deadline`. An OK reply
  // leaves its payload in *payload; an error reply is CC_INVALID_USAGE with
  // the store's reason. A transport failure or timeout closes the connection
  // (a late reply would otherwise be taken for the next request's).
  cc_result_t roundTrip(const std::vector<char>& request,
                        std::chrono::steady_clock::time_point deadline, int timeoutMs,
                        const std::string& what, std::string* payload, struct WaitReport* report = nullptr);
  // A GET or WAIT the store answers Timeout for after timeoutMs, saying what
  // is missing (in *report when given).
  cc_result_t waitForKeys(const std::vector<std::string>& keys, int timeoutMs, struct WaitReport* report = nullptr);
  cc_result_t failConnection(cc_result_t code);
  int fd_;
  int rank_;
  int nranks_;
  int timeoutMs_;
  sockaddr_storage local_;
  std::string root_;              // "address:port" of the store, for messages
  std::mutex mutex_;              // one request at a time on the connection
  cc_result_t failure_ = CC_SUCCESS;  // set once the connection was closed by an error
  std::string failureMessage_;
  std::map<std::string, uint64_t> barrierGenerations_;  // barriers of each name passed so far
};

// The store's answer to a GET or WAIT that timed out: the keys still missing
// (the first few) and the ranks that never joined.
struct WaitReport {
  bool received = false;  // the store sent it (else the wait failed otherwise)
  uint32_t missingCount = 0;
  std::vector<std::string> missing;
  int nranks = 0;  // 0: no rank had joined
  uint32_t absentCount = 0;
  std::vector<int> absent;
};

// The IPv4/IPv6 address of a named interface (CC_SOCKET_IFNAME); CC_SYSTEM_ERROR
// listing the interfaces that exist when it has none.
cc_result_t interfaceAddress(const std::string& ifname, sockaddr_storage* addr);
std::string sockaddrToString(const sockaddr_storage& addr, bool withPort);

}  // namespace cc
