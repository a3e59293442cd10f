#include "app.h"

#include <hiredis/hiredis.h>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <random>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "app_util.h"
#include "envelope.h"
#include "keys.h"
#include "link_rules.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_scripts.h"
#include "sd_notify.h"
#include "socket_activation.h"

namespace rooms {

namespace {

// One Redis (its address, or its master through Sentinel), or a Redis
// Cluster seeded by that address.
std::unique_ptr<redis_backend> make_redis(uv_loop_t* loop, const config& cfg,
                                          redis_backend::handler& h) {
    redis_options opts{.backoff_min_ms = cfg.redis_backoff_min_ms,
                       .backoff_max_ms = cfg.redis_backoff_max_ms,
                       .timeout_ms = cfg.redis_timeout_ms,
                       .max_pending = cfg.redis_max_pending,
                       .sentinel = &cfg.sentinel};
    if (cfg.redis_cluster) {
        return std::make_unique<redis_cluster>(loop, cfg.redis, h, opts);
    }
    auto one = std::make_unique<redis_client>(loop, cfg.redis, h, opts);
    one->set_barrier_channel(
        server_key(cfg.key_prefix, cfg.server_id, "barrier"));
    return one;
}

}  // namespace

app::app(uv_loop_t* loop, const config& cfg)
    : loop_(loop),
      cfg_(cfg),
      links_(loop, *this),
      redis_(make_redis(loop, cfg_, *this)) {
    std::random_device rd;
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%08x%08x", rd(), rd());
    epoch_candidate_ = hex;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    start_time_ = static_cast<double>(ts.tv_sec) +
                  static_cast<double>(ts.tv_nsec) / 1e9;
}

app::~app() {
    stop();
}

bool app::start(int listen_fd, std::string& err) {
    if (!install_signal(sigterm_, SIGTERM, err) ||
        !install_signal(sigint_, SIGINT, err)) {
        return false;
    }
    std::string where = cfg_.listen;
    std::string how = "bound here";
    if (listen_fd >= 0) {
        if (!check_listen_socket(listen_fd, where, err) ||
            !links_.adopt(listen_fd, err)) {
            err = "socket activation: " + err;
            return false;
        }
        how = "socket activation, inherited fd " + std::to_string(listen_fd);
        if (where != cfg_.listen) {
            log_warn("the inherited socket is %s, not listen %s: "
                     "rooms_sidecar in nginx.conf must name the former",
                     where.c_str(), cfg_.listen.c_str());
        }
    } else if (!links_.listen(cfg_.listen, cfg_.socket_mode, err)) {
        return false;
    }
    started_ = true;
    start_heartbeat();
    start_state_timer();
    int rc = 0;
    for (uv_ptr<uv_timer_t>* t : {&sync_retry_, &stale_reap_, &late_timer_,
                                   &startup_timer_, &touch_timer_,
                                   &trim_timer_}) {
        *t = make_uv_timer(loop_, this, rc);
        if (!*t) {
            err = std::string("cannot create a timer: ") + uv_strerror(rc);
            return false;
        }
    }
    publish_prepare_ = make_uv_handle<uv_prepare_t>(
        [&](uv_prepare_t* h) { return uv_prepare_init(loop_, h); }, rc,
        this);
    if (!publish_prepare_) {
        err = std::string("cannot create a prepare handle: ") +
              uv_strerror(rc);
        return false;
    }
    uv_timer_start(startup_timer_.get(), startup_timer_cb,
                   cfg_.redis_timeout_ms, 0);
    if (cfg_.room_ttl_ms > 0) {
        uint64_t every = std::max<uint64_t>(cfg_.room_ttl_ms / 4, 250);
        uv_timer_start(touch_timer_.get(), touch_timer_cb, every, every);
    }
    redis_->start();

    log_info("ready: listening on %s (%s) server_id=%s key_prefix=\"%s\"",
             where.c_str(), how.c_str(), cfg_.server_id.c_str(),
             cfg_.key_prefix.c_str());
    sd_notify_send("READY=1");
    return true;
}

void app::stop() {
    if (stopping_) {
        return;
    }
    stopping_ = true;
    if (started_) {
        log_info("stopping");
        sd_notify_send("STOPPING=1");
    }
    links_.close();
    redis_->stop();
    heartbeat_.reset();
    state_timer_.reset();
    sync_retry_.reset();
    stale_reap_.reset();
    late_timer_.reset();
    startup_timer_.reset();
    touch_timer_.reset();
    trim_timer_.reset();
    publish_prepare_.reset();
    sigterm_.reset();
    sigint_.reset();
}

bool app::install_signal(uv_ptr<uv_signal_t>& h, int signum,
                         std::string& err) {
    int rc = 0;
    h = make_uv_handle<uv_signal_t>(
        [&](uv_signal_t* s) { return uv_signal_init(loop_, s); }, rc, this);
    if (h) {
        rc = uv_signal_start(h.get(), signal_cb, signum);
    }
    if (rc < 0) {
        err = std::string("cannot handle signal: ") + uv_strerror(rc);
        return false;
    }
    return true;
}

void app::signal_cb(uv_signal_t* h, int signum) {
    auto* self = static_cast<app*>(h->data);
    log_info("signal %d received", signum);
    self->stop();
}

/* worker links */

void app::on_link_frame(link& l, const ngx_rooms_ipc_msg_t& msg) {
    if (const char* fault = link_frame_fault(msg, l.greeted())) {
        log_error("closing link=%llu pid=%u: %s (frame type=0x%02x "
                  "conn=%llu version=%u)",
                  ull(l.id()), l.greeted() ? l.pid() : msg.pid, fault,
                  msg.type, ull(msg.id), msg.version);
        stats_.link_faults++;
        l.close_later(fault);
        return;
    }

    switch (msg.type) {
    case NGX_ROOMS_IPC_HELLO:
        on_hello(l, msg);
        break;
    case NGX_ROOMS_IPC_OPEN:
        on_open(l, msg);
        break;
    case NGX_ROOMS_IPC_MESSAGE:
        on_client_message(l, msg);
        break;
    case NGX_ROOMS_IPC_CLOSE:
        on_client_close(l, msg);
        break;
    case NGX_ROOMS_IPC_ROOMS:
        on_rooms(l, msg);
        break;
    case NGX_ROOMS_IPC_STATS:
        on_stats(l, msg);
        break;
    default:
        log_debug("skipping frame type=0x%02x link=%llu pid=%u", msg.type,
                  ull(l.id()), l.pid());
        break;
    }
}

void app::on_hello(link& l, const ngx_rooms_ipc_msg_t& msg) {
    if (l.greeted()) {
        log_warn("second HELLO ignored link=%llu pid=%u", ull(l.id()),
                 l.pid());
        return;
    }
    l.greet(msg.pid);
    log_info("hello link=%llu pid=%u", ull(l.id()), msg.pid);

    if (!links_open_) {
        unanswered_hellos_.push_back(l.id());
        return;
    }
    send_hello_ack(l);
}

void app::send_hello_ack(link& l) {
    ngx_rooms_ipc_msg_t ack = ipc_msg(NGX_ROOMS_IPC_HELLO_ACK, 0);
    ack.version = NGX_ROOMS_IPC_VERSION;
    ack.pid = static_cast<uint32_t>(getpid());
    l.send(ack);
}

void app::open_links(const char* why) {
    if (links_open_) {
        return;
    }
    links_open_ = true;
    if (startup_timer_) {
        uv_timer_stop(startup_timer_.get());
    }
    log_info("answering workers (%zu waiting): %s",
             unanswered_hellos_.size(), why);
    for (uint64_t id : std::exchange(unanswered_hellos_, {})) {
        if (link* l = links_.find(id)) {
            send_hello_ack(*l);
        }
    }
}

void app::startup_timer_cb(uv_timer_t* t) {
    static_cast<app*>(t->data)->open_links(
        "Redis not connected yet, serving without it");
}

void app::on_open(link& l, const ngx_rooms_ipc_msg_t& msg) {
    std::string_view room = view(msg.room);
    std::string_view name = view(msg.name);
    std::string_view player = view(msg.player);
    member_key key{l.id(), msg.id};

    // The worker mints player ids: the same for the life of the
    // connection, whatever sidecar serves it.
    auto res = rooms_.join(key, room, name, player, msg.flags,
                           msg.since);
    membership_changed();
    log_info("open link=%llu conn=%llu room=%.*s id=%.*s name=\"%.*s\"%s",
             ull(l.id()), ull(msg.id), len(room), room.data(), len(player),
             player.data(), len(name), name.data(),
             (msg.flags & NGX_ROOMS_IPC_F_RESUME) ? " resume" : "");

    switch (res) {
    case room_registry::join_result::duplicate:
        log_warn("duplicate OPEN ignored link=%llu conn=%llu room=%.*s",
                 ull(l.id()), ull(msg.id), len(room), room.data());
        break;
    case room_registry::join_result::subscribe:
        if (!redis_->subscribe(room_channel(cfg_.key_prefix, room))) {
            log_warn("room waits for Redis room=%.*s link=%llu conn=%llu",
                     len(room), room.data(), ull(l.id()), ull(msg.id));
        }
        break;
    case room_registry::join_result::wait:
        break;
    case room_registry::join_result::ready:
        rooms_.push_pending(room, key);
        sync_room(std::string(room));
        break;
    case room_registry::join_result::resync:
        sync_room(std::string(room));
        break;
    }
}

void app::send_text(link& l, uint64_t conn, std::string_view payload) {
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_SEND, conn);
    m.payload = ipc_str(payload);
    l.send(m);
}

