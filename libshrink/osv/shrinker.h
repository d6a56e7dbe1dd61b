// SPDX-License-Identifier: MIT
/*
 * <osv/shrinker.h>: OSv's memory::shrinker for C++ programs on Linux.
 *
 * Header-only, on top of <shrink.h>: the C API stays libshrink's only ABI.
 * Every shrinker registers with the process-wide default client (see
 * shrink_client_get_default()), so its callbacks run on that client's one
 * thread, never concurrently with each other.
 *
 *   class cache_shrinker : public memory::shrinker {
 *   public:
 *     cache_shrinker() : shrinker("cache") {}
 *     ~cache_shrinker() override { unregister_shrinker(); }
 *     size_t request_memory(size_t target, bool hard) override {
 *       return hard ? cache.drop(target) : cache.drop_cold(target);
 *     }
 *   };
 *
 * OSv declares request_memory() pure; OSv's wiki calls the method
 * release_memory(). Here neither is pure and each forwards to the other, so
 * a subclass overriding either one works; one overriding neither frees
 * nothing (0) instead of recursing.
 *
 * Lifetime. The constructor registers: the library thread may call the
 * shrinker before the subclass's constructor has finished (it then reaches
 * this base, which returns 0). The base destructor unregisters and waits for
 * a running callback, but by then the subclass's members are gone: a
 * subclass whose callback uses its own members must call
 * unregister_shrinker() first thing in its destructor, as above.
 */
#ifndef SHRINK_OSV_SHRINKER_H
#define SHRINK_OSV_SHRINKER_H

#include <shrink.h>

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <utility>

namespace memory {

class shrinker {
public:
  // Registers with the default client under @name (shortened to 63 bytes).
  // Never throws on a registration failure: registered() tells.
  explicit shrinker(std::string name);
  // Unregisters, waiting for a running callback (see Lifetime above).
  virtual ~shrinker() { unregister_shrinker(); }

  shrinker(const shrinker &) = delete;
  shrinker &operator=(const shrinker &) = delete;

  // Free about @target bytes and return how many were freed. @hard false:
  // pressure is building, free what is cheap, may defer; true: free now.
  // Runs on the library's thread. Override one of the two.
  virtual size_t request_memory(size_t target, bool hard);
  virtual size_t release_memory(size_t target, bool hard);

  const std::string &name() const { return name_; }
  bool should_shrink(ssize_t target) const { return enabled_.load() && target > 0; }

  // A deactivated shrinker is not called (its callback returns 0 at once)
  // and tells the agent it has nothing to give (estimate 0). Both are cheap,
  // never wait, and may be called from the callback itself.
  void deactivate_shrinker();
  void activate_shrinker();

  // Extensions beyond OSv.
  // How many bytes could be freed now if asked hard (see
  // shrink_shrinker_set_estimate()); clear_estimate() lets the agent guess.
  void set_estimate(size_t bytes);
  void clear_estimate();
  // Unregisters now and waits until the callback is not running (unless
  // called from the callback itself). Idempotent; the destructor calls it.
  void unregister_shrinker();
  // Whether the constructor's registration succeeded and it still holds.
  bool registered() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return handle_ != nullptr;
  }

private:
  static size_t call(const shrink_request *req, void *self) noexcept;
  void push_estimate_locked();

  // The shrinker whose base method is forwarding on this thread, to stop
  // request_memory() -> release_memory() -> request_memory() -> ...
  static const shrinker *&forwarding() noexcept {
    static thread_local const shrinker *current = nullptr;
    return current;
  }
  struct forward_scope {
    const shrinker *saved;
    explicit forward_scope(const shrinker *s) : saved(forwarding()) { forwarding() = s; }
    ~forward_scope() { forwarding() = saved; }
  };

  std::string name_;
  std::atomic<bool> enabled_{true};
  mutable std::mutex mutex_; // guards the members below
  shrink_client *client_ = nullptr;
  shrink_shrinker *handle_ = nullptr;
  bool has_estimate_ = false;
  size_t estimate_ = 0;
};

inline shrinker::shrinker(std::string name) : name_(std::move(name)) {
  if (shrink_client_get_default(&client_) < 0)
    return;
  // The wire takes 63 bytes; do not cut a UTF-8 character in two.
  std::string wire = name_.empty() ? std::string("shrinker") : name_;
  if (wire.size() > 63) {
    size_t n = 63;
    while (n > 0 && (static_cast<unsigned char>(wire[n]) & 0xC0) == 0x80)
      n--;
    wire.resize(n);
  }
  std::lock_guard<std::mutex> guard(mutex_);
  shrink_shrinker *h = nullptr;
  if (shrink_client_register(client_, wire.c_str(), SHRINK_PRIORITY_DEFAULT, &shrinker::call,
                             this, nullptr, &h) == 0)
    handle_ = h;
}

inline size_t shrinker::request_memory(size_t target, bool hard) {
  if (forwarding() == this)
    return 0; // release_memory() is not overridden either
  forward_scope scope(this);
  return release_memory(target, hard);
}

inline size_t shrinker::release_memory(size_t target, bool hard) {
  if (forwarding() == this)
    return 0; // request_memory() is not overridden either
  forward_scope scope(this);
  return request_memory(target, hard);
}

inline size_t shrinker::call(const shrink_request *req, void *data) noexcept {
  shrinker *self = static_cast<shrinker *>(data);
  if (!self->enabled_.load())
    return 0;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
  // An exception must not unwind through the library's C frames.
  try {
    return self->request_memory(req->target_bytes, req->level == SHRINK_LEVEL_HARD);
  } catch (...) {
    return 0;
  }
#else
  return self->request_memory(req->target_bytes, req->level == SHRINK_LEVEL_HARD);
#endif
}

inline void shrinker::push_estimate_locked() {
  if (!handle_)
    return;
  int r;
  if (!enabled_.load())
    r = shrink_shrinker_set_estimate(handle_, 0);
  else if (has_estimate_)
    r = shrink_shrinker_set_estimate(handle_, estimate_);
  else
    r = shrink_shrinker_clear_estimate(handle_);
  (void)r; // only -EINVAL for a NULL handle, excluded above
}

inline void shrinker::deactivate_shrinker() {
  std::lock_guard<std::mutex> guard(mutex_);
  enabled_.store(false);
  push_estimate_locked();
}

inline void shrinker::activate_shrinker() {
  std::lock_guard<std::mutex> guard(mutex_);
  enabled_.store(true);
  push_estimate_locked();
}

inline void shrinker::set_estimate(size_t bytes) {
  std::lock_guard<std::mutex> guard(mutex_);
  has_estimate_ = true;
  estimate_ = bytes;
  push_estimate_locked();
}

inline void shrinker::clear_estimate() {
  std::lock_guard<std::mutex> guard(mutex_);
  has_estimate_ = false;
  estimate_ = 0;
  push_estimate_locked();
}

inline void shrinker::unregister_shrinker() {
  shrink_shrinker *h;
  {
    std::lock_guard<std::mutex> guard(mutex_);
    h = handle_;
    handle_ = nullptr;
  }
  // Outside the mutex: the running callback may need it (set_estimate()).
  if (h)
    (void)shrink_client_unregister(client_, h);
}

} // namespace memory

#endif // SHRINK_OSV_SHRINKER_H
