// Client messages and their answers (SPEC 2.2, docs/redis.md "Answers").
//
// Every MESSAGE from a worker gets exactly one ACK: empty when the message
// was published (its copy reaches the sender through the room), or
// carrying the error envelope that refused it.  The worker keeps each
// message until its ACK, and sends the unanswered ones again to the next
// sidecar if this one dies: the `publish` script drops a message it has
// seen (per player, by seq), so nothing is published twice.
//
// What Redis does with a message is certain except in two cases:
// - the command connection drops with it in flight: it is "in doubt"; once
//   Redis is back, the `settle` script says whether it was published, and
//   makes sure it never will be if it was not;
// - Redis stops answering (redis_timeout T): each message carries a
//   deadline, T/2 after it was sent, in Redis's clock; a script that runs
//   later refuses it.  When the sidecar gives up the connection (its
//   oldest command waited T), Redis had run none of the commands behind
//   that one (a connection's commands run in order), so each can only run
//   when Redis resumes.  If Redis answers again (a new connection is
//   ready) before a message is answered, `settle` tells the truth;
//   otherwise the message is answered "unavailable" T/4 after its
//   deadline (3T/4 after it was sent): Redis was still silent then, and
//   whenever it resumes, the script refuses it.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <utility>

#include "app.h"
#include "app_util.h"
#include "envelope.h"
#include "keys.h"
#include "log.h"
#include "ngx_http_rooms_json.h"
#include "redis_replies.h"
#include "redis_scripts.h"

