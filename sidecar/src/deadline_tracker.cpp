#include "deadline_tracker.h"

#include <algorithm>

namespace rooms {

bool deadline_tracker::pop() {
    if (sent_.empty()) {
        return false;
    }
    sent_.pop_front();
    return true;
}

uint64_t deadline_tracker::oldest_age(uint64_t now) const {
    if (sent_.empty() || now < sent_.front()) {
        return 0;
    }
    return now - sent_.front();
}

deadline_tracker::verdict deadline_tracker::check(uint64_t now,
                                                  uint64_t timeout) const {
    uint64_t period = probe_period(timeout);
    if (sent_.empty()) {
        return {action::probe, period};
    }
    uint64_t age = oldest_age(now);
    if (age >= timeout) {
        return {action::hung, 0};
    }
    return {action::wait, std::min(timeout - age, period)};
}

}  // namespace rooms