void app::on_client_close(link& l, const ngx_rooms_ipc_msg_t& msg) {
    auto res = rooms_.leave(member_key{l.id(), msg.id});
    membership_changed();
    if (!res.found) {
        log_debug("close for unknown conn link=%llu conn=%llu", ull(l.id()),
                  ull(msg.id));
        return;
    }
    log_info("close link=%llu conn=%llu room=%s id=%s", ull(l.id()),
             ull(msg.id), res.room.c_str(), res.player_id.c_str());
    presence_leave(res.room, res.player_id, res.room_empty, true);
    if (res.room_empty) {
        room_emptied(res.room);
    }
}

// The figures of the moment, from memory: no Redis round trip, so that
// the page answers while Redis does not.
void app::on_stats(link& l, const ngx_rooms_ipc_msg_t& msg) {
    sidecar_gauges g;
    g.rooms = rooms_.room_count_total();
    g.members = rooms_.member_count();
    g.links = links_.link_count();
    g.redis_command_up = redis_->commands_ready();
    g.redis_subscriber_up = redis_->subscriber_ready();
    g.start_time = start_time_;
    std::string body = render_metrics(stats_, redis_->stats(), g);
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_STATS_REPLY, msg.id);
    m.payload = ipc_str(body);
    l.send(m);
}

