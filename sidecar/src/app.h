#pragma once

// The sidecar: wires the worker links, the room registry, the envelope
// rules and Redis together (docs/architecture.md, docs/protocol.md).
//
//   HELLO            remember the worker's pid, answer HELLO_ACK
//   OPEN             join (RESUME: the member is attached at once and the
//                    room's stream is filled from the worker's last id,
//                    app_sync.cpp); subscribe the room if it is new here;
//                    once the
//                    subscription is confirmed, one `sync` script
//                    registers the player and takes a snapshot; after a
//                    barrier on the subscriber connection,
//                    SEND(welcome), (reset), backfill, the live messages
//                    newer than the snapshot, ATTACH   (app_sync.cpp)
//   MESSAGE          rate limit, validate, stamp `from`, `publish` script
//                    (never local delivery); exactly one ACK per message,
//                    with the error if it was refused (app_publish.cpp)
//   Redis message    one BROADCAST per link with attached members
//   CLOSE / link     leave (`leave` script); unsubscribe an emptied room
//   ROOMS            ROOMS_REPLY with the global rooms (Redis)
//   STATS            STATS_REPLY with this sidecar's metrics (metrics.h)
//   timer            heartbeat, reap dead servers   (app_presence.cpp)
//   presence change  `state` now or at the end of the room's interval
//                    (app_state.cpp)
//
// Redis scripts and keys: redis_scripts.cpp, docs/redis.md.

#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "backfill.h"
#include "config.h"
#include "link_server.h"
#include "metrics.h"
#include "redis_client.h"
#include "room_registry.h"
#include "state_throttle.h"
#include "uv_handle.h"

struct redisReply;

namespace rooms {

struct room_snapshot;
struct index_count;

class app final : public link_handler, public redis_backend::handler {
public:
    app(uv_loop_t* loop, const config& cfg);
    ~app();

    app(const app&) = delete;
    app& operator=(const app&) = delete;

    // Listens (on listen_fd if systemd passed one, else on cfg.listen),
    // installs the signal handlers, starts Redis, reports ready.
    bool start(int listen_fd, std::string& err);

    // Closes everything so that the loop runs empty.  Idempotent.
    void stop();

private:
    // link_handler
    void on_link_frame(link& l, const ngx_rooms_ipc_msg_t& msg) override;
    void on_link_closed(link& l) override;

    // redis_backend::handler
    void on_redis_ready(redis_connection::role r) override;
    void on_redis_lost(redis_connection::role r) override;
    void on_subscribed(std::string_view channel) override;
    void on_subscription_lost(std::string_view channel) override;
    void on_message(std::string_view channel,
                    std::string_view payload) override;

