// Global presence: leaves, the heartbeat, removal of dead servers'
// players, and GET /rooms (docs/redis.md "Presence").

#include <hiredis/hiredis.h>

#include <algorithm>
#include <memory>
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

namespace {

// A beat this long after the previous one means that Redis (or this
// server) stalled: more than half the TTL, at least 1.5 intervals.
uint64_t late_beat_ms(const config& cfg) {
    return std::max(cfg.heartbeat_ttl_ms / 2,
                    cfg.heartbeat_interval_ms * 3 / 2);
}

void ignore_reply(const redisReply*) {}

}  // namespace

// The `leave` script (the room's slot), then, from its reply, the room's
// count to the index and, after the room's last local player, the room
// out of this server's room set: in this order, so that the set holds
// every room where this server may have players (the reaper's list).
void app::presence_leave(const std::string& room,
                         const std::string& player_id, bool last_local,
                         bool closed) {
    if (stopping_) {
        return;
    }
    pending_leave pl{room, player_id, last_local, closed};
    flush_publishes(room);
    bool sent = redis_->eval(
        script_leave(), room_keys(cfg_.key_prefix, room),
        {player_id, closed ? "1" : "0", std::to_string(cfg_.room_ttl_ms)},
        [this, pl](const redisReply* r) {
            if (r == nullptr) {
                if (!stopping_) {
                    leaves_.push_back(pl);  // retry later
                }
                return;
            }
            std::optional<presence_change> c = parse_presence_change(*r);
            if (!c) {
                if (r->type == REDIS_REPLY_ERROR) {
                    log_error("leave failed room=%s: %s", pl.room.c_str(),
                              r->str);
                }
                return;
            }
            if (c->removed > 0) {
                update_index(pl.room, c->count);
            }
            // a player who joined meanwhile keeps the room in the set
            if (pl.last_local && rooms_.members_in(pl.room) == 0) {
                redis_->command({"SREM",
                                server_key(cfg_.key_prefix, cfg_.server_id,
                                           "rooms"),
                                pl.room},
                               ignore_reply);
            }
        });
    if (!sent) {
        leaves_.push_back(std::move(pl));
        return;
    }
    state_changed(room);
}

