// Global presence: leaves, the heartbeat, removal of dead servers'
// players, and GET /rooms (docs/redis.md "Presence").

#include <hiredis/hiredis.h>

#include <algorithm>
#include <optional>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "app.h"
#include "app_util.h"
#include "keys.h"
#include "log.h"
#include "redis_replies.h"
#include "redis_scripts.h"

namespace rooms {

void app::presence_leave(const std::string& room,
                         const std::string& player_id, bool last_local,
                         bool closed) {
    if (stopping_) {
        return;
    }
    const std::string& p = cfg_.key_prefix;
    std::vector<std::string> keys = {room_key(p, room, "presence"),
                                     rooms_index_key(p),
                                     server_key(p, cfg_.server_id, "rooms"),
                                     room_key(p, room, "senders")};
    std::vector<std::string> args = {room, player_id,
                                     last_local ? "1" : "0",
                                     closed ? "1" : "0"};
    pending_leave pl{room, player_id, last_local, closed};
    flush_publishes(room);
    bool sent = redis_.eval(script_leave(), keys, args,
                            [this, pl](const redisReply* r) {
                                if (r == nullptr && !stopping_) {
                                    leaves_.push_back(pl);  // retry later
                                }
                            });
    if (!sent) {
        leaves_.push_back(std::move(pl));
        return;
    }
    state_changed(room);
}

void app::flush_leaves() {
    std::vector<pending_leave> todo = std::exchange(leaves_, {});
    if (!todo.empty()) {
        log_info("telling Redis about %zu players that left meanwhile",
                 todo.size());
    }
    for (const pending_leave& pl : todo) {
        presence_leave(pl.room, pl.player_id, pl.last_local, pl.closed);
    }
}

void app::start_heartbeat() {
    int rc = 0;
    heartbeat_ = make_uv_handle<uv_timer_t>(
        [&](uv_timer_t* t) { return uv_timer_init(loop_, t); }, rc, this);
    if (!heartbeat_) {
        log_error("heartbeat timer: %s", uv_strerror(rc));
        return;
    }
    uv_timer_start(heartbeat_.get(), heartbeat_cb, cfg_.heartbeat_interval_ms,
                   cfg_.heartbeat_interval_ms);
}

void app::heartbeat_cb(uv_timer_t* t) {
    auto* self = static_cast<app*>(t->data);
    self->heartbeat();
    if (uv_now(self->loop_) >= self->reap_paused_until_) {
        self->reap(false);
    }
    self->prune_states();
}

// After Redis stalled (stopped, swapping, unreachable) or lost its data,
// every server's alive key may have expired, not because the servers
// died but because none of them could beat: reaping now would remove the
// players of live servers.  So `reap dead` waits one heartbeat TTL, in
// which every live server has reconnected and beaten again.  Paused when
// our own key turns out to have expired, and whenever the command
// connection comes back (a reconnect is how we usually notice a stall).
void app::pause_reaping(const char* why) {
    reap_paused_until_ = uv_now(loop_) + cfg_.heartbeat_ttl_ms;
    log_info("not reaping dead servers for %llu ms: %s",
             ull(cfg_.heartbeat_ttl_ms), why);
}

// Refreshes this server's alive key.  If it had expired (this server was
// silent for longer than the TTL and may have been reaped) or Redis lost
// it, every local player is registered again.  A beat that comes late
// (more than half the TTL, at least 1.5 intervals, after the previous
// one) means a stall too; the script then stops our reaps in Redis.
void app::heartbeat() {
    if (stopping_) {
        return;
    }
    const std::string& p = cfg_.key_prefix;
    uint64_t late = std::max(cfg_.heartbeat_ttl_ms / 2,
                             cfg_.heartbeat_interval_ms * 3 / 2);
    redis_.eval(script_heartbeat(),
                {server_key(p, cfg_.server_id, "alive"), servers_key(p),
                 server_key(p, cfg_.server_id, "stall")},
                {cfg_.server_id, std::to_string(cfg_.heartbeat_ttl_ms),
                 heartbeat_seen_ ? "1" : "0", std::to_string(late)},
                [this](const redisReply* r) {
                    if (r == nullptr || r->type != REDIS_REPLY_INTEGER) {
                        return;
                    }
                    if (r->integer == 0 && heartbeat_seen_) {
                        log_warn("heartbeat key was gone (expired or Redis "
                                 "lost it): registering players again");
                        pause_reaping("our own heartbeat key had expired");
                        sync_all_rooms(true);
                    } else if (r->integer == 2 && heartbeat_seen_) {
                        log_warn("heartbeat came late: Redis or this "
                                 "server stalled");
                        pause_reaping("our heartbeat came late");
                    }
                    heartbeat_seen_ = true;
                });
}

// Every room_ttl / 4: the keys of each room with members here live
// another room_ttl, even if nobody joins or writes (SPEC 4: only a room
// nobody uses expires).
void app::touch_rooms() {
    if (stopping_ || !redis_.commands_ready()) {
        return;
    }
    const std::string& p = cfg_.key_prefix;
    std::string ttl = std::to_string(cfg_.room_ttl_ms);
    for (const std::string& code : rooms_.room_codes()) {
        redis_.eval(script_touch(), room_keys(p, code), {ttl},
                    [](const redisReply*) {});
    }
}

void app::touch_timer_cb(uv_timer_t* t) {
    static_cast<app*>(t->data)->touch_rooms();
}

// stale: removes the players a previous run under this server id left
// and no worker resumed (once, resume_grace_ms after the first
// connection); otherwise the players of every server whose heartbeat
// expired.
void app::reap(bool stale) {
    if (stopping_) {
        return;
    }
    const std::string& p = cfg_.key_prefix;
    bool self = stale;
    redis_.eval(script_reap(),
                {servers_key(p), rooms_index_key(p),
                 server_key(p, cfg_.server_id, "stall")},
                {p, stale ? "stale" : "dead", cfg_.server_id,
                 epoch_candidate_},
                [this, self](const redisReply* r) {
                    std::optional<std::vector<reaped_server>> reaped;
                    if (r != nullptr) {
                        reaped = parse_reap_reply(*r);
                    }
                    if (!reaped) {
                        return;
                    }
                    for (const reaped_server& s : *reaped) {
                        for (std::string_view code : s.rooms) {
                            state_changed(std::string(code));
                        }
                        if (self) {
                            log_info("cleared players=%lld left by a "
                                     "previous run of this server and not "
                                     "resumed",
                                     s.players);
                        } else {
                            log_warn("server %.*s missed its heartbeat: "
                                     "players=%lld removed",
                                     len(s.id), s.id.data(), s.players);
                        }
                    }
                });
}

void app::stale_reap_cb(uv_timer_t* t) {
    auto* self = static_cast<app*>(t->data);
    if (!self->redis_.commands_ready()) {
        // tried again at the next connection
        self->stale_reap_armed_ = false;
        return;
    }
    self->reap(true);
}

void app::reply_rooms(uint64_t link_id, uint64_t request,
                      const redisReply* reply) {
    link* l = links_.find(link_id);
    if (l == nullptr) {
        return;
    }
    std::optional<std::vector<room_total>> totals;
    if (reply != nullptr) {
        totals = parse_rooms_index(*reply);
    }
    if (!totals) {
        reply_local_rooms(*l, request);
        return;
    }
    auto list = nlohmann::ordered_json::array();
    for (const room_total& t : *totals) {
        nlohmann::ordered_json item = nlohmann::ordered_json::object();
        item["code"] = t.code;
        item["count"] = t.count;
        list.push_back(std::move(item));
    }
    std::string body = list.dump(
        -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_ROOMS_REPLY, request);
    m.payload = ipc_str(body);
    l->send(m);
    log_debug("rooms request=%llu link=%llu rooms=%zu", ull(request),
              ull(link_id), list.size());
}

// Redis unavailable: this sidecar's own rooms, the best it knows.
void app::reply_local_rooms(link& l, uint64_t request) {
    auto list = nlohmann::ordered_json::array();
    for (const room_count& rc : rooms_.counts()) {
        nlohmann::ordered_json item = nlohmann::ordered_json::object();
        item["code"] = rc.code;
        item["count"] = rc.count;
        list.push_back(std::move(item));
    }
    std::string body = list.dump(
        -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_ROOMS_REPLY, request);
    m.payload = ipc_str(body);
    l.send(m);
    log_debug("rooms (local, Redis unavailable) request=%llu link=%llu",
              ull(request), ull(l.id()));
}

}  // namespace rooms
