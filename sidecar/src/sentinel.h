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
#include <memory>
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

// The events of a failover that a sidecar acts on (docs/redis.md
// "Sentinel").  `started`: the sentinel that leads it won the election
// (`+elected-leader`) or chose the replica
// (`+failover-state-send-slaveof-noone`), one or more of its timer ticks
// (50-100 ms each) before it sends the replica REPLICAOF NO ONE; from
// then on the old master must take no write.  `aborted`: this sentinel's
// attempt ended without a promotion (`-failover-abort-*`).  `switched`:
// `+switch-master`, the new master at `master`.
struct failover_event {
    enum class kind { started, aborted, switched };
    kind what = kind::started;
    host_port master;  // switched
};

// The channels failover_event comes from (a SUBSCRIBE's arguments).
const std::vector<std::string_view>& failover_channels();

// An event published on `channel` about the master `name`; nothing for
// another master, another channel or a malformed payload.  Instance
// events read "master <name> <ip> <port>" or "slave <ip:port> <ip>
// <port> @ <name> <master-ip> <master-port>".
std::optional<failover_event> parse_failover_event(std::string_view channel,
                                                   std::string_view payload,
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

// Whether writes must wait: while some sentinel announced a failover it
// leads (`started`) and neither aborted it nor any sentinel announced the
// new master (`switched`).  The decision sentinel_watch acts on.
class failover_hold {
public:
    explicit failover_hold(size_t sentinels) : started_(sentinels, false) {}

    // Sentinel `index` published e; true when holding() changed.
    bool apply(size_t index, failover_event::kind e);
    // The hold lasted too long: every announced failover forgotten; true
    // when holding() changed.
    bool expire();
    bool holding() const { return holding_; }
    bool started_by(size_t index) const { return started_.at(index); }

private:
    bool update();

    std::vector<bool> started_;
    bool holding_ = false;
};

// Learns of a failover as soon as the sentinels announce it: a
// subscription to failover_channels() on every sentinel (the one that
// leads a failover announces its start only on its own channels), each
// retried every `retry_ms` when it fails.  A failover holds writes:
// on_hold(true) when a sentinel announces it started, on_hold(false)
// when the new master is known (after on_switch), every sentinel that
// started one aborted it, or after `hold_max_ms` without either.
// A lost master is also noticed by its connections; a sentinel whose
// subscription is down cannot announce its failover (docs/redis.md).
class sentinel_watch {
public:
    // The master moved there.
    using switch_fn = std::function<void(const host_port& master)>;
    // Writes must wait (true) or may go again (false).
    using hold_fn = std::function<void(bool hold)>;

    sentinel_watch(uv_loop_t* loop, const sentinel_settings& settings,
                   uint64_t retry_ms, uint64_t hold_max_ms,
                   switch_fn on_switch, hold_fn on_hold);
    ~sentinel_watch();

    sentinel_watch(const sentinel_watch&) = delete;
    sentinel_watch& operator=(const sentinel_watch&) = delete;

    void start();
    void stop();

private:
    // One sentinel's subscription.
    struct slot {
        sentinel_watch* owner = nullptr;
        size_t index = 0;  // into settings_.sentinels
        uv_ptr<uv_timer_t> timer;
        redisAsyncContext* ac = nullptr;
    };

    void watch(slot& s);
    void lost(slot& s, const char* why);
    void event(slot& s, const failover_event& e);
    void hold_changed(const char* why);

    static void connect_cb(const redisAsyncContext* ac, int status);
    static void disconnect_cb(const redisAsyncContext* ac, int status);
    static void event_cb(redisAsyncContext* ac, void* reply, void* privdata);
    static void timer_cb(uv_timer_t* t);
    static void hold_timer_cb(uv_timer_t* t);

    uv_loop_t* loop_;
    const sentinel_settings& settings_;
    uint64_t retry_ms_;
    uint64_t hold_max_ms_;
    switch_fn on_switch_;
    hold_fn on_hold_;
    std::vector<std::unique_ptr<slot>> slots_;
    failover_hold hold_;
    uv_ptr<uv_timer_t> hold_timer_;
    bool stopped_ = false;
};

}  // namespace rooms
