// Stands in for a Gloo header that Debian's libgloo-dev leaves out, which
// gloo/transport/tcp/{pair,context}.h include. gloo_transport.cc includes
// tcp/pair.h for one thing only: to wake a tcp pair's waits on abort
// (Pair::signalExceptionExternal, compiled in libgloo). It never builds,
// copies or reads a Pair or an Op, so these two smart pointers need only be
// declared the way the headers use them; they hold what Gloo's hold (a
// shared or weak pointer) all the same. Reached through -idirafter, so a
// libgloo-dev that ships the real header wins.
#pragma once

#include <memory>

namespace gloo {

template <typename T>
class NonOwningPtr {
 public:
  NonOwningPtr() = default;
  explicit NonOwningPtr(std::shared_ptr<T> ptr) : ptr_(std::move(ptr)) {}
  T* get() const { return ptr_.get(); }
  T* operator->() const { return ptr_.get(); }
  explicit operator bool() const { return static_cast<bool>(ptr_); }

 private:
  std::shared_ptr<T> ptr_;
};

template <typename T>
class WeakNonOwningPtr {
 public:
  WeakNonOwningPtr() = default;
  explicit WeakNonOwningPtr(const std::shared_ptr<T>& ptr) : ptr_(ptr) {}
  NonOwningPtr<T> lock() const { return NonOwningPtr<T>(ptr_.lock()); }
  explicit operator bool() const { return !ptr_.expired(); }

 private:
  std::weak_ptr<T> ptr_;
};

}  // namespace gloo