namespace rooms {

namespace {

constexpr std::string_view unavailable_text =
    "Redis is unavailable, the message was not sent";

// The client's ref, for an error about a message that is not parsed
// (rate limited, expired): the module's own finder, so both agree.
std::string client_ref(std::string_view payload) {
    uint8_t buf[NGX_ROOMS_REF_MAX];
    size_t len = 0;
    if (!ngx_rooms_json_ref(reinterpret_cast<const uint8_t*>(payload.data()),
                            payload.size(), buf, &len)) {
        return {};
    }
    return std::string(reinterpret_cast<const char*>(buf), len);
}

}  // namespace

void app::on_client_message(link& l, const ngx_rooms_ipc_msg_t& msg) {
    member_key key{l.id(), msg.id};
    member* m = rooms_.find_mutable(key);
    if (m == nullptr || m->kicked) {
        // Gone (its CLOSE is on the way) or being closed: no answer.
        log_debug("message for unknown conn link=%llu conn=%llu",
                  ull(l.id()), ull(msg.id));
        return;
    }

    // Until the room's SUBSCRIBE is confirmed (it is on its way: the
    // subscriber connection is up), its messages wait, in order.
    auto w = waiting_.find(m->room());
    if (w != waiting_.end() ||
        (!rooms_.is_subscribed(m->room()) &&
         redis_->subscriber_ready(room_channel(cfg_.key_prefix, m->room())))) {
        if (w == waiting_.end()) {
            w = waiting_.emplace(m->room(), std::deque<waiting_message>())
                    .first;
        }
        w->second.push_back(waiting_message{
            l.id(), msg.id, msg.seq, msg.flags,
            std::string(view(msg.payload))});
        return;
    }
    process_message(l, msg.id, msg.seq, msg.flags, view(msg.payload));
}

// The room is subscribed (or will not be soon): its waiting messages go.
void app::release_waiting(const std::string& room) {
    auto w = waiting_.find(room);
    if (w == waiting_.end()) {
        return;
    }
    std::deque<waiting_message> todo = std::move(w->second);
    waiting_.erase(w);
    for (const waiting_message& wm : todo) {
        if (link* l = links_.find(wm.link)) {
            process_message(*l, wm.conn, wm.seq, wm.flags, wm.payload);
        }
    }
}

void app::process_message(link& l, uint64_t conn, uint64_t seq,
                          unsigned flags, std::string_view payload) {
    member* m = rooms_.find_mutable(member_key{l.id(), conn});
    if (m == nullptr || m->kicked) {
        return;
    }

    publish_ctx ctx;
    ctx.link = l.id();
    ctx.conn = conn;
    ctx.seq = seq;
    ctx.room = m->room();
    ctx.player = m->id(conn);

    if (flags & NGX_ROOMS_IPC_F_EXPIRED) {
        // Held by the worker past its bound after an earlier sidecar took
        // it: never published late; answered by what Redis knows.
        ctx.ref = client_ref(payload);
        settle(ctx);
        return;
    }

    // A burst the worker held while no sidecar was there is not the
    // client's doing.
    auto verdict = (flags & NGX_ROOMS_IPC_F_RESENT)
                       ? rate_limiter::verdict::ok
                       : m->limiter.take(cfg_.rate, uv_now(loop_));
    switch (verdict) {
    case rate_limiter::verdict::ok:
        break;
    case rate_limiter::verdict::limited:
        log_debug("rate limited link=%llu conn=%llu room=%s", ull(l.id()),
                  ull(conn), m->room().c_str());
        stats_.rate_limited++;
        ack(l.id(), conn, seq,
            make_error("rate_limited",
                       "too many messages, this one was dropped",
                       client_ref(payload)));
        return;
    case rate_limiter::verdict::kick: {
        log_warn("rate limit abused, closing link=%llu conn=%llu room=%s "
                 "id=%s",
                 ull(l.id()), ull(conn), m->room().c_str(),
                 ctx.player.c_str());
        m->kicked = true;
        stats_.rate_limit_kicks++;
        ngx_rooms_ipc_msg_t k = ipc_msg(NGX_ROOMS_IPC_KICK, conn);
        k.status = 1008;
        k.payload = ipc_str("rate limit exceeded");
        l.send(k);
        return;
    }
    }

    envelope_result env = process_client_envelope(
        payload, m->name, cfg_.max_message_bytes, ctx.player);
    ctx.ref = env.ref;
    if (env.status != envelope_status::ok) {
        const char* code = envelope_error_code(env.status);
        log_info("rejected message link=%llu conn=%llu room=%s code=%s: %s",
                 ull(l.id()), ull(conn), m->room().c_str(), code,
                 env.message.c_str());
        stats_.refused_invalid++;
        ack(l.id(), conn, seq, make_error(code, env.message, env.ref));
        return;
    }

    publish(*m, ctx, std::move(env.out), env.type);
}

// A message goes into its room's queue; the queue goes to Redis as one
// `publish` script call (a batch) once this loop iteration's input is
// read, or, while the room's previous batch is in flight, when that one
// is answered.  So a quiet room's message leaves at once, and a busy
// room's messages share one script call, one TIME, one history append
// and one PUBLISH: Redis's work per message shrinks as the load grows.
// Per room the order is the arrival order, so a sender's messages keep
// theirs; any other command about the room (sync, leave, state, settle)
// sends the room's queue first (flush_publishes), so Redis runs the
// room's commands in the order they were given, as without batches.
void app::publish(member& m, const publish_ctx& base, std::string&& body,
                  const std::string& type) {
    publish_ctx ctx = base;
    ctx.deadline = uv_now(loop_) + cfg_.redis_timeout_ms / 2;
    ctx.agree = type == "agree";
    publish_queue& q = publishing_[m.room()];
    q.queued.push_back(
        queued_publish{std::move(ctx), std::move(body), cfg_.kept(type)});
    if (q.inflight == 0 && q.queued.size() == 1) {
        publish_due_.push_back(m.room());
        if (publish_prepare_) {
            uv_prepare_start(publish_prepare_.get(), publish_prepare_cb);
        }
    }
}

void app::publish_prepare_cb(uv_prepare_t* p) {
    auto* self = static_cast<app*>(p->data);
    std::vector<std::string> due = std::exchange(self->publish_due_, {});
    for (const std::string& room : due) {
        auto it = self->publishing_.find(room);
        if (it != self->publishing_.end() && it->second.inflight == 0) {
            self->send_batch(room);
        }
    }
    if (self->publish_due_.empty()) {
        uv_prepare_stop(p);
    }
}

// Sends the room's queue now, whatever is in flight.
void app::flush_publishes(const std::string& room) {
    auto it = publishing_.find(room);
    while (it != publishing_.end() && !it->second.queued.empty()) {
        send_batch(room);
        it = publishing_.find(room);
    }
}

// One `publish` call for the head of the room's queue (at most
// max_batch_messages, max_batch_bytes), each message with its player,
// seq and deadline (in Redis's clock: the local one plus the measured
// offset).
void app::send_batch(const std::string& room) {
    constexpr size_t max_batch_messages = 64;
    constexpr size_t max_batch_bytes = 256 * 1024;

    auto it = publishing_.find(room);
    if (it == publishing_.end() || it->second.queued.empty()) {
        return;
    }
    publish_queue& q = it->second;
    const std::string& p = cfg_.key_prefix;
    std::vector<std::string> keys = room_keys(p, room);
    std::vector<std::string> args = {room_channel(p, room),
                                     std::to_string(cfg_.history_length),
                                     std::to_string(cfg_.room_ttl_ms)};
    auto batch = std::make_shared<std::vector<publish_ctx>>();
    size_t bytes = 0;
    while (!q.queued.empty() && batch->size() < max_batch_messages &&
           (batch->empty() ||
            bytes + q.queued.front().body.size() <= max_batch_bytes)) {
        queued_publish& qp = q.queued.front();
        std::string redis_deadline = "0";
        if (redis_->clock_known()) {
            int64_t d = static_cast<int64_t>(qp.ctx.deadline) +
                        redis_->redis_clock_offset_ms();
            redis_deadline = std::to_string(d > 0 ? d : 1);
        }
        bytes += qp.body.size();
        args.push_back(std::move(qp.body));
        args.push_back(qp.kept ? "1" : "0");
        args.push_back(qp.ctx.player);
        args.push_back(std::to_string(qp.ctx.seq));
        args.push_back(std::move(redis_deadline));
        args.push_back(qp.ctx.agree ? "1" : "0");
        batch->push_back(std::move(qp.ctx));
        q.queued.pop_front();
    }

    bool sent = redis_->eval(script_publish(), keys, args,
                            [this, room, batch](const redisReply* r) {
                                on_batch_reply(room, *batch, r);
                            });
    if (!sent) {
        log_warn("%zu messages not published, Redis unavailable room=%s",
                 batch->size(), room.c_str());
        for (const publish_ctx& ctx : *batch) {
            ack_unavailable(ctx);
        }
        if (q.queued.empty() && q.inflight == 0) {
            publishing_.erase(it);
        }
        return;
    }
    q.inflight++;
    log_debug("publish room=%s messages=%zu bytes=%zu", room.c_str(),
              batch->size(), bytes);
}

// One answer per message, in the batch's order; a reply that is not an
// array of them (an error, a lost connection) answers each alike.
void app::on_batch_reply(const std::string& room,
                         const std::vector<publish_ctx>& batch,
                         const redisReply* r) {
    bool each = r != nullptr && r->type == REDIS_REPLY_ARRAY;
    if (each && r->elements != batch.size()) {
        log_error("publish reply has %zu answers for %zu messages room=%s",
                  r->elements, batch.size(), room.c_str());
    }
    for (size_t i = 0; i < batch.size(); i++) {
        on_publish_reply(batch[i],
                         each && i < r->elements ? r->element[i] : r);
    }
    if (stopping_) {
        return;
    }
    auto it = publishing_.find(room);
    if (it == publishing_.end()) {
        return;
    }
    publish_queue& q = it->second;
    q.inflight--;
    if (q.queued.empty()) {
        if (q.inflight == 0) {
            publishing_.erase(it);
        }
        return;
    }
    if (q.inflight > 0) {
        return;  // the queue goes when the last one is answered
    }
    publish_due_.push_back(room);
    if (publish_prepare_) {
        uv_prepare_start(publish_prepare_.get(), publish_prepare_cb);
    }
}

void app::on_publish_reply(const publish_ctx& ctx, const redisReply* r) {
    if (stopping_) {
        return;  // the worker asks the next sidecar
    }
    if (r == nullptr) {
        if (redis_->timed_out()) {
            // Redis stopped answering: `settle` if it answers again soon,
            // else refused by its deadline (answer_late).
            late_.push_back(ctx);
            answer_late();
        } else {
            // The connection dropped: maybe published, maybe not.
            log_info("message in doubt (Redis connection lost) link=%llu "
                     "conn=%llu seq=%llu room=%s",
                     ull(ctx.link), ull(ctx.conn), ull(ctx.seq),
                     ctx.room.c_str());
            in_doubt_.push_back(ctx);
        }
        return;
    }
    switch (publish_outcome_of(*r)) {
    case publish_outcome::published:
        if (ctx.agree) {
            // shows the player ready, after the agree
            if (member* m = rooms_.find_mutable(member_key{ctx.link,
                                                           ctx.conn})) {
                m->ready = true;
            }
            state_changed(ctx.room);
        }
        stats_.published++;
        ack(ctx.link, ctx.conn, ctx.seq);  // published: its copy comes
        return;
    case publish_outcome::duplicate:
        log_info("message published before (sent again) link=%llu "
                 "conn=%llu seq=%llu room=%s",
                 ull(ctx.link), ull(ctx.conn), ull(ctx.seq),
                 ctx.room.c_str());
        ack(ctx.link, ctx.conn, ctx.seq);
        return;
    case publish_outcome::failed:
        log_error("publish failed link=%llu conn=%llu room=%s: %.*s",
                  ull(ctx.link), ull(ctx.conn), ctx.room.c_str(),
                  static_cast<int>(r->len), r->str);
        break;
    case publish_outcome::refused:
        log_warn("message refused by Redis (past its deadline) link=%llu "
                 "conn=%llu seq=%llu room=%s",
                 ull(ctx.link), ull(ctx.conn), ull(ctx.seq),
                 ctx.room.c_str());
        break;
    }
    ack_unavailable(ctx);
}

// Asks Redis whether the message was published, and makes sure it never
// will be if not.  Without Redis the question waits.
void app::settle(const publish_ctx& ctx) {
    flush_publishes(ctx.room);
    const std::string& p = cfg_.key_prefix;
    bool sent = redis_->eval(
        script_settle(), {room_key(p, ctx.room, "senders")},
        {ctx.player, std::to_string(ctx.seq)},
        [this, ctx](const redisReply* r) {
            if (stopping_) {
                return;
            }
            std::optional<bool> published;
            if (r != nullptr) {
                published = settle_outcome_of(*r);
            }
            if (!published) {
                if (r != nullptr) {
                    log_error("settle failed room=%s", ctx.room.c_str());
                }
                in_doubt_.push_back(ctx);
                return;
            }
            log_info("message settled link=%llu conn=%llu seq=%llu "
                     "room=%s: %s",
                     ull(ctx.link), ull(ctx.conn), ull(ctx.seq),
                     ctx.room.c_str(),
                     *published ? "published" : "not published");
            if (*published) {
                ack(ctx.link, ctx.conn, ctx.seq);
            } else {
                ack_unavailable(ctx);
            }
        });
    if (!sent) {
        in_doubt_.push_back(ctx);
    }
}

// Redis answers again: every message in doubt, or given up with a hung
// connection and not answered yet, is settled.
void app::settle_in_doubt() {
    std::vector<publish_ctx> todo = std::exchange(in_doubt_, {});
    for (publish_ctx& ctx : late_) {
        todo.push_back(std::move(ctx));
    }
    late_.clear();
    if (!todo.empty()) {
        log_info("settling %zu messages in doubt", todo.size());
    }
    for (const publish_ctx& ctx : todo) {
        settle(ctx);
    }
}

// "unavailable" for each late message T/4 past its deadline (Redis gave
// no sign of life since: the script will refuse it); the timer is armed
// for the next one.
void app::answer_late() {
    uint64_t now = uv_now(loop_);
    uint64_t grace = cfg_.redis_timeout_ms / 4;
    while (!late_.empty() && late_.front().deadline + grace <= now) {
        publish_ctx ctx = std::move(late_.front());
        late_.pop_front();
        ack_unavailable(ctx);
    }
    if (late_.empty() || !late_timer_) {
        return;
    }
    uv_timer_start(late_timer_.get(), late_timer_cb,
                   late_.front().deadline + grace - now, 0);
}

void app::late_timer_cb(uv_timer_t* t) {
    static_cast<app*>(t->data)->answer_late();
}

void app::ack_unavailable(const publish_ctx& ctx) {
    stats_.unavailable++;
    ack(ctx.link, ctx.conn, ctx.seq,
        make_error("unavailable", unavailable_text, ctx.ref));
}

void app::ack(uint64_t link_id, uint64_t conn, uint64_t seq,
              std::string_view error) {
    link* l = links_.find(link_id);
    if (l == nullptr) {
        return;  // the worker asks the next link
    }
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_ACK, conn);
    m.seq = seq;
    m.payload = ipc_str(error);
    l->send(m);
}

}  // namespace rooms
