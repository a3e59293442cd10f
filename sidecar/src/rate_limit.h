#pragma once

// Per-connection rate limit (SPEC 3): a token bucket of `burst` tokens
// refilled at `rate` per second; one message takes one token.  A message
// without a token is refused (`rate_limited`).  Sustained abuse: more
// than `kick_after` refusals with less than a second between any two of
// them, and the connection is to be closed (1008).  Pure logic: the
// caller passes the time in milliseconds.

#include <cstdint>

namespace rooms {

struct rate_limit_config {
    double rate = 50;        // messages per second; 0 turns the limit off
    double burst = 100;      // bucket size
    unsigned kick_after = 100;
};

class rate_limiter {
public:
    enum class verdict { ok, limited, kick };

    // A limiter starts with a full bucket.
    explicit rate_limiter(uint64_t now_ms = 0) : last_ms_(now_ms) {}

    verdict take(const rate_limit_config& cfg, uint64_t now_ms);

private:
    double tokens_ = -1;     // -1: not yet filled (first take fills it)
    uint64_t last_ms_ = 0;
    uint64_t last_refusal_ms_ = 0;
    unsigned refusals_ = 0;
};

}  // namespace rooms
