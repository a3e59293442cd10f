#pragma once

// One Redis Cluster node's sharded Pub/Sub connection (docs/redis.md
// "Sharded Pub/Sub"): SSUBSCRIBE and SUNSUBSCRIBE of the rooms whose
// slots the node serves, their smessages, and barriers.
//
// Not hiredis's async API: 0.14.1 knows only subscribe/psubscribe among
// pushes, and an ssubscribe confirmation either runs the wrong callback
// or fails its assertion.  This is a connection of our own over a
// uv_tcp_t: requests formatted with redisFormatCommandArgv, replies read
// by hiredis's public redisReader, and what each reply means decided by
// sharded_dispatch (pure logic, unit-tested).
//
// Like redis_connection: it connects with a timeout, sends AUTH when
// there is a password and a PING, and is ready once Redis answered them
// (a stopped Redis still accepts TCP connects).  It reconnects with
// backoff until stop().  While ready it keeps the send times of its
// outstanding requests (deadline_tracker.h) and PINGs when idle; one
// whose oldest request waited timeout_ms is abandoned, reported lost
// like a closed one, and replaced.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "deadline_tracker.h"
#include "metrics.h"
#include "reconnect_backoff.h"
#include "redis_client.h"
#include "sharded_dispatch.h"
#include "uv_handle.h"

struct redisReader;

namespace rooms {

class cluster_subscriber final : private sharded_dispatch::sink {
public:
    // Called from the loop, never from inside a call of ours (start(),
    // ssubscribe(), ...).  The handler may stop() and destroy the
    // subscriber from any of them.
    class handler {
    public:
        // Connected (and AUTH done): (re)subscribe now.
        virtual void on_sub_ready(cluster_subscriber& s) = 0;
        // A ready connection was lost or given up (timed_out() tells
        // which): all its subscriptions are gone.
        virtual void on_sub_lost(cluster_subscriber& s) = 0;
        // Redis confirmed the channel's latest SSUBSCRIBE (no
        // SUNSUBSCRIBE of it was sent after it).
        virtual void on_ssubscribed(cluster_subscriber& s,
                                    std::string_view channel) = 0;
        // Redis refused the channel's latest SSUBSCRIBE, e.g. "MOVED 1234
        // 127.0.0.1:7001" (cluster_map.h parse_redirect).
        virtual void on_ssubscribe_failed(cluster_subscriber& s,
                                          std::string_view channel,
                                          std::string_view error) = 0;
        virtual void on_smessage(cluster_subscriber& s,
                                 std::string_view channel,
                                 std::string_view payload) = 0;
        // Not asked for: Redis dropped the subscription (its slot moved
        // away from the node).
        virtual void on_sunsubscribed(cluster_subscriber& s,
                                      std::string_view channel) = 0;

    protected:
        ~handler() = default;
    };

    using barrier_fn = sharded_dispatch::barrier_fn;

    // node: an IP literal and a port (CLUSTER SLOTS names nodes so).
    // AUTH [username] password when password is not empty.
    cluster_subscriber(uv_loop_t* loop, host_port node,
                       const std::string& username,
                       const std::string& password, handler& h,
                       const redis_options& opts);
    ~cluster_subscriber();

    cluster_subscriber(const cluster_subscriber&) = delete;
    cluster_subscriber& operator=(const cluster_subscriber&) = delete;

    void start();
    // Closes the connection; no callback (the handler's, a barrier's)
    // runs after it, and the object may be destroyed right away.
    void stop();

    bool ready() const { return state_ == state::ready; }
    const host_port& node() const { return node_; }

    // False when not ready; the handler subscribes again from
    // on_sub_ready().
    bool ssubscribe(std::string_view channel);
    bool sunsubscribe(std::string_view channel);

    // An SSUBSCRIBE of a room's own (subscribed) channel again: Redis
    // confirms it with the same count, behind every message it has
    // already published to this connection.  cb(true) when it is
    // confirmed (every such message went to on_smessage() first),
    // cb(false) when it is refused (MOVED: the node no longer serves the
    // slot) or the connection is lost first.  Barriers complete in the
    // order they were made; on_ssubscribed() is not called for them.
    // False when not ready (cb is not called then).
    bool barrier(std::string_view channel, barrier_fn cb);

    // Error replies, connections given up and made again (no latency:
    // the other fields stay 0).
    const redis_stats& stats() const { return stats_; }

    // True while on_sub_lost() and the failed barriers of a connection
    // given up because Redis stopped answering run.
    bool timed_out() const { return timed_out_; }

private:
    enum class state { idle, connecting, handshaking, ready, waiting,
                       stopped };

    void connect();
    void connect_failed(const char* why);
    void handshake();
    void read_replies();
    void lost(const char* why);
    void close_socket();
    void retry_later();
    void check_health();

    // Writes the commands (each an argv) in one write; every command
    // is one request of the dispatch (the caller tells it).  False when
    // nothing was written: the connection is then given up soon.
    bool send(std::initializer_list<std::initializer_list<std::string_view>>
                  commands);

    static void connect_cb(uv_connect_t* req, int status);
    static void alloc_cb(uv_handle_t* h, size_t size, uv_buf_t* buf);
    static void read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
    static void write_cb(uv_write_t* req, int status);
    static void timer_cb(uv_timer_t* t);

    // sharded_dispatch::sink
    void on_handshake_done() override;
    void on_refused(std::string_view error) override;
    void on_ssubscribed(std::string_view channel) override;
    void on_ssubscribe_failed(std::string_view channel,
                              std::string_view error) override;
    void on_smessage(std::string_view channel,
                     std::string_view payload) override;
    void on_sunsubscribed(std::string_view channel) override;
    void on_barrier(barrier_fn cb, bool ok) override;

    struct reader_free {
        void operator()(redisReader* r) const;
    };

    uv_loop_t* loop_;
    host_port node_;
    std::string username_;
    std::string password_;
    handler& handler_;
    redis_options opts_;
    state state_ = state::idle;
    // Its data is this object while it is the current connection, and
    // nullptr once left: the connect and write requests still in flight
    // then (libuv cancels them before the close callback) free
    // themselves and report nothing.
    uv_ptr<uv_tcp_t> tcp_;
    std::unique_ptr<redisReader, reader_free> reader_;
    // Connect and handshake timeouts, the reconnect delay, and while
    // ready the health checks.
    uv_ptr<uv_timer_t> timer_;
    deadline_tracker pending_;
    sharded_dispatch dispatch_;
    // A write could not be queued: the timer gives the connection up
    // (not from inside ssubscribe() and the like).
    bool broken_ = false;
    bool timed_out_ = false;
    bool ever_ready_ = false;
    reconnect_backoff backoff_;
    redis_stats stats_;
    // false once destroyed: a callback of the handler may destroy this
    // object while a read is being dispatched.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
    std::vector<char> read_buf_ = std::vector<char>(65536);
};

}  // namespace rooms
