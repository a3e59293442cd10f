#pragma once

// Master discovery through Redis Sentinel (docs/redis.md "Sentinel").
//
// With `redis_sentinels` configured, every connect of a Redis connection
// first asks the sentinels, in turn, `SENTINEL get-master-addr-by-name`;
// the first that answers with an address is asked first next time, and
// the connection goes there.  Its handshake then checks with `INFO
// replication` that the server is a master (a demoted master that comes
// back, or a sentinel whose view is stale, must not be written to).
//
// The pure parts (reply parsing, the order sentinels are asked in) are
// free functions and a small class, unit tested in
// t/unit/sidecar_sentinel_test.cc; sentinel_resolver is the I/O around
// them.

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "uv_handle.h"

struct redisAsyncContext;
struct redisReply;

namespace rooms {

// SENTINEL get-master-addr-by-name: [ip, port].  Nothing for a nil reply
// (the sentinel does not know the name), an error or a bad port.
std::optional<host_port> parse_master_addr(const redisReply& r);

// What the handshake needs from `INFO replication`: the role, and the
// replication id, which a promoted replica (and a restarted master)
// changes: a new id means writes acknowledged before may be missing.
struct replication_info {
    bool master = false;
    std::string replid;
};
std::optional<replication_info> parse_replication_info(std::string_view text);

// A `+switch-master` event ("<name> <old-ip> <old-port> <new-ip>
// <new-port>"): the new master's address when it is about `name`.
std::optional<host_port> parse_switch_master(std::string_view payload,
                                             std::string_view name);

// The order in which the sentinels are asked: all of them, starting with
// the one that answered last (Redis's guidance for Sentinel clients), the
// others in their configured order.
class sentinel_rotation {
public:
    explicit sentinel_rotation(size_t count);

    const std::vector<size_t>& order() const { return order_; }
    // Sentinel `index` (into the configured list) answered.
    void answered(size_t index);

private:
    std::vector<size_t> order_;
};

// Asks the sentinels for the master's address, one after the other, each
// with `timeout_ms` for its connect and answer.  Callers asking while a
// discovery is in flight share its answer.  Callbacks are not called once
// stopped (or destroyed).
class sentinel_resolver {
public:
    // The master's address, or nothing when no sentinel answered.
    using done_fn = std::function<void(std::optional<host_port>)>;

    sentinel_resolver(uv_loop_t* loop, const sentinel_settings& settings,
                      uint64_t timeout_ms);
    ~sentinel_resolver();

    sentinel_resolver(const sentinel_resolver&) = delete;
    sentinel_resolver& operator=(const sentinel_resolver&) = delete;

    void resolve(done_fn cb);
    void stop();

private:
    void ask(size_t step);
    void next();
    void finish(std::optional<host_port> addr);
    void drop_context();

    static void connect_cb(const redisAsyncContext* ac, int status);
    static void disconnect_cb(const redisAsyncContext* ac, int status);
    static void reply_cb(redisAsyncContext* ac, void* reply, void* privdata);
    static void timer_cb(uv_timer_t* t);

    uv_loop_t* loop_;
    const sentinel_settings& settings_;
    uint64_t timeout_ms_;
    sentinel_rotation rotation_;
    uv_ptr<uv_timer_t> timer_;
    redisAsyncContext* ac_ = nullptr;
    size_t step_ = 0;  // into rotation_.order() while a discovery runs
    std::vector<done_fn> waiting_;
    bool stopped_ = false;
};

// Learns of a failover as soon as the sentinels announce it: a
// subscription to `+switch-master` on one sentinel at a time (the next
// one in the rotation when it fails, retried every `retry_ms`).  Only an
// accelerator: a lost master is also noticed by its connections.
class sentinel_watch {
public:
    // The master moved there.
    using switch_fn = std::function<void(const host_port& master)>;

    sentinel_watch(uv_loop_t* loop, const sentinel_settings& settings,
                   uint64_t retry_ms, switch_fn on_switch);
    ~sentinel_watch();

    sentinel_watch(const sentinel_watch&) = delete;
    sentinel_watch& operator=(const sentinel_watch&) = delete;

    void start();
    void stop();

private:
    void watch();
    void lost(const char* why);

    static void connect_cb(const redisAsyncContext* ac, int status);
    static void disconnect_cb(const redisAsyncContext* ac, int status);
    static void event_cb(redisAsyncContext* ac, void* reply, void* privdata);
    static void timer_cb(uv_timer_t* t);

    uv_loop_t* loop_;
    const sentinel_settings& settings_;
    uint64_t retry_ms_;
    switch_fn on_switch_;
    sentinel_rotation rotation_;
    size_t next_ = 0;  // the next sentinel to watch, into the rotation
    uv_ptr<uv_timer_t> timer_;
    redisAsyncContext* ac_ = nullptr;
    bool stopped_ = false;
};

}  // namespace rooms
