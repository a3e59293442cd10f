#pragma once

// Per-connection rate limit (SPEC 3): a token bucket of `burst` tokens
// refilled at `rate` per second; one message takes one token.  A message
// without a token is refused (`rate_limited`).  Sustained abuse: more
// than `kick_after` refusals with less than a second between any two of
// them, and the connection is to be closed (1008).  Pure logic: the
// caller passes the time in milliseconds.
//
// Every member holds one, so it is 16 bytes: the bucket in thousandths
// of a token (exact integer refills: `rate` per second is `rate`
// thousandths per millisecond), and instead of the time of the last
// refusal the milliseconds since it, counted up to the second that
// forgives it.

#include <cstdint>

namespace rooms {

struct rate_limit_config {
    double rate = 50;        // messages per second; 0 turns the limit off
    double burst = 100;      // bucket size (at most 1000000)
    unsigned kick_after = 100;  // at most 65535; 0: never kick
};

class rate_limiter {
public:
    enum class verdict { ok, limited, kick };

    // A limiter starts with a full bucket.
    explicit rate_limiter(uint64_t now_ms = 0) : last_ms_(now_ms) {}

    verdict take(const rate_limit_config& cfg, uint64_t now_ms);

private:
    static constexpr uint32_t unfilled = UINT32_MAX;  // the first take fills

    uint64_t last_ms_ = 0;
    uint32_t milli_ = unfilled;   // thousandths of a token
    uint16_t refusals_ = 0;       // in a row, each within 1 s of the last
    uint16_t calm_ms_ = 0;        // since the last refusal, up to 1000
};

static_assert(sizeof(rate_limiter) == 16, "one per member: keep it small");

}  // namespace rooms
