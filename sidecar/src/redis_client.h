#pragma once

// The sidecar's two Redis connections (hiredis async on the libuv loop):
// one for commands (PUBLISH; the publish script in a later milestone) and
// one for SUBSCRIBE.  Each connects with its own timeout, authenticates
// and selects the database when configured, and reconnects with backoff
// from a timer, with a new hiredis context every time (hiredis frees a
// context itself after its disconnect callback and after a failed
// connect).  The owner learns when each connection becomes usable or is
// lost, and resubscribes its rooms then.
//
// A Redis that stops answering (stopped, swapping, a network path that
// drops packets) is noticed within `timeout_ms`: every connection keeps
// the send times of its outstanding requests (deadline_tracker.h) and
// probes when idle; one whose oldest request waited for the timeout is
// abandoned (its pending callbacks get a NULL reply), reported lost like a
// dropped one, and replaced.  A new connection counts as ready only once
// Redis answered its handshake: a stopped Redis still accepts TCP
// connects (the kernel's listen backlog).
//
// With Sentinel (sentinel.h), each connect first asks the sentinels where
// the master is, and the handshake checks that the server it reached is
// a master; from a failover's start until its new master is announced no
// command goes out (eval() and command() return false).

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config.h"
#include "deadline_tracker.h"
#include "metrics.h"
#include "reconnect_backoff.h"
#include "redis_scripts.h"
#include "sentinel.h"
#include "uv_handle.h"

struct redisAsyncContext;
struct redisReply;

namespace rooms {

class redis_client;

// Reconnects and timeouts (docs/sidecar.md).
struct redis_options {
    uint64_t backoff_min_ms = 50;    // first reconnect delay, doubling
    uint64_t backoff_max_ms = 1000;  // largest reconnect delay
    uint64_t timeout_ms = 2000;      // a connect, a handshake, any reply
    size_t max_pending = 100000;     // commands outstanding, at most
    // Master discovery (nullptr or no sentinels: the address as given).
    const sentinel_settings* sentinel = nullptr;
    // false: a command connection only (a Redis Cluster node's: its
    // sharded subscriptions are cluster_subscriber's).
    bool subscriber = true;
    // Redis Cluster: the scripts SPUBLISH (sharded_script()).
    bool sharded = false;
};

class redis_connection {
public:
    enum class role { command, subscriber };

    redis_connection(uv_loop_t* loop, const redis_address& addr, role r,
                     redis_client& owner, const redis_options& opts);
    ~redis_connection();

    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;

    void start();
    void stop();
    // The sentinels announced a new master: a connection to another
    // server is left (the command connection drains first) and
    // reconnected through the sentinels.
    void master_moved(const host_port& master);
    // The same from one of its own callbacks (on the next loop turn).
    void leave_soon(const host_port& master);
    bool draining() const { return state_ == state::draining; }
    // Connected or connecting to that address.
    bool at(const host_port& master) const {
        return target_.host == master.host && target_.port == master.port;
    }

    // Connected, past AUTH/SELECT, and Redis answered the handshake.
    bool ready() const { return state_ == state::ready; }
    redisAsyncContext* context() const { return ac_; }
    const char* name() const;

    // Every request sent with a reply to come calls sent(), and its
    // callback answered() when the reply (not a NULL one) is in.
    void sent() { pending_.push(uv_now(loop_)); }
    void answered() { pending_.pop(); }
    size_t outstanding() const { return pending_.size(); }

private:
    // draining: the master moved; no new command goes out, the answers
    // of those in flight are awaited (up to timeout_ms), then it closes.
    enum class state { idle, resolving, connecting, handshaking, ready,
                       draining, waiting, stopped };

    void connect();
    void resolved(std::optional<host_port> master);
    void open();
    void connect_failed(const char* why);
    void handshake();
    void handshake_step_done();
    void became_ready();
    void check_health();
    void retry_later();
    void abandon();

    static void connect_cb(const redisAsyncContext* ac, int status);
    static void disconnect_cb(const redisAsyncContext* ac, int status);
    static void handshake_cb(redisAsyncContext* ac, void* reply,
                             void* privdata);
    static redis_connection* handshake_reply(redisAsyncContext* ac,
                                             const redisReply* reply,
                                             void* privdata);
    static void info_cb(redisAsyncContext* ac, void* reply, void* privdata);
    static void probe_cb(redisAsyncContext* ac, void* reply,
                         void* privdata);
    static void timer_cb(uv_timer_t* t);

    // Handshake and probe replies: pops the request, and takes a TIME
    // reply as a clock sample.
    void took_reply(const redisReply* reply);