void app::on_link_closed(link& l) {
    auto left = rooms_.leave_link_members(l.id());
    membership_changed();
    if (!left.empty()) {
        log_info("link gone, members removed link=%llu pid=%u members=%zu",
                 ull(l.id()), l.pid(), left.size());
    }
    for (const auto& res : left) {
        presence_leave(res.room, res.player_id, res.room_empty, false);
        if (res.room_empty) {
            room_emptied(res.room);
        }
    }
}

// Joins and leaves come in bursts (a worker's clients resumed, a room
// list loaded, a deploy): the transient buffers of a burst (frames,
// replies, snapshots) leave holes in the heap that glibc keeps.  Once
// membership has been quiet for trim_after_ms, free pages go back to the
// kernel (malloc_trim), so that the RSS of an idle sidecar is what its
// members hold (docs/benchmarks.md: about 76 B a member at 20,000).
void app::membership_changed() {
    if (trim_timer_) {
        uv_timer_start(trim_timer_.get(), trim_timer_cb, trim_after_ms, 0);
    }
}

void app::trim_timer_cb(uv_timer_t*) {
    malloc_trim(0);
}

void app::room_emptied(const std::string& room) {
    log_debug("room empty, unsubscribing room=%s", room.c_str());
    waiting_.erase(room);  // their senders are gone
    if (!stopping_) {
        redis_->unsubscribe(room_channel(cfg_.key_prefix, room));
        touch_room(room);  // its keys live room_ttl from now
    }
}

/* Redis */

void app::on_redis_ready(redis_connection::role r) {
    if (redis_->commands_ready() && redis_->subscriber_ready()) {
        open_links("Redis is connected");
    }
    if (r == redis_connection::role::command) {
        pause_reaping("the Redis command connection is back");
        // What a previous run of this server left is cleared once the
        // workers had time to resume their clients (their players keep
        // their entries): then only those nobody resumed go.
        if (!stale_reap_armed_ && stale_reap_) {
            stale_reap_armed_ = true;
            uv_timer_start(stale_reap_.get(), stale_reap_cb,
                           cfg_.resume_grace_ms, 0);
        }
        heartbeat();
        flush_leaves();
        settle_in_doubt();
        sync_all_rooms(false);
        flush_states();
        return;
    }
    std::vector<std::string> codes = rooms_.room_codes();
    if (!codes.empty()) {
        log_info("resubscribing rooms=%zu", codes.size());
    }
    for (const std::string& code : codes) {
        redis_->subscribe(room_channel(cfg_.key_prefix, code));
    }
}

