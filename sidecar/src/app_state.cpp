// Coalesced `state` publications (docs/redis.md "Presence and state").
// The scripts that change presence (sync, leave, agree, reap) only update
// the hash; state_changed() then publishes the room's state through the
// `state` script at once, or once at the end of the room's interval if
// this server published one within it (state_throttle).  One uv timer
// serves every room: it is armed for the earliest scheduled state.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "app.h"
#include "app_util.h"
#include "keys.h"
#include "log.h"
#include "redis_replies.h"
#include "redis_scripts.h"

namespace rooms {

void app::state_changed(const std::string& room) {
    if (stopping_) {
        return;
    }
    uint64_t now = uv_now(loop_);
    size_t players = std::max(rooms_.members_in(room), states_.players(room));
    uint64_t interval = state_interval_ms(players, cfg_.state_ms_per_player,
                                          cfg_.state_max_interval_ms);
    if (states_.changed(room, now, interval)) {
        publish_state(room);
        return;
    }
    arm_state_timer();
}

// The `state` script: built from the presence hash in Redis, with the
// room's next id, like every other envelope of the room.  If it cannot
// run (command connection down, or lost with it), the room is published
// again once the connection is back (flush_states).
void app::publish_state(const std::string& room) {
    if (stopping_) {
        return;
    }
    flush_publishes(room);
    const std::string& p = cfg_.key_prefix;
    bool sent = redis_->eval(
        script_state(),
        room_keys(p, room),
        {room_channel(p, room), room, std::to_string(cfg_.room_ttl_ms)},
        [this, room](const redisReply* r) {
            if (r == nullptr) {
                if (!stopping_) {
                    unsent_states_.insert(room);
                }
                return;
            }
            if (std::optional<size_t> n = state_players(*r)) {
                states_.set_players(room, *n);
            } else if (r->type == REDIS_REPLY_ERROR) {
                log_error("state failed room=%s: %s", room.c_str(), r->str);
            }
        });
    if (!sent) {
        unsent_states_.insert(room);
        return;
    }
    log_debug("state room=%s", room.c_str());
}

void app::flush_states() {
    std::set<std::string> todo = std::exchange(unsent_states_, {});
    for (const std::string& room : todo) {
        state_changed(room);
    }
}

void app::start_state_timer() {
    int rc = 0;
    state_timer_ = make_uv_timer(loop_, this, rc);
    if (!state_timer_) {
        log_error("state timer: %s", uv_strerror(rc));
    }
}

void app::arm_state_timer() {
    if (!state_timer_) {
        return;
    }
    std::optional<uint64_t> due = states_.next_due();
    if (!due) {
        uv_timer_stop(state_timer_.get());
        return;
    }
    uint64_t now = uv_now(loop_);
    uv_timer_start(state_timer_.get(), state_timer_cb,
                   *due > now ? *due - now : 0, 0);
}

void app::state_timer_cb(uv_timer_t* t) {
    auto* self = static_cast<app*>(t->data);
    uint64_t now = uv_now(self->loop_);
    for (const std::string& room : self->states_.take_due(now)) {
        self->publish_state(room);
    }
    self->arm_state_timer();
}

// Rooms idle for a whole maximum interval are forgotten (their next
// change publishes at once anyway).
void app::prune_states() {
    states_.prune(uv_now(loop_), cfg_.state_max_interval_ms);
}

}  // namespace rooms