    uv_loop_t* loop_;
    const redis_address& addr_;
    redis_address target_;  // addr_, or the master the sentinels named
    role role_;
    redis_client& owner_;
    const redis_options& opts_;
    state state_ = state::idle;
    redisAsyncContext* ac_ = nullptr;
    // Connect and handshake timeout, reconnect delay, and while ready the
    // health checks.
    uv_ptr<uv_timer_t> timer_;
    deadline_tracker pending_;
    uint64_t last_time_sent_ = 0;  // command: the last TIME (uv_now)
    std::optional<host_port> leaving_to_;  // leave_soon()
    unsigned handshake_left_ = 0;
    reconnect_backoff backoff_;
};

// What the sidecar asks of Redis, whether one server (redis_client) or a
// Redis Cluster (redis_cluster, cluster.h).
class redis_backend {
public:
    class handler {
    public:
        // A connection became usable (subscriber: resubscribe now).
        virtual void on_redis_ready(redis_connection::role r) = 0;
        // A usable connection was lost: closed, reset, or given up
        // because Redis stopped answering (timed_out() is true then).
        // Subscriber: every subscription is gone.
        virtual void on_redis_lost(redis_connection::role r) = 0;
        // Redis confirmed the latest SUBSCRIBE of this channel.
        virtual void on_subscribed(std::string_view channel) = 0;
        // A message on a subscribed channel.
        virtual void on_message(std::string_view channel,
                                std::string_view payload) = 0;
        // One channel's subscription is gone while the others stay (a
        // cluster node lost, or the channel's slot moved to another
        // node).  The backend subscribes it again where it now belongs:
        // on_subscribed() follows once that is confirmed.
        virtual void on_subscription_lost(std::string_view channel) = 0;

    protected:
        ~handler() = default;
    };

    // A command's reply; nullptr when the command failed without one
    // (the connection was lost or given up with it in flight).  Not
    // called once the client is stopped.
    using reply_fn = std::function<void(const redisReply*)>;

    // A barrier's outcome: true once the subscriber connection has
    // delivered everything Redis sent on it before the barrier; false
    // when that connection was lost first.
    using barrier_fn = std::function<void(bool ok)>;

    virtual ~redis_backend() = default;

    virtual void start() = 0;
    virtual void stop() = 0;

    virtual bool commands_ready() const = 0;
    virtual bool subscriber_ready() const = 0;
    // The connection a channel's subscription goes on is up (one Redis:
    // the subscriber connection; a cluster: its slot's master's).
    virtual bool subscriber_ready(std::string_view channel) const = 0;
    virtual const redis_stats& stats() const = 0;
    virtual bool timed_out() const = 0;
    virtual int64_t redis_clock_offset_ms() const = 0;
    virtual bool clock_known() const = 0;
    // The replication id of the master a room's `sync` goes to (the
    // room's channel tells which, in a cluster); empty if unknown.
    virtual const std::string& replid_for(std::string_view channel) const = 0;

    virtual bool eval(const lua_script& script,
                      const std::vector<std::string>& keys,
                      const std::vector<std::string>& args, reply_fn cb) = 0;
    virtual bool command(const std::vector<std::string>& argv,
                         reply_fn cb) = 0;
    virtual bool subscribe(std::string_view channel) = 0;
    virtual bool unsubscribe(std::string_view channel) = 0;
    // After a room's snapshot (`sync`): the channel is the room's (a
    // cluster orders the room's node's subscriber connection; one Redis
    // its only one).
    virtual bool barrier(std::string_view channel, barrier_fn cb) = 0;
};

class redis_client final : public redis_backend {
public:
    redis_client(uv_loop_t* loop, const redis_address& addr, handler& h,
                 const redis_options& opts = {});
    ~redis_client();

    redis_client(const redis_client&) = delete;
    redis_client& operator=(const redis_client&) = delete;

    void start() override;
    void stop() override;

    // False also while a failover holds writes (sentinel_watch); the
    // handler's on_redis_ready(command) comes when it ends.
    bool commands_ready() const override {
        return cmd_.ready() && !holding_;
    }
    bool subscriber_ready() const override { return sub_.ready(); }
    bool subscriber_ready(std::string_view) const override {
        return sub_.ready();
    }

    // Latency, errors and reconnects so far (docs/metrics.md).
    const redis_stats& stats() const override { return stats_; }

    // True while the NULL-reply callbacks (and on_redis_lost(), and the
    // failed barriers) of a connection abandoned because Redis stopped
    // answering run; false for a connection Redis closed or reset.  So a
    // callback can tell "Redis hung: the command may still run later"
    // from "the connection dropped".
    bool timed_out() const override { return timed_out_; }

    // Redis's wall clock (unix ms) minus this loop's uv_now(), measured by
    // TIME on the command connection (in its handshake, when idle, and at
    // least every 10 s) and corrected by half the round trip: uv_now() +
    // offset is Redis's clock now, e.g. for a deadline a script checks
    // against redis.call('TIME').  Meaningful once clock_known().
    int64_t redis_clock_offset_ms() const override {
        return clock_offset_ms_;
    }
    bool clock_known() const override { return clock_known_; }