void app::on_redis_lost(redis_connection::role r) {
    if (r != redis_connection::role::subscriber) {
        return;
    }
    // Attached members stay attached; what they miss until the
    // subscription is back is filled from history then (app_sync.cpp).
    sub_generation_++;
    rooms_.unsubscribe_all();
    // No confirmation will come: what waited for one goes now.
    std::vector<std::string> rooms;
    for (const auto& [room, msgs] : waiting_) {
        rooms.push_back(room);
    }
    for (const std::string& room : rooms) {
        release_waiting(room);
    }
}

void app::on_subscribed(std::string_view channel) {
    std::string_view room;
    if (!room_of_channel(cfg_.key_prefix, channel, room)) {
        return;
    }
    std::vector<member_key> pending = rooms_.subscribed(room);
    log_debug("subscribed room=%.*s pending=%zu", len(room), room.data(),
              pending.size());
    rooms_.requeue(room, pending);
    std::string code(room);
    sync_room(code);
    release_waiting(code);
}

// One room's subscription is gone while the others stay (a Redis Cluster
// node lost, or the room's slot moved): as after the subscriber's loss,
// for this room only.  Its snapshots in flight are void (buffer_gen), its
// attached members get the gap filled once the backend has subscribed it
// again where its slot is now (on_subscribed).
void app::on_subscription_lost(std::string_view channel) {
    std::string_view room;
    if (!room_of_channel(cfg_.key_prefix, channel, room)) {
        return;
    }
    log_info("subscription lost room=%.*s", len(room), room.data());
    if (room_sync* rs = rooms_.unsubscribe(room)) {
        rs->buffer_gen++;
    }
    release_waiting(std::string(room));
}

// A message on a room's channel holds one or more envelopes, in id order,
// one per line (a `publish` batch; JSON text has no raw newline).
void app::on_message(std::string_view channel, std::string_view payload) {
    std::string_view room;
    if (!room_of_channel(cfg_.key_prefix, channel, room)) {
        return;
    }
    while (!payload.empty()) {
        size_t nl = payload.find('\n');
        on_envelope(room, payload.substr(0, nl));
        if (nl == std::string_view::npos) {
            break;
        }
        payload.remove_prefix(nl + 1);
    }
}

void app::on_envelope(std::string_view room, std::string_view payload) {
    room_sync* rs = rooms_.sync_of(room);
    if (rs == nullptr) {
        return;
    }
    uint64_t id = envelope_tail_id(payload);
    if (rs->inflight > 0 || rs->resync) {
        buffer_live(room, *rs, id, payload);
    }
    if (rs->resync) {
        return;  // held until the gap is filled
    }
    if (id > rs->last_id) {
        rs->last_id = id;
        rs->last_hash = message_hash(payload);
    }
    broadcast(room, payload, id);
}

// One frame for every link: the payload is copied once, never parsed.
// `id` tells the worker where the room's stream now is (0: unchanged).
void app::broadcast(std::string_view room, std::string_view payload,
                    uint64_t id) {
    const std::vector<link_members>* targets = rooms_.attached_links(room);
    if (targets == nullptr) {
        return;
    }
    frame_ptr frame = broadcast_frame(room, payload, id);
    if (!frame) {
        return;
    }
    for (const link_members& t : *targets) {
        if (link* l = links_.find(t.link)) {
            l->send(frame);
            stats_.broadcasts++;
            stats_.deliveries += t.attached;
        }
    }
}

// The same for some links only (a gap fill that differs per worker).
void app::broadcast_to(const std::vector<uint64_t>& links,
                       std::string_view room, std::string_view payload,
                       uint64_t id) {
    frame_ptr frame = broadcast_frame(room, payload, id);
    if (!frame) {
        return;
    }
    for (uint64_t link_id : links) {
        if (link* l = links_.find(link_id)) {
            l->send(frame);
            stats_.broadcasts++;
        }
    }
}

frame_ptr app::broadcast_frame(std::string_view room,
                               std::string_view payload, uint64_t id) {
    ngx_rooms_ipc_msg_t m = ipc_msg(NGX_ROOMS_IPC_BROADCAST, 0);
    m.room = ipc_str(room);
    m.last_id = id;
    m.payload = ipc_str(payload);
    frame_ptr frame = encode_frame(m);
    if (!frame) {
        log_error("cannot encode broadcast room=%.*s bytes=%zu", len(room),
                  room.data(), payload.size());
    }
    return frame;
}

}  // namespace rooms
