// cc_switchd: the software aggregation switch (docs/switch-protocol.md).
//
//   cc_switchd --listen ADDR:PORT [--slots S] [--loss-up P] [--loss-down P] [--seed N]
//              [--stats-every SEC] [--job-idle SEC] [--coalesce-us US] [--quiet]
//
// Prints "cc_switchd: listening on ADDR:PORT ..." and "ready" on stdout once
// bound; counters on stderr on SIGUSR1, every --stats-every seconds and at
// exit (SIGTERM, SIGINT: a clean exit, status 0).
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/error.h"
#include "switch/daemon.h"

namespace {

[[noreturn]] void usage(const char* message) {
  if (message != nullptr) std::fprintf(stderr, "cc_switchd: %s\n", message);
  std::fprintf(stderr,
               "usage: cc_switchd --listen ADDR:PORT [--slots S] [--loss-up P] [--loss-down P] [--seed N]\n"
               "                  [--stats-every SEC] [--job-idle SEC] [--coalesce-us US] [--quiet]\n"
               "  --listen       address to bind: IPv4:port, [IPv6]:port or host:port (port 0: any free one)\n"
               "  --slots        aggregation slots shared by all jobs (default 512)\n"
               "  --loss-up      percent of DATA packets dropped on arrival (loss injection, default 0)\n"
               "  --loss-down    percent of RESULT/STATUS copies dropped on sending (default 0)\n"
               "  --seed         seed of the loss injection (default 1)\n"
               "  --stats-every  print the counters every SEC seconds (default: on SIGUSR1 and at exit)\n"
               "  --job-idle     end a job that sent nothing for SEC seconds (default 3600)\n"
               "  --coalesce-us  pause after each wake-up's work so that packets gather (default 50; 0: none)\n"
               "  --quiet        no line per job admitted or ended\n"
               "docs/switch-protocol.md describes the protocol and the counters.\n");
  std::exit(2);
}

double number(const char* option, const char* text, double low, double high) {
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(text, &end);
  if (end == text || *end != '\0' || errno != 0 || !(value >= low && value <= high)) {
    std::string message = std::string(option) + ": '" + text + "' is not a number in [" + std::to_string(low) +
                          ", " + std::to_string(high) + "]";
    usage(message.c_str());
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  cc::switchd::Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++i];
    };
    if (arg == "--listen") options.listen = value();
    else if (arg == "--slots") options.slots = static_cast<int>(number("--slots", value(), 1, 1 << 20));
    else if (arg == "--loss-up") options.lossUp = number("--loss-up", value(), 0, 100);
    else if (arg == "--loss-down") options.lossDown = number("--loss-down", value(), 0, 100);
    else if (arg == "--seed") options.seed = static_cast<uint64_t>(number("--seed", value(), 0, 1.8e19));
    else if (arg == "--stats-every") options.statsEvery = number("--stats-every", value(), 0, 1e9);
    else if (arg == "--job-idle") options.jobIdleSeconds = number("--job-idle", value(), 0.001, 1e9);
    else if (arg == "--coalesce-us") options.coalesceMicros = static_cast<int>(number("--coalesce-us", value(), 0, 100000));
    else if (arg == "--quiet") options.quiet = true;
    else if (arg == "-h" || arg == "--help") usage(nullptr);
    else usage(("unknown option " + arg).c_str());
  }
  if (options.listen.empty()) usage("--listen ADDR:PORT is required");

  // Signals arrive through a descriptor in the event loop, never as handlers.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const int signalFd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signalFd < 0) {
    std::fprintf(stderr, "cc_switchd: signalfd: %s\n", std::strerror(errno));
    return 1;
  }

  cc::switchd::Daemon daemon(options);
  if (daemon.start() != CC_SUCCESS) {
    std::fprintf(stderr, "cc_switchd: %s\n", cc::lastErrorMessage().c_str());
    return 1;
  }
  std::printf("cc_switchd: listening on %s (slots %d, loss up %g%%, down %g%%, seed %llu)\nready\n",
              daemon.address().c_str(), options.slots, options.lossUp, options.lossDown,
              static_cast<unsigned long long>(options.seed));
  std::fflush(stdout);
  const cc_result_t result = daemon.run(signalFd);
  std::fprintf(stderr, "cc_switchd: %s\n", daemon.countersLine().c_str());
  if (result != CC_SUCCESS) {
    std::fprintf(stderr, "cc_switchd: %s\n", cc::lastErrorMessage().c_str());
    return 1;
  }
  return 0;
}
