#pragma once

// The sidecar's two Redis connections (hiredis async on the libuv loop):
// one for commands (PUBLISH; the publish script in a later milestone) and
// one for SUBSCRIBE.  Each connects with its own timeout, authenticates
// and selects the database when configured, and reconnects with backoff
// from a timer, with a new hiredis context every time (hiredis frees a
// context itself after its disconnect callback and after a failed
// connect).  The owner learns when each connection becomes usable or is
// lost, and resubscribes its rooms then.

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config.h"
#include "redis_scripts.h"
#include "uv_handle.h"

struct redisAsyncContext;
struct redisReply;

namespace rooms {

class redis_client;

class redis_connection {
public:
    enum class role { command, subscriber };

    redis_connection(uv_loop_t* loop, const redis_address& addr, role r,
                     redis_client& owner, uint64_t backoff_min_ms,
                     uint64_t backoff_max_ms);
    ~redis_connection();

    redis_connection(const redis_connection&) = delete;
    redis_connection& operator=(const redis_connection&) = delete;

    void start();
    void stop();

    // Connected and past AUTH/SELECT.
    bool ready() const { return state_ == state::ready; }
    redisAsyncContext* context() const { return ac_; }
    const char* name() const;

private:
    enum class state { idle, connecting, handshaking, ready, waiting,
                       stopped };

    void connect();
    void connect_failed(const char* why);
    void handshake();
    void became_ready();
    void retry_later();
    void abandon();

    static void connect_cb(const redisAsyncContext* ac, int status);
    static void disconnect_cb(const redisAsyncContext* ac, int status);
    static void handshake_cb(redisAsyncContext* ac, void* reply,
                             void* privdata);
    static void timer_cb(uv_timer_t* t);

    uv_loop_t* loop_;
    const redis_address& addr_;
    role role_;
    redis_client& owner_;
    state state_ = state::idle;
    redisAsyncContext* ac_ = nullptr;
    uv_ptr<uv_timer_t> timer_;
    unsigned handshake_left_ = 0;
    uint64_t backoff_ms_;
    uint64_t backoff_min_ms_;
    uint64_t backoff_max_ms_;
    unsigned failures_ = 0;
};

class redis_client {
public:
    class handler {
    public:
        // A connection became usable (subscriber: resubscribe now).
        virtual void on_redis_ready(redis_connection::role r) = 0;
        // A usable connection was lost (subscriber: every subscription
        // is gone).
        virtual void on_redis_lost(redis_connection::role r) = 0;
        // Redis confirmed the latest SUBSCRIBE of this channel.
        virtual void on_subscribed(std::string_view channel) = 0;
        // A message on a subscribed channel.
        virtual void on_message(std::string_view channel,
                                std::string_view payload) = 0;

    protected:
        ~handler() = default;
    };

    // A command's reply; nullptr when the command failed without one
    // (the connection was lost with it in flight).  Not called once the
    // client is stopped.
    using reply_fn = std::function<void(const redisReply*)>;

    // A barrier's outcome: true once the subscriber connection has
    // delivered everything Redis sent on it before the barrier; false
    // when that connection was lost first.
    using barrier_fn = std::function<void(bool ok)>;

    redis_client(uv_loop_t* loop, const redis_address& addr, handler& h,
                 uint64_t backoff_min_ms = 100,
                 uint64_t backoff_max_ms = 5000);

    redis_client(const redis_client&) = delete;
    redis_client& operator=(const redis_client&) = delete;

    void start();
    void stop();

    bool commands_ready() const { return cmd_.ready(); }

    // True while the NULL-reply callbacks of a command connection that
    // was given up for not answering are being run (the lead's stub; the
    // redis timeout work fills it in).
    bool timed_out() const { return false; }

    // Redis's wall clock in ms minus uv_now(), once measured.
    bool clock_known() const { return false; }
    int64_t redis_clock_offset_ms() const { return 0; }
    bool subscriber_ready() const { return sub_.ready(); }

    // Runs a script on the command connection: EVALSHA once its SCRIPT
    // LOAD answered, EVAL before that, and EVAL again (which reloads it)
    // after a NOSCRIPT.  False when the command connection is not usable
    // (cb is not called then).  Commands run in the order they are given.
    bool eval(const lua_script& script, const std::vector<std::string>& keys,
              const std::vector<std::string>& args, reply_fn cb);

    // Any command on the command connection.
    bool command(const std::vector<std::string>& argv, reply_fn cb);

    // False when the subscriber connection is not usable; the owner
    // resubscribes from on_redis_ready().
    bool subscribe(std::string_view channel);
    bool unsubscribe(std::string_view channel);

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

private:
    friend class redis_connection;

    void connection_ready(redis_connection::role r);
    void connection_lost(redis_connection::role r);

    struct call;

    bool send(std::unique_ptr<call> c);
    void load_scripts();

    static void command_cb(redisAsyncContext* ac, void* reply,
                           void* privdata);
    static void subscribe_cb(redisAsyncContext* ac, void* reply,
                             void* privdata);

    handler& handler_;
    redis_address addr_;
    bool stopped_ = false;
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
};

}  // namespace rooms
