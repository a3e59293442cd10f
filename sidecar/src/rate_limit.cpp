#include "rate_limit.h"

#include <algorithm>

namespace rooms {

rate_limiter::verdict rate_limiter::take(const rate_limit_config& cfg,
                                         uint64_t now_ms) {
    if (cfg.rate <= 0) {
        return verdict::ok;
    }
    double cap = std::max(cfg.burst, 1.0) * 1000;
    uint64_t elapsed = now_ms > last_ms_ ? now_ms - last_ms_ : 0;
    if (milli_ == unfilled) {
        milli_ = static_cast<uint32_t>(cap);
    } else if (elapsed > 0) {
        double refilled = milli_ + cfg.rate * static_cast<double>(elapsed);
        milli_ = static_cast<uint32_t>(std::min(cap, refilled));
    }
    last_ms_ = std::max(last_ms_, now_ms);
    calm_ms_ = static_cast<uint16_t>(
        std::min<uint64_t>(1000, calm_ms_ + elapsed));

    if (milli_ >= 1000) {
        milli_ -= 1000;
        return verdict::ok;
    }

    if (refusals_ > 0 && calm_ms_ >= 1000) {
        refusals_ = 0;
    }
    calm_ms_ = 0;
    // this refusal is one more than kick_after
    if (cfg.kick_after != 0 && refusals_ >= cfg.kick_after) {
        return verdict::kick;
    }
    if (refusals_ < UINT16_MAX) {
        refusals_++;
    }
    return verdict::limited;
}

}  // namespace rooms
