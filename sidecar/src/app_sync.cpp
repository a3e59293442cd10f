// Joins and gap fills: the `sync` script and what is sent from its
// snapshot (docs/redis.md "Joining" and "Redis outages").

#include <hiredis/hiredis.h>

#include <algorithm>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "app.h"
#include "app_util.h"
#include "backfill.h"
#include "envelope.h"
#include "keys.h"
#include "log.h"
#include "redis_replies.h"
#include "redis_scripts.h"

namespace rooms {

namespace {

std::string json_string(std::string_view s) {
    return nlohmann::json(s).dump(-1, ' ', false,
                                  nlohmann::json::error_handler_t::replace);
}

}  // namespace

void app::sync_all_rooms(bool register_all) {
    for (const std::string& code : rooms_.room_codes()) {
        sync_room(code, register_all);
    }
}

// One `sync` script for the room: registers the players that need it,
// takes the snapshot, publishes a state when presence changed.  Joiners
// are the room's pending members; a room marked `resync` also gets its
// attached members' gap filled.  Live messages that arrive while the
// script is in flight are buffered (app::on_message).
void app::sync_room(const std::string& code, bool register_all) {
    room_sync* rs = rooms_.sync_of(code);
    if (rs == nullptr || stopping_ || !rooms_.is_subscribed(code) ||
        !redis_->commands_ready()) {
        return;  // retried when Redis confirms or comes back
    }
    std::vector<member_key> joiners = rooms_.take_pending(code);
    bool resync = rs->resync;
    if (joiners.empty() && !resync && !register_all) {
        return;
    }

    const std::string& p = cfg_.key_prefix;
    std::vector<std::string> args = {room_channel(p, code), code,
                                     cfg_.server_id,
                                     // unique per call: a Redis that lost
                                     // the room's keys gets an epoch no
                                     // server has seen before
                                     epoch_candidate_ + "." +
                                         std::to_string(++epoch_serial_),
                                     epoch_candidate_,
                                     std::to_string(cfg_.room_ttl_ms),
                                     // a new one (failover, restart) may
                                     // have lost acknowledged writes
                                     redis_->replid_for(
                                         room_channel(p, code))};
    std::vector<member_key> players =
        (resync || register_all) ? rooms_.members_of(code) : joiners;
    bool registers = false;
    for (const member_key& k : players) {
        const member* m = rooms_.find(k);
        if (m == nullptr) {
            continue;
        }
        args.push_back(m->id(k.conn));
        args.push_back(json_string(m->name));
        args.push_back(m->ready ? "1" : "0");
        registers = true;
    }

    flush_publishes(code);
    if (registers) {
        // Before the players are registered: the room set of this server
        // holds every room where it may have players (the reaper's list).
        redis_->command({"SADD", server_key(p, cfg_.server_id, "rooms"), code},
                       [](const redisReply*) {});
    }
    auto req = std::make_shared<sync_request>();
    req->room = code;
    req->incarnation = rs->incarnation;
    req->generation = sub_generation_;
    req->joiners = joiners;
    req->start = rs->buffer_base + rs->buffer.size();
    req->buffer_gen = rs->buffer_gen;
    req->resync = resync;
    req->replid = args[6];

    bool sent = redis_->eval(script_sync(), room_keys(p, code), args,
                            [this, req](const redisReply* r) {
                                on_sync_reply(req, r);
                            });
    if (!sent) {
        rooms_.requeue(code, joiners);
        return;  // synced again when the command connection is back
    }
    rs->inflight++;
    rs->overflowed = false;  // this snapshot needs what comes from now on
    if (!joiners.empty()) {
        // Pipelined behind the sync on the one command connection: in a
        // quiet room the state announcing them is the snapshot's seq + 1.
        state_changed(code);
    }
    log_debug("sync room=%s joiners=%zu resync=%d players=%zu", code.c_str(),
              joiners.size(), resync ? 1 : 0, players.size());
}

// The reply came on the command connection, but live messages that Redis
// published before the script ran may still be on their way on the
// subscriber connection (two sockets: no order between them).  The
// snapshot is used only after a barrier on the subscriber connection, so
// that every message with id <= seq has reached on_message() first and
// went into the buffer (filtered out for the joiners) rather than to the
// joiners by BROADCAST after their ATTACH.  The room keeps buffering
// until then (inflight).
void app::on_sync_reply(const std::shared_ptr<sync_request>& req,
                        const redisReply* reply) {
    std::optional<sync_reply> parsed;
    if (reply != nullptr) {
        parsed = parse_sync_reply(*reply);
    }
    if (parsed) {
        update_index(req->room, parsed->count);  // whatever the snapshot's fate
    }
    room_sync* rs = rooms_.sync_of(req->room);
    if (rs == nullptr || rs->incarnation != req->incarnation) {
        return;  // the room emptied meanwhile
    }
    if (req->buffer_gen != rs->buffer_gen) {
        sync_failed(*req, *rs);  // its buffer was given up: snapshot again
        return;
    }

    if (!parsed || req->generation != sub_generation_) {
        // Lost with its connection, or the subscription went away while
        // it was in flight: the joiners wait for the next sync.  A script
        // error would fail again: those joiners are closed.
        if (reply != nullptr && reply->type == REDIS_REPLY_ERROR) {
            log_error("sync failed room=%s: %s", req->room.c_str(),
                      reply->str);
            for (const member_key& k : req->joiners) {
                member* m = rooms_.find_mutable(k);
                link* l = links_.find(k.link);
                if (m != nullptr && l != nullptr && !m->kicked) {
                    m->kicked = true;
                    ngx_rooms_ipc_msg_t kick =
                        ipc_msg(NGX_ROOMS_IPC_KICK, k.conn);
                    kick.status = 1011;
                    kick.payload = ipc_str("internal error");
                    l->send(kick);
                }
            }
            rs->inflight--;
            drop_buffer_if_idle(*rs);
            if (rs->resync) {
                schedule_sync_retry();  // the room must not stay deaf
            }
        } else {
            sync_failed(*req, *rs);
        }
        return;
    }
    sync_backoff_ms_ = 0;

    if (req->joiners.empty() && parsed->registered) {
        state_changed(req->room);  // re-registered players
    }

    auto snap = std::make_shared<sync_snapshot>();
    snap->seq = parsed->seq;
    snap->trimmed = parsed->trimmed;
    snap->fence = parsed->fence;
    snap->epoch = parsed->epoch;
    snap->history.assign(parsed->history.begin(), parsed->history.end());

    auto done = [this, req, snap](bool ok) {
        on_sync_barrier(*req, *snap, ok);
    };
    bool sent =
        redis_->barrier(room_channel(cfg_.key_prefix, req->room), done);
    if (!sent) {
        sync_failed(*req, *rs);  // the subscriber is gone: next sync
    }
}

void app::on_sync_barrier(const sync_request& req, const sync_snapshot& snap,
                          bool ok) {
    room_sync* rs = rooms_.sync_of(req.room);
    if (rs == nullptr || rs->incarnation != req.incarnation) {
        return;  // the room emptied meanwhile
    }
    if (!ok || req.generation != sub_generation_ ||
        req.buffer_gen != rs->buffer_gen) {
        sync_failed(req, *rs);
        return;
    }
    apply_sync(req, snap, *rs);
}

// The joiners wait for the next sync: when the subscriber or the command
// connection is back, or from the retry timer.
void app::sync_failed(const sync_request& req, room_sync& rs) {
    stats_.sync_failures++;
    rs.inflight--;
    rooms_.requeue(req.room, req.joiners);
    if (req.generation == sub_generation_) {
        log_debug("sync lost room=%s", req.room.c_str());
    }
    drop_buffer_if_idle(rs);
    schedule_sync_retry();
}

// Retries every room that waits for a sync (joiners, or a gap to fill)
// and has none in flight, with backoff (100 ms doubling to 2 s, reset by
// a sync that succeeds), so that no failure leaves a room deaf.  A room
// that still waits but has one in flight is tried again next round.
void app::schedule_sync_retry() {
    if (!sync_retry_ || stopping_ || uv_is_active(reinterpret_cast<uv_handle_t*>(
                                         sync_retry_.get()))) {
        return;
    }
    sync_backoff_ms_ = sync_backoff_ms_ == 0
                           ? 100
                           : std::min<uint64_t>(sync_backoff_ms_ * 2, 2000);
    uv_timer_start(sync_retry_.get(), sync_retry_cb, sync_backoff_ms_, 0);
}

void app::sync_retry_cb(uv_timer_t* t) {
    auto* self = static_cast<app*>(t->data);
    bool busy = false;
    for (const std::string& code : self->rooms_.room_codes()) {
        room_sync* rs = self->rooms_.sync_of(code);
        if (rs == nullptr) {
            continue;
        }
        if (rs->inflight == 0) {
            self->sync_room(code);
        } else if (rs->resync || self->rooms_.has_pending(code)) {
            busy = true;  // e.g. joiners of a voided sync, a live one out
        }
    }
    if (busy) {
        self->schedule_sync_retry();
    }
}

void app::apply_sync(const sync_request& req, const sync_snapshot& copy,
                     room_sync& rs) {
    rs.inflight--;

    room_snapshot snap;
    snap.seq = copy.seq;
    snap.trimmed = copy.trimmed;
    snap.history.reserve(copy.history.size());
    for (const std::string& payload : copy.history) {
        snap.history.push_back(
            history_entry{envelope_tail_id(payload), payload});
    }
    // The room's keys were lost, or Redis changed history (a failover)
    // and this server's members saw what the new master lacks.
    bool switched = !rs.replid.empty() && !req.replid.empty() &&
                    rs.replid != req.replid;
    bool restarted = (!rs.epoch.empty() && rs.epoch != copy.epoch) ||
                     (switched &&
                      !history_continues(snap, rs.last_id, rs.last_hash));
    if (switched) {
        log_info("room=%s: Redis changed history (replication id %s): "
                 "view at id %llu %s",
                 req.room.c_str(), req.replid.c_str(), ull(rs.last_id),
                 restarted ? "lost, reset" : "continues");
    }
    rs.epoch = copy.epoch;
    if (!req.replid.empty()) {
        rs.replid = req.replid;
    }

    // Attached members first: what they missed, then (held) live traffic.
    if (req.resync && rs.resync) {
        gap_fill(req, snap, rs, restarted);
    }
    // Joiners resuming at or below the fence get a reset: their ids may
    // be from before the switch.
    snap.trimmed = std::max(snap.trimmed, copy.fence);

    size_t start = req.start > rs.buffer_base ? req.start - rs.buffer_base
                                              : 0;
    for (const member_key& key : req.joiners) {
        std::optional<uint64_t> at = admit(key, snap, rs, start);
        if (at && rs.resync) {
            note_position(req.room, rs, key.link, *at);
        }
    }
    if (!rs.resync && snap.seq > rs.last_id) {
        rs.last_id = snap.seq;
        remember_last(rs, snap.history, {});
    }
    drop_buffer_if_idle(rs);
}

// The fingerprint of rs.last_id's message, from these, or unknown.
void app::remember_last(room_sync& rs,
                        const std::vector<history_entry>& history,
                        const std::vector<history_entry>& buffered) {
    for (const std::vector<history_entry>* v : {&buffered, &history}) {
        for (auto it = v->rbegin(); it != v->rend(); ++it) {
            if (it->id == rs.last_id) {
                rs.last_hash = message_hash(it->payload);
                return;
            }
        }
    }
    rs.last_hash = 0;
}

// A member was attached at `at` while a gap fill is still to come for
// the room (a sync of its attached members is in flight).  The fill goes
// to a link as a whole: alone on its link, the member's position is the
// link's; with others, the link keeps the lowest (nobody misses a
// message; the newcomer may see a few ids again, which it can drop by
// id).
void app::note_position(const std::string& room, room_sync& rs,
                        uint64_t link_id, uint64_t at) {
    size_t on_link = 0;
    if (const auto* targets = rooms_.attached_links(room)) {
        for (const link_members& t : *targets) {
            if (t.link == link_id) {
                on_link = t.attached;
            }
        }
    }
    auto it = std::find_if(rs.resume_from.begin(), rs.resume_from.end(),
                           [&](const auto& lf) {
                               return lf.first == link_id;
                           });
    if (it != rs.resume_from.end()) {
        it->second = std::min(it->second, at);
    } else if (on_link <= 1) {
        rs.resume_from.emplace_back(link_id, at);
    }
}

// The attached members of each link get what they missed since their
// copy of the room stopped (a Redis outage: the room's last_id; a
// restarted sidecar: the id the worker resumed with), merged with the
// live messages held meanwhile, each once, in id order.  A gap that
// history cannot fill (types that are not kept, such as `state`) is
// followed by a fresh `state`, so that nobody keeps a stale player list.
void app::gap_fill(const sync_request& req, const room_snapshot& snap,
                   room_sync& rs, bool restarted) {
    std::vector<history_entry> buffered;
    buffered.reserve(rs.buffer.size());
    uint64_t newest = snap.seq;
    for (const buffered_message& b : rs.buffer) {
        buffered.push_back(history_entry{b.id, b.payload});
        newest = std::max(newest, b.id);
    }

    // Links grouped by where they stopped: one plan, one frame each.
    std::vector<std::pair<uint64_t, std::vector<uint64_t>>> groups;
    if (const auto* targets = rooms_.attached_links(req.room)) {
        for (const link_members& t : *targets) {
            uint64_t from = rs.last_id;
            for (const auto& [l, since] : rs.resume_from) {
                if (l == t.link) {
                    from = since;
                }
            }
            auto g = std::find_if(groups.begin(), groups.end(),
                                  [&](const auto& e) {
                                      return e.first == from;
                                  });
            if (g == groups.end()) {
                groups.emplace_back(from, std::vector<uint64_t>{t.link});
            } else {
                g->second.push_back(t.link);
            }
        }
    }

    bool stale = false;
    for (const auto& [from, links] : groups) {
        backfill_plan plan = plan_gap_fill(snap, from, buffered,
                                           cfg_.history_length, restarted);
        log_info("gap fill room=%s after_id=%llu seq=%llu links=%zu "
                 "messages=%zu%s",
                 req.room.c_str(), ull(from), ull(snap.seq), links.size(),
                 plan.messages.size(), plan.reset ? " reset" : "");
        uint64_t expect = from + 1;
        if (plan.reset || !plan.messages.empty()) {
            stats_.gap_fills++;
        }
        stats_.gap_fill_messages += plan.messages.size() * links.size();
        if (plan.reset) {
            stats_.resets++;
            broadcast_to(links, req.room, make_reset(snap.seq), snap.seq);
            stale = true;
        }
        for (std::string_view m : plan.messages) {
            uint64_t id = envelope_tail_id(m);
            if (!plan.reset) {
                stale = stale || id != expect;
                expect = id + 1;
            }
            // After a reset the room's position is seq, whatever the
            // backfill's ids: they are older.
            broadcast_to(links, req.room, m,
                         plan.reset && id <= snap.seq ? 0 : id);
        }
        if (!plan.reset && expect <= newest) {
            stale = true;
        }
    }
    rs.last_id = newest;
    remember_last(rs, snap.history, buffered);
    rs.resume_from.clear();
    rs.resync = false;
    if (stale) {
        state_changed(req.room);
    }
}

// welcome (not when resuming), reset, backfill, the buffered live
// messages newer than the snapshot, ATTACH: all before ATTACH on the one
// ordered link, so nothing is missing or doubled.
std::optional<uint64_t> app::admit(const member_key& key,
                                   const room_snapshot& snap,
                                   const room_sync& rs, size_t start) {
    member* m = rooms_.find_mutable(key);
    link* l = links_.find(key.link);
    if (m == nullptr || l == nullptr || m->attached) {
        return std::nullopt;
    }
    size_t backfilled = 0;
    bool reset = false;
    if (!(m->flags & NGX_ROOMS_IPC_F_RESUME)) {
        send_text(*l, key.conn,
                  make_welcome(m->room(), m->id(key.conn), m->name, snap.seq));
        std::optional<uint64_t> since;
        if (m->flags & NGX_ROOMS_IPC_F_SINCE) {
            since = m->since;
        }
        backfill_plan plan = plan_backfill(snap, since, cfg_.history_length);
        reset = plan.reset;
        if (plan.reset) {
            stats_.resets++;
            send_text(*l, key.conn, make_reset(snap.seq));
        }
        for (std::string_view msg : plan.messages) {
            send_text(*l, key.conn, msg);
        }
        backfilled = plan.messages.size();
    }
    size_t live = 0;
    uint64_t last_id = snap.seq;
    for (size_t i = start; i < rs.buffer.size(); i++) {
        const buffered_message& b = rs.buffer[i];
        if (b.id == 0 || b.id > snap.seq) {
            send_text(*l, key.conn, b.payload);
            last_id = std::max(last_id, b.id);
            live++;
        }
    }
    ngx_rooms_ipc_msg_t attach = ipc_msg(NGX_ROOMS_IPC_ATTACH, key.conn);
    attach.last_id = last_id;
    l->send(attach);
    rooms_.attach(key);
    log_debug("attached link=%llu conn=%llu room=%s last_id=%llu "
              "backfill=%zu live=%zu%s",
              ull(key.link), ull(key.conn), m->room().c_str(), ull(snap.seq),
              backfilled, live, reset ? " reset" : "");
    return last_id;
}

void app::drop_buffer_if_idle(room_sync& rs) {
    if (rs.inflight == 0 && !rs.resync) {
        rs.buffer_base += rs.buffer.size();
        rs.buffer.clear();
        if (rs.buffer.capacity() > 1024) {
            rs.buffer.shrink_to_fit();  // a burst's worth of entries
        }
        rs.buffer_bytes = 0;
        rs.overflowed = false;
    }
}

// A live message that came while the room has a snapshot in flight or a
// gap to fill: kept for the joiners and the gap fill, up to
// cfg_.sync_buffer_bytes (payloads and entries).  Past that, the buffer
// is given up rather than cut: the snapshots in flight are void
// (on_sync_reply, on_sync_barrier: their joiners wait, a gap fill stays
// due) and the room is snapshotted again (schedule_sync_retry), so what
// the buffer would have held comes from the room's history instead, and
// a gap that history cannot fill ends in a reset, as after an outage.
void app::buffer_live(std::string_view room, room_sync& rs, uint64_t id,
                      std::string_view payload) {
    if (rs.overflowed) {
        return;  // no snapshot in flight needs it
    }
    size_t cost = payload.size() + sizeof(buffered_message);
    if (rs.buffer_bytes + cost <= cfg_.sync_buffer_bytes) {
        rs.buffer.push_back(buffered_message{id, std::string(payload)});
        rs.buffer_bytes += cost;
        return;
    }
    log_warn("sync buffer over %zu bytes room=%.*s (%zu messages): "
             "snapshotting the room again",
             cfg_.sync_buffer_bytes, len(room), room.data(),
             rs.buffer.size() + 1);
    rs.buffer_base += rs.buffer.size();
    std::vector<buffered_message>().swap(rs.buffer);
    rs.buffer_bytes = 0;
    rs.overflowed = true;
    rs.buffer_gen++;
}

}  // namespace rooms
