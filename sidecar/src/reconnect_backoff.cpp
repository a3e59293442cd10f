#include "reconnect_backoff.h"

#include <uv.h>

#include <algorithm>
#include <random>

#include "log.h"

namespace rooms {

namespace {

std::minstd_rand& jitter_rng() {
    static std::minstd_rand rng(static_cast<unsigned>(uv_hrtime()));
    return rng;
}

}  // namespace

uint64_t reconnect_backoff::next_delay() {
    uint64_t spread = next_ms_ / 5;
    uint64_t delay = next_ms_ - spread +
                     (spread ? jitter_rng()() % (2 * spread + 1) : 0);
    next_ms_ = std::min(next_ms_ * 2, max_ms_);
    return delay;
}

void reconnect_backoff::log_failure(const char* what, const char* why) {
    if (failures_++ == 0) {
        log_warn("%s failed: %s (retrying)", what, why);
    } else {
        log_debug("%s failed: %s (attempt %u)", what, why, failures_);
    }
}

}  // namespace rooms
