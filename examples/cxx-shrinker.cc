// SPDX-License-Identifier: MIT
/*
 * shrink-example-cxx: OSv's C++ memory::shrinker, from <osv/shrinker.h>.
 *
 * Two subclasses in one program:
 *   cxx-store   overrides request_memory() (OSv's real method): a store of
 *               64 KiB chunks in a std::vector<std::unique_ptr<...>>; soft
 *               requests free up to a quarter of it, hard ones what is asked.
 *   cxx-legacy  overrides only release_memory() (the name OSv's wiki uses):
 *               the base class forwards to it. Frees what is asked.
 * Both run on libshrink's thread, called by the default client, whose socket
 * is $SHRINKD_SOCKET or else the system socket.
 *
 * Standard output gets one machine-readable line per event, flushed at once:
 *   READY t_us=T app=cxx pid=P held=B
 *   EVENT t_us=T app=cxx pid=P kind=shrink shrinker=NAME via=request_memory|release_memory
 *         level=soft|hard target=B freed=B held=B
 *   EXIT t_us=T app=cxx pid=P held=B
 * t_us is CLOCK_REALTIME in microseconds; B are bytes.
 */
#include <osv/shrinker.h>

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr size_t chunk_bytes = 64 * 1024;
using chunk = std::array<unsigned char, chunk_bytes>;

uint64_t realtime_us() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000u + uint64_t(ts.tv_nsec) / 1000u;
}

void print_shrink(const std::string &name, const char *via, bool hard, size_t target,
                  size_t freed, size_t held) {
  std::printf("EVENT t_us=%" PRIu64 " app=cxx pid=%ld kind=shrink shrinker=%s via=%s"
              " level=%s target=%zu freed=%zu held=%zu\n",
              realtime_us(), long(getpid()), name.c_str(), via, hard ? "hard" : "soft",
              target, freed, held);
  std::fflush(stdout);
}

// A store of chunks; its callback runs on libshrink's thread while main()
// fills it, hence the mutex.
class chunk_store {
public:
  void fill(size_t bytes) {
    std::lock_guard<std::mutex> guard(mutex_);
    for (size_t have = 0; have < bytes; have += chunk_bytes) {
      auto c = std::make_unique<chunk>();
      std::memset(c->data(), 0x5a, c->size()); // touch every page: real RSS
      chunks_.push_back(std::move(c));
    }
  }
  // Frees whole chunks, newest first, until @bytes are freed.
  size_t free_up_to(size_t bytes) {
    std::lock_guard<std::mutex> guard(mutex_);
    size_t freed = 0;
    while (freed < bytes && !chunks_.empty()) {
      chunks_.pop_back();
      freed += chunk_bytes;
    }
    chunks_.shrink_to_fit();
    return freed;
  }
  size_t held() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return chunks_.size() * chunk_bytes;
  }

private:
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<chunk>> chunks_;
};

// OSv's way: override request_memory().
class store_shrinker : public memory::shrinker {
public:
  store_shrinker() : shrinker("cxx-store") {}
  // Our callback uses store_: unregister before it is destroyed.
  ~store_shrinker() override { unregister_shrinker(); }

  void fill(size_t bytes) {
    store_.fill(bytes);
    set_estimate(store_.held());
  }
  size_t held() const { return store_.held(); }

  size_t request_memory(size_t target, bool hard) override {
    size_t budget = target;
    if (!hard && budget > store_.held() / 4)
      budget = store_.held() / 4; // soft: only what is cheap
    size_t freed = store_.free_up_to(budget);
    set_estimate(store_.held());
    print_shrink(name(), "request_memory", hard, target, freed, store_.held());
    return freed;
  }

private:
  chunk_store store_;
};

// The wiki's way: override release_memory() only.
class legacy_shrinker : public memory::shrinker {
public:
  legacy_shrinker() : shrinker("cxx-legacy") {}
  ~legacy_shrinker() override { unregister_shrinker(); }

  void fill(size_t bytes) {
    store_.fill(bytes);
    set_estimate(store_.held());
  }
  size_t held() const { return store_.held(); }

  size_t release_memory(size_t target, bool hard) override {
    size_t freed = store_.free_up_to(target);
    set_estimate(store_.held());
    print_shrink(name(), "release_memory", hard, target, freed, store_.held());
    return freed;
  }

private:
  chunk_store store_;
};

void usage(FILE *out, const char *argv0) {
  std::fprintf(out,
               "Usage: %s [OPTION]...\n"
               "Two memory::shrinker subclasses: one overriding request_memory(), one\n"
               "overriding only release_memory(). The socket comes from $SHRINKD_SOCKET.\n"
               "\n"
               "  --mib N          hold N MiB in the request_memory() store (default 128)\n"
               "  --legacy-mib N   hold N MiB in the release_memory() store (default 16)\n"
               "  --help           show this help\n",
               argv0);
}

bool parse_mib(const char *s, unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = std::strtoul(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v > 1024ul * 1024)
    return false;
  *out = v;
  return true;
}

} // namespace

int main(int argc, char **argv) {
  static const option options[] = {
      {"mib", required_argument, nullptr, 'm'},
      {"legacy-mib", required_argument, nullptr, 'l'},
      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0},
  };
  unsigned long mib = 128, legacy_mib = 16;
  int opt;
  while ((opt = getopt_long(argc, argv, "", options, nullptr)) != -1) {
    switch (opt) {
    case 'm':
    case 'l':
      if (!parse_mib(optarg, opt == 'm' ? &mib : &legacy_mib)) {
        std::fprintf(stderr, "%s: %s: expected a number of MiB, not '%s'\n", argv[0],
                     opt == 'm' ? "--mib" : "--legacy-mib", optarg);
        return 2;
      }
      break;
    case 'h':
      usage(stdout, argv[0]);
      return 0;
    default:
      usage(stderr, argv[0]);
      return 2;
    }
  }
  if (optind < argc) {
    std::fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0], argv[optind]);
    return 2;
  }

  // Blocked before libshrink's thread exists, so that sigwait() gets them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  {
    store_shrinker store;
    legacy_shrinker legacy;
    if (!store.registered() || !legacy.registered()) {
      std::fprintf(stderr, "%s: cannot register shrinkers (set SHRINK_DEBUG=1 for why)\n",
                   argv[0]);
      return 1;
    }
    store.fill(size_t(mib) * 1024 * 1024);
    legacy.fill(size_t(legacy_mib) * 1024 * 1024);
    std::printf("READY t_us=%" PRIu64 " app=cxx pid=%ld held=%zu\n", realtime_us(),
                long(getpid()), store.held() + legacy.held());
    std::fflush(stdout);

    int sig;
    while (sigwait(&sigs, &sig) != 0) {
    }
    std::printf("EXIT t_us=%" PRIu64 " app=cxx pid=%ld held=%zu\n", realtime_us(),
                long(getpid()), store.held() + legacy.held());
    std::fflush(stdout);
  } // the destructors unregister, waiting for a running callback
  return 0;
}
