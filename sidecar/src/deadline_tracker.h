#pragma once

// When a Redis connection stops answering (docs/redis.md "Redis
// outages").  Pure logic (no libuv, no hiredis): redis_connection feeds it
// the loop's clock in ms and acts on check().
//
// Redis answers the requests of one connection in the order they were
// sent, so the send times of the outstanding ones form a queue: push() at
// every send, pop() at every reply, and the oldest one is the one Redis
// owes first.  The connection is hung once that one has waited for the
// timeout.  A connection with nothing outstanding proves nothing, so it
// is probed (TIME, or a barrier SUBSCRIBE) every timeout / 4.

#include <cstddef>
#include <cstdint>
#include <deque>

namespace rooms {

class deadline_tracker {
public:
    void push(uint64_t now) { sent_.push_back(now); }

    // The oldest outstanding request was answered.  False (and nothing
    // changes) when none was outstanding.
    bool pop();

    void clear() { sent_.clear(); }
    bool empty() const { return sent_.empty(); }
    size_t size() const { return sent_.size(); }

    // When the oldest outstanding request was sent; 0 when none is.
    uint64_t oldest_sent() const { return sent_.empty() ? 0 : sent_.front(); }

    // How long the oldest outstanding request has waited (0: none is;
    // a clock that went backwards counts as 0).
    uint64_t oldest_age(uint64_t now) const;

    enum class action {
        wait,   // check again in `next_ms`
        probe,  // nothing outstanding: send a probe, check again in next_ms
        hung,   // the oldest request waited `timeout`: give up the connection
    };

    struct verdict {
        action what;
        uint64_t next_ms;  // when to check again (wait, probe)
    };

    // What to do at `now`.  Checks come at least every timeout / 4 (the
    // probe period) and exactly when the oldest request's time is up, so
    // a hang is found at most timeout / 4 after the timeout.
    verdict check(uint64_t now, uint64_t timeout) const;

    static uint64_t probe_period(uint64_t timeout) {
        return timeout / 4 > 0 ? timeout / 4 : 1;
    }

private:
    std::deque<uint64_t> sent_;
};

}  // namespace rooms
