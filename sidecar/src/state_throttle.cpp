#include "state_throttle.h"

#include <algorithm>

namespace rooms {

uint64_t state_interval_ms(size_t players, uint64_t ms_per_player,
                           uint64_t max_ms) {
    if (ms_per_player == 0 || max_ms == 0) {
        return 0;
    }
    if (players >= max_ms / ms_per_player + 1) {
        return max_ms;  // also avoids the overflow of the product
    }
    return std::min<uint64_t>(players * ms_per_player, max_ms);
}

state_throttle::entry& state_throttle::get(std::string_view room) {
    auto it = rooms_.find(room);
    if (it == rooms_.end()) {
        it = rooms_.emplace(std::string(room), entry{}).first;
    }
    return it->second;
}

bool state_throttle::changed(std::string_view room, uint64_t now,
                             uint64_t interval) {
    entry& e = get(room);
    if (!e.published || now < e.last || now - e.last >= interval) {
        if (e.dirty) {
            queue_.erase({e.due, std::string(room)});
            e.dirty = false;
        }
        e.published = true;
        e.last = now;
        return true;
    }
    if (!e.dirty) {
        e.dirty = true;
        e.due = e.last + interval;
        queue_.emplace(e.due, std::string(room));
    }
    return false;
}

std::vector<std::string> state_throttle::take_due(uint64_t now) {
    std::vector<std::string> out;
    while (!queue_.empty() && queue_.begin()->first <= now) {
        auto node = queue_.extract(queue_.begin());
        std::string& room = node.value().second;
        auto it = rooms_.find(room);
        if (it != rooms_.end()) {
            it->second.dirty = false;
            it->second.published = true;
            it->second.last = now;
        }
        out.push_back(std::move(room));
    }
    return out;
}

std::optional<uint64_t> state_throttle::next_due() const {
    if (queue_.empty()) {
        return std::nullopt;
    }
    return queue_.begin()->first;
}

size_t state_throttle::players(std::string_view room) const {
    auto it = rooms_.find(room);
    return it == rooms_.end() ? 0 : it->second.players;
}

void state_throttle::set_players(std::string_view room, size_t n) {
    get(room).players = n;
}

void state_throttle::prune(uint64_t now, uint64_t idle) {
    for (auto it = rooms_.begin(); it != rooms_.end();) {
        const entry& e = it->second;
        if (!e.dirty && (now < e.last || now - e.last >= idle)) {
            it = rooms_.erase(it);
        } else {
            ++it;
        }
    }
}

bool state_throttle::scheduled(std::string_view room) const {
    auto it = rooms_.find(room);
    return it != rooms_.end() && it->second.dirty;
}

}  // namespace rooms
