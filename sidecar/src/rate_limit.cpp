#include "rate_limit.h"

#include <algorithm>

namespace rooms {

rate_limiter::verdict rate_limiter::take(const rate_limit_config& cfg,
                                         uint64_t now_ms) {
    if (cfg.rate <= 0) {
        return verdict::ok;
    }
    double burst = std::max(cfg.burst, 1.0);
    if (tokens_ < 0) {
        tokens_ = burst;
    } else if (now_ms > last_ms_) {
        tokens_ = std::min(burst, tokens_ + cfg.rate *
                                                static_cast<double>(
                                                    now_ms - last_ms_) /
                                                1000.0);
    }
    last_ms_ = std::max(last_ms_, now_ms);

    if (tokens_ >= 1) {
        tokens_ -= 1;
        return verdict::ok;
    }

    if (refusals_ > 0 && now_ms >= last_refusal_ms_ + 1000) {
        refusals_ = 0;
    }
    refusals_++;
    last_refusal_ms_ = now_ms;
    if (cfg.kick_after != 0 && refusals_ > cfg.kick_after) {
        return verdict::kick;
    }
    return verdict::limited;
}

}  // namespace rooms
