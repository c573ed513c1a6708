// What the local transports (host memory and device memory) share: the links
// of one communicator found by (sender, receiver, tag), communicators found by
// their key in a process-wide registry, abort, and the wait on a link with
// the communicator's timeout. A Link has slotBytes, numSlots, a mutex and a
// condition variable `changed`.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "base/error.h"

namespace cc {

template <typename Link>
struct LocalFabric {
  std::mutex mutex;
  std::map<std::tuple<int, int, int>, std::shared_ptr<Link>> links;
  std::atomic<int> abortedBy{-1};  // the rank that aborted, -1 while healthy

  // The link of (sender, receiver, tag): made by make(&link) for whichever
  // end opens it first, checked against the other end's sizes.
  template <typename Make>
  cc_result_t link(int sender, int receiver, int tag, size_t slotBytes, int numSlots, Make make,
                   std::shared_ptr<Link>* out) {
    std::lock_guard<std::mutex> lock(mutex);
    auto& entry = links[std::make_tuple(sender, receiver, tag)];
    if (!entry) CC_CHECK(make(&entry));
    if (entry->slotBytes != slotBytes || entry->numSlots != numSlots) {
      return setError(CC_INVALID_USAGE,
                      "local channel %d->%d tag %d opened with %zu x %d bytes on one side and %zu x %d on the other",
                      sender, receiver, tag, entry->slotBytes, entry->numSlots, slotBytes, numSlots);
    }
    *out = entry;
    return CC_SUCCESS;
  }

  void abort(int rank) {
    std::vector<std::shared_ptr<Link>> all;
    {
      std::lock_guard<std::mutex> lock(mutex);
      int healthy = -1;
      abortedBy.compare_exchange_strong(healthy, rank);
      for (auto& entry : links) all.push_back(entry.second);
    }
    for (auto& link : all) {
      std::lock_guard<std::mutex> lock(link->mutex);
      link->changed.notify_all();
    }
  }
};

// The fabric of the communicator `key`, shared by its ranks in this process.
template <typename Link>
std::shared_ptr<LocalFabric<Link>> joinLocalFabric(uint64_t key) {
  static std::mutex registryMutex;
  static std::map<uint64_t, std::weak_ptr<LocalFabric<Link>>> registry;
  std::lock_guard<std::mutex> lock(registryMutex);
  for (auto it = registry.begin(); it != registry.end();) {
    it = it->second.expired() ? registry.erase(it) : std::next(it);
  }
  auto fabric = registry[key].lock();
  if (!fabric) {
    fabric = std::make_shared<LocalFabric<Link>>();
    registry[key] = fabric;
  }
  return fabric;
}

// Waits on a link until `ready` holds, the fabric is aborted, or the timeout;
// `what` and `peer` name the wait in the message ("... waiting for data from
// rank 3 (local transport)").
template <typename Link, typename Ready>
cc_result_t waitOnLocalLink(LocalFabric<Link>& fabric, Link& link, std::unique_lock<std::mutex>& lock, int timeoutMs,
                            Ready ready, const char* what, int peer, const char* transport) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!ready()) {
    if (fabric.abortedBy.load() >= 0) {
      return setError(CC_REMOTE_ERROR, "communicator aborted by rank %d while %s rank %d", fabric.abortedBy.load(),
                      what, peer);
    }
    if (link.changed.wait_until(lock, deadline) == std::cv_status::timeout && !ready()) {
      return setError(CC_TIMEOUT, "timed out after %d ms %s rank %d (%s)", timeoutMs, what, peer, transport);
    }
  }
  return CC_SUCCESS;
}

}  // namespace cc
