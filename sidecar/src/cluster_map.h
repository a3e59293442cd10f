#pragma once

// Redis Cluster routing (docs/redis.md "Redis Cluster"): which slot a key
// hashes to, which master serves a slot, what a MOVED or ASK error says,
// and when to ask the cluster for its slot map again.  Pure logic (no
// libuv, no connection): the caller sends CLUSTER SLOTS, feeds the reply
// tree in, and routes its commands with the result.
//
// Written here rather than taken from a library: hiredis 0.14.1 (what
// Debian 12 ships) has no cluster support at all, and Debian 12 packages
// no C or C++ cluster client (hiredis-cluster / hiredis-vip are not in
// the archive).  What the sidecar needs is small: the key slot, one slot
// map, redirections and a refresh rule.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisReply;

namespace rooms {

constexpr uint16_t cluster_slot_count = 16384;

// CRC16-XMODEM (polynomial 0x1021, initial value 0, no reflection): the
// checksum Redis Cluster hashes keys with.
uint16_t crc16_xmodem(std::string_view data);

// The part of a key that is hashed: if the key has a `{` and, after the
// first `{`, a `}`, and the text between the first `{` and the first `}`
// after it is not empty, that text (the hash tag); otherwise the whole
// key.
std::string_view key_hash_part(std::string_view key);

// CRC16-XMODEM of key_hash_part(key), mod 16384.
uint16_t key_slot(std::string_view key);

// A node as CLUSTER SLOTS names it.  `id` may be empty (a reply without
// node ids, or a node learnt from a redirection).
struct cluster_node {
    std::string host;
    int port = 0;
    std::string id;

    bool same_address(const cluster_node& o) const {
        return port == o.port && host == o.host;
    }
};

// The master of every slot, from a CLUSTER SLOTS reply.
class cluster_map {
public:
    // Reads a CLUSTER SLOTS reply (Redis 7: per range [start, end, master,
    // replica...], each node [host, port, node id, metadata map]; older
    // replies without the id or the map are read too).  A host that is
    // nil or empty means the address the reply came from (`from_host`);
    // a host of "?" (hostname endpoints without a hostname) is unknown:
    // its slots stay unserved.  nullopt when the reply is an error or not
    // of that shape (a range out of 0..16383, a port out of 1..65535,
    // elements of the wrong type): a malformed map is never used.
    static std::optional<cluster_map> from_slots_reply(
        const redisReply& r, std::string_view from_host);

    // The master serving the slot, or nullptr if none does.  Pointers
    // from here and masters() are valid until the next set_master().
    const cluster_node* master_of(uint16_t slot) const;
    const cluster_node* master_of_key(std::string_view key) const {
        return master_of(key_slot(key));
    }

    // Every slot has a master.
    bool covers_all() const { return unserved_ == 0; }
    size_t unserved_slots() const { return unserved_; }

    // The masters that serve at least one slot (each once).
    std::vector<const cluster_node*> masters() const;

    // After a MOVED: the slot is served by `node` from now on (the whole
    // map is refreshed soon after, cluster_refresh).  A node without a
    // host, or a slot out of range, changes nothing.
    void set_master(uint16_t slot, const cluster_node& node);

private:
    cluster_map();

    // index into nodes_ (a node that owns no slot any more stays until
    // the next map: a few bytes), or -1
    int node_index(const cluster_node& node);

    std::vector<cluster_node> nodes_;
    std::vector<int16_t> owner_;  // per slot: index into nodes_, or -1
    size_t unserved_ = cluster_slot_count;
};

// What a MOVED or ASK error says: `MOVED 3999 127.0.0.1:6381`,
// `ASK 3999 [::1]:6381` or `ASK 3999 ::1:6381` (the port is after the
// last colon), `MOVED 3999 :6381` (no endpoint: the address the error
// came from, `from_host`).
struct cluster_redirect {
    bool ask = false;  // ASK: this command only, sent after ASKING
    uint16_t slot = 0;
    std::string host;
    int port = 0;
};
std::optional<cluster_redirect> parse_redirect(std::string_view error,
                                               std::string_view from_host);

// What to do with a command whose reply was an error, given how often it
// was redirected and retried already (cluster_attempts).
//   fail:     the error is the answer (not a cluster error, too many
//             hops or retries, or a MOVED when !follow_moved)
//   redirect: send it again to `to` (after ASKING if to.ask); a MOVED
//             also updates the map (set_master) and asks for a refresh
//   retry:    send it again to the slot's master after `delay_ms`
//             (TRYAGAIN: a multi-key command during a slot migration;
//             CLUSTERDOWN: the cluster is failing over; ASK when
//             !follow_ask)
// refresh_map: the slot map is stale, ask for a new one (cluster_refresh).
struct cluster_limits {
    // false for a room's scripts: during a migration they wait for the
    // slot's new owner instead of running on the importing node, whose
    // SPUBLISH reaches none of the room's subscribers (docs/redis.md)
    bool follow_ask = true;
    // false for `sync`: its snapshot must be taken on the node of the
    // room's confirmed subscription; a MOVED fails it (the map is
    // refreshed and the room subscribed on the new owner first)
    bool follow_moved = true;
    int max_redirects = 5;
    int max_retries = 6;
    uint64_t retry_delay_ms = 20;  // doubled per retry
    uint64_t retry_delay_max_ms = 640;
};

struct cluster_attempts {
    int redirects = 0;
    int retries = 0;
};

enum class cluster_step { fail, redirect, retry };

struct cluster_action {
    cluster_step step = cluster_step::fail;
    bool refresh_map = false;
    uint64_t delay_ms = 0;
    cluster_redirect to;  // step == redirect
};

cluster_action cluster_on_error(std::string_view error,
                                std::string_view from_host,
                                const cluster_attempts& done,
                                const cluster_limits& limits);

// When to send CLUSTER SLOTS: on request (a MOVED, a node connection
// lost, CLUSTERDOWN), at most one in flight and at most one started per
// `min_interval_ms`, so that a burst of redirections after a resharding
// costs one refresh, not one per command.  A failed refresh is asked for
// again.  Times are the caller's clock in ms (uv_now()).
class cluster_refresh {
public:
    explicit cluster_refresh(uint64_t min_interval_ms)
        : min_interval_ms_(min_interval_ms) {}

    void request() { wanted_ = true; }

    // true: send CLUSTER SLOTS now (the refresh is then in flight)
    bool start(uint64_t now);

    // The reply (or its failure) came: a failed one is wanted again.
    void finished(bool ok);

    // ms until start() can return true (0: now), or nullopt when nothing
    // is wanted or one is in flight (arm a timer with it).
    std::optional<uint64_t> wait_ms(uint64_t now) const;

    bool in_flight() const { return in_flight_; }

private:
    uint64_t min_interval_ms_;
    uint64_t last_start_ = 0;
    bool started_ = false;  // last_start_ is valid
    bool wanted_ = false;
    bool in_flight_ = false;
};

}  // namespace rooms
