#pragma once

// Redis Cluster (docs/redis.md "Redis Cluster"): the sidecar's Redis when
// `redis_cluster on`.  The configured address is a seed: CLUSTER SLOTS is
// asked there (later of any node), and every master that serves slots
// gets a command connection (a redis_client without a subscriber: its
// scripts, NOSCRIPT recovery, deadlines and reconnects) and a sharded
// Pub/Sub connection (cluster_subscriber).
//
//   eval/command  the master of the first key's slot (cluster_map); MOVED
//                 updates the map and is followed, ASK followed with
//                 ASKING (not by a room's scripts: they wait for the
//                 migration's end), TRYAGAIN and CLUSTERDOWN retried with
//                 backoff (cluster_on_error); past the limits the error
//                 is the answer.  `sync` runs on the node of the room's
//                 confirmed subscription, never elsewhere.
//   subscribe     SSUBSCRIBE on the master of the channel's slot, now or
//                 as soon as that node is connected; a subscription lost
//                 with its node, dropped by Redis (`sunsubscribe`: the
//                 slot moved) or left behind by a new map is reported
//                 (on_subscription_lost) and made again where the slot is
//                 now.
//   barrier       a repeated SSUBSCRIBE of the room's channel on the node
//                 of its subscription: answered behind every message that
//                 node published to it before.
//   the map       refreshed (coalesced, at most one per 100 ms) after a
//                 MOVED, a node lost, a dropped subscription, CLUSTERDOWN,
//                 and every 10 s.
//
// The first on_redis_ready()s come once a map covers every slot and
// every master in it is connected; after that a master down affects its
// own rooms only (their calls refused, their subscriptions lost and made
// again on the promoted replica), and commands_ready() means "some master
// is connected".

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cluster_map.h"
#include "cluster_subscriber.h"
#include "redis_client.h"
#include "string_map.h"
#include "uv_handle.h"

namespace rooms {

class redis_cluster final : public redis_backend {
public:
    redis_cluster(uv_loop_t* loop, const redis_address& seed, handler& h,
                  const redis_options& opts);
    ~redis_cluster() override;

    redis_cluster(const redis_cluster&) = delete;
    redis_cluster& operator=(const redis_cluster&) = delete;

    void start() override;
    void stop() override;

    // Once every master of the first map was connected: at least one
    // master is (the calls for a slot whose master is not connected are
    // refused, eval() false, as on one Redis that is down).
    bool commands_ready() const override { return cmd_up_; }
    bool subscriber_ready() const override { return sub_up_; }
    bool subscriber_ready(std::string_view channel) const override;
    const redis_stats& stats() const override;
    bool timed_out() const override;
    int64_t redis_clock_offset_ms() const override;
    bool clock_known() const override;
    // Of the node of the channel's confirmed subscription, where its
    // `sync` runs: a promoted replica has a new one (docs/redis.md
    // "Failover" in "Redis Cluster").
    const std::string& replid_for(std::string_view channel) const override;

    // True once started: the SSUBSCRIBE goes when the slot's master is
    // connected.
    bool subscribe(std::string_view channel) override;
    bool unsubscribe(std::string_view channel) override;
    // False unless the channel's subscription is confirmed.
    bool barrier(std::string_view channel, barrier_fn cb) override;

    // On the master of keys[0]'s slot (`sync`: of its room's confirmed
    // subscription).  True also when it waits behind its slot's calls
    // parked for a retry: it is answered once, as on one Redis.
    bool eval(const lua_script& script, const std::vector<std::string>& keys,
              const std::vector<std::string>& args, reply_fn cb) override;
    // On the master of argv[1]'s slot; TIME, INFO, PING, CLUSTER and
    // SCRIPT on any connected master.
    bool command(const std::vector<std::string>& argv,
                 reply_fn cb) override;

private:
    struct node;
    struct call;

    // A wanted channel: where its SSUBSCRIBE went (nullptr: not sent,
    // its node is not known or not connected yet), and whether the node
    // confirmed it.
    struct channel_state {
        node* on = nullptr;
        bool confirmed = false;
    };

    node* find_node(const std::string& host, int port);
    node* make_node(const std::string& host, int port);
    node* owner_of(std::string_view key) const;
    node* any_ready_node() const;

    bool submit(const std::shared_ptr<call>& c);
    bool send(const std::shared_ptr<call>& c);
    void on_reply(const std::shared_ptr<call>& c, const std::string& from,
                  const redisReply* r);
    void park(const std::shared_ptr<call>& c, uint64_t delay_ms);
    void fail(const std::shared_ptr<call>& c, std::string_view why);
    void run_retries();

    void want_refresh();
    void refresh();
    void on_slots(const std::string& from, const redisReply* r);
    void apply_map();

    void subscribe_on(const std::string& channel, channel_state& st);
    void lose(const std::string& channel, channel_state& st);
    void lose_all(const std::vector<std::string>& channels);
    void subscribe_waiting(node& n);

    void node_ready(node& n, bool subscriber);
    void node_lost(node& n, bool subscriber);
    void update_ready();

    static void timer_cb(uv_timer_t* t);
    void arm_timer();

    uv_loop_t* loop_;
    redis_address seed_;
    handler& handler_;
    redis_options opts_;   // per node: no subscriber, sharded scripts
    bool started_ = false;
    bool stopped_ = false;
    // Every master of a map covering every slot was connected once (the
    // first on_redis_ready()s); from then on each command connection
    // that comes back is told (on_redis_ready(command): settle, sync).
    bool opened_ = false;
    bool all_up_ = false;  // every master of the map connected, now
    bool cmd_up_ = false;
    bool sub_up_ = false;
    std::string no_replid_;

    std::vector<std::unique_ptr<node>> nodes_;
    std::optional<cluster_map> map_;
    cluster_refresh refresh_{100};
    uint64_t last_map_ = 0;  // uv_now() of the last map applied
    static constexpr uint64_t map_max_age_ms = 10000;
    static constexpr uint64_t degraded_poll_ms = 250;

    string_map<channel_state> channels_;  // found by string_view: no copy

    // Calls waiting for a retry (TRYAGAIN, CLUSTERDOWN, an ASK a room's
    // script does not follow, a redirection to a node not connected yet),
    // per slot in the order they were given, and the calls given for that
    // slot meanwhile behind them; sent again together at `due` (uv_now()).
    struct parked_slot {
        uint64_t due = 0;
        std::map<uint64_t, std::shared_ptr<call>> calls;  // by serial
    };
    static constexpr uint32_t no_slot = cluster_slot_count;  // keyless
    std::unordered_map<uint32_t, parked_slot> parked_;
    uint64_t serial_ = 0;
    uv_ptr<uv_timer_t> timer_;  // retries, refreshes

    redis_stats counts_;         // the cluster's own counters
    mutable redis_stats stats_;  // those and the nodes', by stats()
};

}  // namespace rooms