// The room's count into its bucket of the room index (`index`: applied
// unless the bucket holds a newer version).  Lost with the connection, it
// is stale until the room's next presence change.  The version only has
// to outlive the updates still on their way (a round trip; seconds after
// a stall): it is kept a minute, at most room_ttl, so that a room nobody
// uses leaves nothing behind.
void app::update_index(const std::string& room, const index_count& c) {
    uint64_t keep_ms = 60000;
    if (cfg_.room_ttl_ms > 0) {
        keep_ms = std::min(keep_ms, cfg_.room_ttl_ms);
    }
    redis_->eval(script_index(), room_index_keys(cfg_.key_prefix, room),
                {room, std::to_string(c.count), std::to_string(c.version),
                 std::string(c.epoch), std::to_string(keep_ms)},
                [room](const redisReply* r) {
                    if (r != nullptr && r->type == REDIS_REPLY_ERROR) {
                        log_error("index failed room=%s: %s", room.c_str(),
                                  r->str);
                    }
                });
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
    heartbeat_ = make_uv_timer(loop_, this, rc);
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
// (late_beat_ms() after the previous one) means a stall: our reaping
// pauses.  While another server holds a claim on us (it found our key
// expired), its removals may still undo our registrations: once it lets
// go, they are made again.  The server set gets our id at every beat (a
// reaper may have dropped it while we came back).
void app::heartbeat() {
    if (stopping_) {
        return;
    }
    const std::string& p = cfg_.key_prefix;
    redis_->eval(script_heartbeat(), server_keys(p, cfg_.server_id),
                {std::to_string(cfg_.heartbeat_ttl_ms),
                 std::to_string(late_beat_ms(cfg_))},
                [this](const redisReply* r) {
                    std::optional<heartbeat_reply> h;
                    if (r != nullptr) {
                        h = parse_heartbeat_reply(*r);
                    }
                    if (!h) {
                        return;
                    }
                    if (h->beat == 0 && heartbeat_seen_) {
                        log_warn("heartbeat key was gone (expired or Redis "
                                 "lost it): registering players again");
                        pause_reaping("our own heartbeat key had expired");
                        sync_all_rooms(true);
                    } else if (h->beat == 2 && heartbeat_seen_) {
                        log_warn("heartbeat came late: Redis or this "
                                 "server stalled");
                        pause_reaping("our heartbeat came late");
                    }
                    if (h->reaping && !being_reaped_) {
                        log_warn("another server is reaping this one: "
                                 "registering players again once it is done");
                    } else if (!h->reaping && being_reaped_) {
                        log_info("reaped meanwhile: registering players "
                                 "again");
                        sync_all_rooms(true);
                    }
                    being_reaped_ = h->reaping;
                    heartbeat_seen_ = true;
                });
    redis_->command({"SADD", servers_key(p), cfg_.server_id}, ignore_reply);
}

// Every room_ttl / 4: the keys of each room with members here live
// another room_ttl, even if nobody joins or writes (SPEC 4: only a room
// nobody uses expires).  `publish` renews none (only the keys it
// creates get a TTL), so this and the touch when a room's last member
// here leaves (room_emptied) are what keeps a used room's keys.
void app::touch_rooms() {
    if (stopping_ || !redis_->commands_ready()) {
        return;
    }
    for (const std::string& code : rooms_.room_codes()) {
        touch_room(code);
    }
}

void app::touch_room(const std::string& room) {
    if (cfg_.room_ttl_ms == 0 || stopping_) {
        return;
    }
    flush_publishes(room);
    redis_->eval(script_touch(), room_keys(cfg_.key_prefix, room),
                {std::to_string(cfg_.room_ttl_ms)},
                [](const redisReply*) {});
}

void app::touch_timer_cb(uv_timer_t* t) {
    static_cast<app*>(t->data)->touch_rooms();
}

// stale: removes the players a previous run under this server id left
// and no worker resumed (once, resume_grace_ms after the first
// connection), room by room of our room set; otherwise asks, for every
// other server of the server set, whether it is dead (`reap_claim`, in
// its slot), and reaps those claimed.
void app::reap(bool stale) {
    if (stopping_) {
        return;
    }
    const std::string& p = cfg_.key_prefix;
    if (stale) {
        redis_->command({"SMEMBERS", server_key(p, cfg_.server_id, "rooms")},
                       [this](const redisReply* r) {
                           std::optional<std::vector<std::string_view>> codes;
                           if (r != nullptr && !stopping_) {
                               codes = parse_members(*r);
                           }
                           if (codes) {
                               reap_rooms(cfg_.server_id,
                                          {codes->begin(), codes->end()},
                                          true);
                           }
                       });
        return;
    }
    redis_->command({"SMEMBERS", servers_key(p)}, [this](const redisReply* r) {
        std::optional<std::vector<std::string_view>> ids;
        // the beat answered just before may have paused reaping
        if (r != nullptr && !stopping_ &&
            uv_now(loop_) >= reap_paused_until_) {
            ids = parse_members(*r);
        }
        if (!ids) {
            return;
        }
        for (std::string_view id : *ids) {
            if (id != cfg_.server_id) {
                claim_server(std::string(id));
            }
        }
    });
}

void app::claim_server(const std::string& server_id) {
    redis_->eval(script_reap_claim(),
                server_keys(cfg_.key_prefix, server_id),
                {std::to_string(cfg_.heartbeat_ttl_ms),
                 std::to_string(late_beat_ms(cfg_)), cfg_.server_id},
                [this, server_id](const redisReply* r) {
                    std::optional<std::vector<std::string_view>> codes;
                    if (r != nullptr && !stopping_) {
                        codes = parse_claim_reply(*r);
                    }
                    if (codes) {
                        reap_rooms(server_id, {codes->begin(), codes->end()},
                                   false);
                    }
                });
}

// One `reap_room` per room (each in the room's slot), pipelined; each
// reply puts the room's count into the index (also when nothing was
// removed: a reaper that died midway left it to us) and publishes its
// state if players left.  For a dead server, `reap_done` follows them on
// the pipeline: its keys go and the claim is released after every room
// was done; a server that beat meanwhile keeps them.
void app::reap_rooms(const std::string& server_id,
                     const std::vector<std::string>& codes, bool stale) {
    struct tally {
        size_t left = 0;
        long long removed = 0;
    };
    auto t = std::make_shared<tally>();
    t->left = codes.size();
    auto report = [server_id, stale](long long removed) {
        if (stale) {
            log_info("cleared players=%lld left by a previous run of this "
                     "server and not resumed",
                     removed);
        } else {
            log_warn("server %s missed its heartbeat: players=%lld removed",
                     server_id.c_str(), removed);
        }
    };
    const std::string& p = cfg_.key_prefix;
    std::string ttl = std::to_string(cfg_.room_ttl_ms);
    for (const std::string& code : codes) {
        redis_->eval(
            script_reap_room(), room_keys(p, code),
            {server_id, stale ? "stale" : "dead", epoch_candidate_, ttl},
            [this, code, stale, t, report](const redisReply* r) {
                std::optional<presence_change> c;
                if (r != nullptr && !stopping_) {
                    c = parse_presence_change(*r);
                }
                if (c) {
                    update_index(code, c->count);
                    t->removed += c->removed;
                    if (c->removed > 0) {
                        state_changed(code);
                    }
                    if (stale && c->kept == 0 && rooms_.members_in(code) == 0) {
                        redis_->command(
                            {"SREM",
                             server_key(cfg_.key_prefix, cfg_.server_id,
                                        "rooms"),
                             code},
                            ignore_reply);
                    }
                }
                if (--t->left == 0) {
                    report(t->removed);
                }
            });
    }
    if (codes.empty()) {
        report(0);
    }
    if (stale) {
        return;
    }
    redis_->eval(script_reap_done(), server_keys(p, server_id),
                {cfg_.server_id}, [this, server_id](const redisReply* r) {
                    if (r != nullptr && r->type == REDIS_REPLY_INTEGER &&
                        r->integer == 1 && !stopping_) {
                        redis_->command({"SREM",
                                        servers_key(cfg_.key_prefix),
                                        server_id},
                                       ignore_reply);
                    }
                });
}

void app::stale_reap_cb(uv_timer_t* t) {
    auto* self = static_cast<app*>(t->data);
    if (!self->redis_->commands_ready()) {
        // tried again at the next connection
        self->stale_reap_armed_ = false;
        return;
    }
    self->reap(true);
}

// GET /rooms: one ZREVRANGE per bucket of the room index, pipelined on
// the command connection; the rooms merged, largest first.  If a bucket
// does not answer, this sidecar's local counts, as when Redis is down.
struct app::rooms_read {
    uint64_t link_id = 0;
    uint64_t request = 0;
    unsigned waiting = 0;  // buckets not answered yet
    bool failed = false;   // one did not answer
    std::vector<std::pair<std::string, long long>> rooms;
};

void app::on_rooms(link& l, const ngx_rooms_ipc_msg_t& msg) {
    auto read = std::make_shared<rooms_read>();
    read->link_id = l.id();
    read->request = msg.id;
    for (unsigned b = 0; b < room_index_buckets && !read->failed; b++) {
        bool sent = redis_->command(
            {"ZREVRANGE", room_index_key(cfg_.key_prefix, b), "0", "-1",
             "WITHSCORES"},
            [this, read](const redisReply* r) {
                std::optional<std::vector<room_total>> totals;
                if (r != nullptr) {
                    totals = parse_rooms_index(*r);
                }
                if (!totals) {
                    read->failed = true;
                } else {
                    for (const room_total& t : *totals) {
                        read->rooms.emplace_back(std::string(t.code),
                                                 t.count);
                    }
                }
                if (--read->waiting == 0) {
                    reply_rooms(read);
                }
            });
        if (sent) {
            read->waiting++;
        } else {
            read->failed = true;
        }
    }
    if (read->waiting == 0) {
        reply_rooms(read);
    }
}

void app::reply_rooms(const std::shared_ptr<rooms_read>& read) {
    link* l = links_.find(read->link_id);
    if (l == nullptr) {
        return;
    }
    if (read->failed) {
        reply_local_rooms(*l, read->request);
        return;
    }
    std::sort(read->rooms.begin(), read->rooms.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    auto list = nlohmann::ordered_json::array();
    for (const auto& [code, count] : read->rooms) {
        nlohmann::ordered_json item = nlohmann::ordered_json::object();
        item["code"] = code;
        item["count"] = count;
        list.push_back(std::move(item));
    }
    std::string body = list.dump(
        -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_ROOMS_REPLY, read->request);
    m.payload = ipc_str(body);
    l->send(m);
    log_debug("rooms request=%llu link=%llu rooms=%zu", ull(read->request),
              ull(read->link_id), list.size());
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