    // The replication id (`INFO replication`'s master_replid) of the
    // server the command connection reached in its latest handshake;
    // empty if it did not say.  A promoted replica (a failover) and a
    // restarted master have a new one (docs/redis.md "Sentinel").
    const std::string& master_replid() const { return replid_; }
    const std::string& replid_for(std::string_view) const override {
        return replid_;
    }

    // Runs a script on the command connection: EVALSHA once its SCRIPT
    // LOAD answered, EVAL before that.  False when the command connection
    // is not usable, or already has max_pending commands outstanding or
    // held (cb is not called then).  Commands run in the order they are
    // given, also across a flushed script cache: on the first NOSCRIPT the
    // client holds every command given after it, waits for the answers of
    // those in flight, then sends SCRIPT LOAD for every script, the
    // EVALSHAs that failed and the held commands, in their original order.
    // Once sent, cb is called exactly once: with the reply, or with
    // nullptr if the connection is lost or abandoned first (timed_out()
    // tells which).
    bool eval(const lua_script& script, const std::vector<std::string>& keys,
              const std::vector<std::string>& args, reply_fn cb) override;

    // Any command on the command connection.
    bool command(const std::vector<std::string>& argv,
                 reply_fn cb) override;

    // False when the subscriber connection is not usable; the owner
    // resubscribes from on_redis_ready().
    bool subscribe(std::string_view channel) override;
    bool unsubscribe(std::string_view channel) override;

    // The channel barrier() subscribes (nobody publishes on it).
    void set_barrier_channel(std::string channel) {
        barrier_channel_ = std::move(channel);
    }

    // Orders the subscriber connection after what the caller has seen on
    // the command connection: a SUBSCRIBE of the barrier channel, whose
    // confirmation Redis queues behind every message it has already
    // published to this connection.  cb(true) runs when it arrives (every
    // such message went to on_message() first), cb(false) if the
    // subscriber connection is lost before.  Barriers complete in the
    // order they were made.  False when the subscriber connection is not
    // usable (cb is not called then).
    bool barrier(barrier_fn cb);
    bool barrier(std::string_view, barrier_fn cb) override {
        return barrier(std::move(cb));
    }

private:
    friend class redis_connection;

    void connection_ready(redis_connection::role r);
    void master_moved(const host_port& master);
    void failover_hold(bool hold);
    void leave_subscriber();
    void connection_lost(redis_connection::role r);
    void clock_sample(uint64_t sent, uint64_t now, const redisReply* reply);
    void check_backlog();

    struct call;

    bool send(std::unique_ptr<call> c);
    bool write(std::unique_ptr<call>& c);
    void load_scripts();
    void resume_after_noscript();
    void fail_held();

    static void command_cb(redisAsyncContext* ac, void* reply,
                           void* privdata);
    static void subscribe_cb(redisAsyncContext* ac, void* reply,
                             void* privdata);

    handler& handler_;
    redis_address addr_;
    redis_options opts_;
    // Declared before the connections, which use it: destroyed after.
    std::unique_ptr<sentinel_resolver> sentinel_;
    std::unique_ptr<sentinel_watch> watch_;
    // A switch announced: where the subscriber connection goes once the
    // command connection has drained.
    std::optional<host_port> moved_to_;
    std::optional<host_port> last_switch_;  // the newest announced master
    std::string replid_;
    // A sentinel announced a failover: no command goes out until the new
    // master is known (sentinel_watch), at most failover_hold_max_ms.
    bool holding_ = false;
    static constexpr uint64_t failover_hold_max_ms = 30000;
    bool stopped_ = false;
    bool timed_out_ = false;
    bool clock_known_ = false;
    int64_t clock_offset_ms_ = 0;
    // Refusing commands since the command connection reached max_pending
    // outstanding (logged once; over once half of them are answered).
    bool backlogged_ = false;
    uint64_t refused_ = 0;
    redis_stats stats_;
    bool ever_ready_[2] = {false, false};  // per role
    redis_connection cmd_;
    redis_connection sub_;

    // SUBSCRIBEs sent and not yet confirmed, by channel: a room that is
    // left and joined again quickly has SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE
    // in flight, and only the last confirmation means subscribed.
    std::unordered_map<std::string, unsigned> unconfirmed_;

    std::string barrier_channel_;
    std::deque<barrier_fn> barriers_;  // sent, not yet confirmed

    // SHA1 of each script once SCRIPT LOAD answered on the current
    // command connection (empty: use EVAL).
    std::unordered_map<const lua_script*, std::string> sha_;

    // NOSCRIPT recovery: calls are numbered as they are written; from the
    // first NOSCRIPT until the answer of the call that was written last
    // then (recover_upto_), the EVALSHAs answered NOSCRIPT wait in
    // retry_, and calls given meanwhile in held_ (both in order).
    uint64_t sent_serial_ = 0;
    bool recovering_ = false;
    uint64_t recover_upto_ = 0;
    std::deque<std::unique_ptr<call>> retry_;
    std::deque<std::unique_ptr<call>> held_;
};

}  // namespace rooms
