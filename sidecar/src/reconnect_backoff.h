#pragma once

// When a Redis connection tries again (docs/sidecar.md): the delay starts
// at backoff_min_ms and doubles up to backoff_max_ms, each one spread
// +-20% so that many sidecars do not reconnect in lockstep.  And one
// warning per outage: the first failed connect is logged as a warning,
// the retries at debug level until a connect works.  Shared by
// redis_connection and cluster_subscriber.

#include <cstdint>

namespace rooms {

class reconnect_backoff {
public:
    reconnect_backoff(uint64_t min_ms, uint64_t max_ms)
        : min_ms_(min_ms), max_ms_(max_ms), next_ms_(min_ms) {}

    // The delay before the next attempt; the one after is doubled.
    uint64_t next_delay();

    // A connection works: the next delay is the minimum again, and the
    // next failure is the first of an outage.
    void connected() {
        next_ms_ = min_ms_;
        failures_ = 0;
    }
    // Left on purpose (the master moved): reconnect after the minimum.
    void restart() { next_ms_ = min_ms_; }
    // A connection that worked was lost (and said so): its reconnects
    // are retries.
    void lost() { failures_ = 1; }

    // A connect failed: a warning for the first of an outage, debug
    // after; `what` says what failed ("redis command: connect to
    // 127.0.0.1:6379").
    void log_failure(const char* what, const char* why);

private:
    uint64_t min_ms_;
    uint64_t max_ms_;
    uint64_t next_ms_;
    unsigned failures_ = 0;
};

}  // namespace rooms