    void on_hello(link& l, const ngx_rooms_ipc_msg_t& msg);
    void send_hello_ack(link& l);
    void open_links(const char* why);
    static void startup_timer_cb(uv_timer_t* t);
    void on_open(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_client_message(link& l, const ngx_rooms_ipc_msg_t& msg);
    void process_message(link& l, uint64_t conn, uint64_t seq,
                         unsigned flags, std::string_view payload);
    void release_waiting(const std::string& room);

    // A client message that waits for its room's subscription to be
    // confirmed (a restarted sidecar, a new room): published before it,
    // its copy would not come back live.
    struct waiting_message {
        uint64_t link = 0;
        uint64_t conn = 0;
        uint64_t seq = 0;
        unsigned flags = 0;
        std::string payload;
    };

    // One client message on its way to Redis, until it is answered.
    struct publish_ctx {
        uint64_t link = 0;
        uint64_t conn = 0;
        uint64_t seq = 0;
        std::string room;
        std::string player;
        std::string ref;
        uint64_t deadline = 0;  // uv_now() after which Redis refuses it
        bool agree = false;     // shows the player ready once published
    };

    // A message admitted, waiting for its room's next `publish` batch.
    struct queued_publish {
        publish_ctx ctx;
        std::string body;
        bool kept = false;  // its type goes to the history
    };

    // A room's batches: one in flight at a time; the messages that come
    // meanwhile wait, and go together as the next one (flush_publishes()
    // sends more).
    struct publish_queue {
        std::deque<queued_publish> queued;
        unsigned inflight = 0;
    };

    // app_publish.cpp: batches and answers (docs/redis.md "Answers").
    void publish(member& m, const publish_ctx& ctx, std::string&& body,
                 const std::string& type);
    void send_batch(const std::string& room);
    void flush_publishes(const std::string& room);
    void on_batch_reply(const std::string& room,
                        const std::vector<publish_ctx>& batch,
                        const redisReply* r);
    static void publish_prepare_cb(uv_prepare_t* p);
    void on_publish_reply(const publish_ctx& ctx, const redisReply* r);
    void settle(const publish_ctx& ctx);
    void settle_in_doubt();
    void answer_late();
    void ack(uint64_t link_id, uint64_t conn, uint64_t seq,
             std::string_view error = {});
    void ack_unavailable(const publish_ctx& ctx);
    static void late_timer_cb(uv_timer_t* t);
    void on_client_close(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_rooms(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_stats(link& l, const ngx_rooms_ipc_msg_t& msg);

    struct sync_request {
        std::string room;
        uint64_t incarnation = 0;
        uint64_t generation = 0;
        std::vector<member_key> joiners;
        size_t start = 0;          // absolute buffer index at issue time
        uint64_t buffer_gen = 0;   // room_sync::buffer_gen at issue time
        bool resync = false;
        std::string replid;        // of the Redis it was sent to
    };

    // A `sync` reply, copied: it is used after the reply is freed.
    struct sync_snapshot {
        uint64_t seq = 0;
        uint64_t trimmed = 0;
        uint64_t fence = 0;
        std::string epoch;
        std::vector<std::string> history;  // oldest first
    };

    // app_sync.cpp: joins, snapshots, gap fills.
    void sync_room(const std::string& room, bool register_all = false);
    void on_sync_reply(const std::shared_ptr<sync_request>& req,
                       const redisReply* reply);
    void on_sync_barrier(const sync_request& req, const sync_snapshot& snap,
                         bool ok);
    void sync_failed(const sync_request& req, room_sync& rs);
    void apply_sync(const sync_request& req, const sync_snapshot& copy,
                    room_sync& rs);
    // Returns the id the member was attached at, none if not admitted.
    std::optional<uint64_t> admit(const member_key& key, const room_snapshot& snap,
                   const room_sync& rs, size_t start);
    void gap_fill(const sync_request& req, const room_snapshot& snap,
                  room_sync& rs, bool restarted);
    void remember_last(room_sync& rs,
                       const std::vector<history_entry>& history,
                       const std::vector<history_entry>& buffered);
    void note_position(const std::string& room, room_sync& rs,
                       uint64_t link_id, uint64_t at);
    void on_envelope(std::string_view room, std::string_view payload);
    void broadcast(std::string_view room, std::string_view payload,
                   uint64_t id);
    void broadcast_to(const std::vector<uint64_t>& links,
                      std::string_view room, std::string_view payload,
                      uint64_t id);
    frame_ptr broadcast_frame(std::string_view room,
                              std::string_view payload, uint64_t id);
    void schedule_sync_retry();
    static void sync_retry_cb(uv_timer_t* t);
    void drop_buffer_if_idle(room_sync& rs);
    void buffer_live(std::string_view room, room_sync& rs, uint64_t id,
                     std::string_view payload);
    void sync_all_rooms(bool register_all);

    // app_presence.cpp: leaves, heartbeat, dead servers, /rooms.
    // closed: the client said goodbye (CLOSE), its dedup record goes too;
    // not when its worker's link was lost (it may come back and resend).
    void presence_leave(const std::string& room,
                        const std::string& player_id, bool last_local,
                        bool closed);
    void flush_leaves();
    void start_heartbeat();
    void heartbeat();
    void touch_rooms();
    void touch_room(const std::string& room);
    static void touch_timer_cb(uv_timer_t* t);
    void reap(bool stale);
    void claim_server(const std::string& server_id);
    void reap_rooms(const std::string& server_id,
                    const std::vector<std::string>& codes, bool stale);
    static void stale_reap_cb(uv_timer_t* t);
    void pause_reaping(const char* why);
    void update_index(const std::string& room, const index_count& c);
    // GET /rooms: the buckets of the room index, read in one pipeline.
    struct rooms_read;
    void reply_rooms(const std::shared_ptr<rooms_read>& read);
    void reply_local_rooms(link& l, uint64_t request);
    static void heartbeat_cb(uv_timer_t* t);

    // app_state.cpp: coalesced `state` publications (state_throttle).
    void state_changed(const std::string& room);
    void publish_state(const std::string& room);
    void flush_states();
    void start_state_timer();
    void arm_state_timer();
    void prune_states();
    static void state_timer_cb(uv_timer_t* t);

    void send_text(link& l, uint64_t conn, std::string_view payload);
    void room_emptied(const std::string& room);
    void membership_changed();
    static void trim_timer_cb(uv_timer_t* t);
    static constexpr uint64_t trim_after_ms = 2000;

    bool install_signal(uv_ptr<uv_signal_t>& h, int signum,
                        std::string& err);
    static void signal_cb(uv_signal_t* h, int signum);

    uv_loop_t* loop_;
    config cfg_;
    room_registry rooms_;
    link_server links_;
    std::unique_ptr<redis_backend> redis_;  // one Redis, or a cluster
    uv_ptr<uv_signal_t> sigterm_;
    uv_ptr<uv_signal_t> sigint_;
    uv_ptr<uv_timer_t> heartbeat_;
    uv_ptr<uv_timer_t> state_timer_;  // the earliest trailing state
    uv_ptr<uv_timer_t> sync_retry_;   // failed syncs, with backoff
    uv_ptr<uv_timer_t> stale_reap_;   // once, after the resume grace
    uv_ptr<uv_timer_t> late_timer_;   // the earliest late answer
    uv_ptr<uv_timer_t> startup_timer_;  // links wait for Redis this long
    uv_ptr<uv_timer_t> touch_timer_;    // quiet rooms' keys kept alive
    uv_ptr<uv_timer_t> trim_timer_;     // the heap, after joins and leaves
    uv_ptr<uv_prepare_t> publish_prepare_;  // batches go before polling

    // Until both Redis connections are up after the start (at most
    // redis_timeout), HELLOs are not answered: a worker resuming its
    // clients after a restart holds their messages meanwhile, rather than
    // have them refused or published before the rooms are subscribed.
    bool links_open_ = false;
    std::vector<uint64_t> unanswered_hellos_;
    bool started_ = false;
    bool stopping_ = false;

    app_stats stats_;         // docs/metrics.md
    double start_time_ = 0;   // unix seconds

    struct pending_leave {
        std::string room;
        std::string player_id;
        bool last_local = false;
        bool closed = false;
    };

    uint64_t sub_generation_ = 0;  // bumped when the subscriber is lost
    bool stale_reap_armed_ = false;  // the resume grace has started
    uint64_t sync_backoff_ms_ = 0;   // next sync retry delay (0: none yet)
    bool heartbeat_seen_ = false;  // a heartbeat has been answered
    uint64_t reap_paused_until_ = 0;  // uv_now(): no `reap dead` before
    bool being_reaped_ = false;  // a reaper held our claim at the last beat
    std::string epoch_candidate_;  // this process's run token (presence),
                                   // and its room epoch proposals' prefix
    uint64_t epoch_serial_ = 0;    // makes each epoch proposal unique
    std::vector<pending_leave> leaves_;  // not yet told to Redis
    state_throttle states_;
    std::set<std::string> unsent_states_;  // Redis was down: retry

    // Messages whose Redis connection dropped with them in flight: their
    // fate is asked (`settle`) once the command connection is back.
    std::vector<publish_ctx> in_doubt_;
    // Messages whose Redis stopped answering: "unavailable" once their
    // deadline passed (Redis refuses them after it), in deadline order.
    std::deque<publish_ctx> late_;
    // Per room, messages waiting for its subscription, in arrival order.
    std::unordered_map<std::string, std::deque<waiting_message>> waiting_;
    // Per room, messages on their way to Redis (app_publish.cpp), and the
    // rooms whose queue goes once this loop iteration's input is read.
    std::unordered_map<std::string, publish_queue> publishing_;
    std::vector<std::string> publish_due_;
};

}  // namespace rooms
