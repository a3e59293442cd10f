#pragma once

// Coalescing of `state` publications per room (docs/redis.md "Presence
// and state").  Pure logic (no libuv, no Redis): the caller publishes
// what the results ask for and runs one timer for next_due().
//
// A presence change publishes at once if this server published no state
// for the room within the room's interval (leading edge); otherwise one
// publication is scheduled for the end of the interval (trailing edge),
// and further changes until then ride on it.  So a burst of changes in a
// room costs at most one state per interval, and every change is
// reflected in a state published after it.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "string_map.h"

namespace rooms {

// A room's interval: players x ms_per_player, at most max_ms.  0 (no
// throttling) when either setting is 0.
uint64_t state_interval_ms(size_t players, uint64_t ms_per_player,
                           uint64_t max_ms);

class state_throttle {
public:
    // A presence change in the room at `now` (ms); `interval` is the
    // room's current interval.  true: publish now (the room counts as
    // published at `now`, a scheduled publication is cancelled); false: a
    // publication is scheduled (or already was) for the end of the
    // interval.
    bool changed(std::string_view room, uint64_t now, uint64_t interval);

    // The rooms whose scheduled publication is due at `now`, earliest
    // first; they count as published at `now`.
    std::vector<std::string> take_due(uint64_t now);

    // When the earliest scheduled publication is due, if any.
    std::optional<uint64_t> next_due() const;

    // The player count of the room's last published state (0: unknown).
    size_t players(std::string_view room) const;
    void set_players(std::string_view room, size_t n);

    // Forgets rooms with nothing scheduled whose last publication is at
    // least `idle` ms old.
    void prune(uint64_t now, uint64_t idle);

    bool scheduled(std::string_view room) const;
    size_t size() const { return rooms_.size(); }

private:
    struct entry {
        uint64_t last = 0;     // last publication (leading or trailing)
        bool published = false;
        bool dirty = false;    // a trailing publication is scheduled
        uint64_t due = 0;      // when, if dirty
        size_t players = 0;
    };

    using entry_map = string_map<entry>;

    entry& get(std::string_view room);

    entry_map rooms_;
    std::set<std::pair<uint64_t, std::string>> queue_;  // (due, room)
};

}  // namespace rooms
