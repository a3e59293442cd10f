#include "redis_cluster.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <map>
#include <utility>

#include "log.h"
#include "redis_scripts.h"

namespace rooms {

namespace {

// The room scripts: their keys are the room's, and they publish to its
// subscribers (docs/redis.md "MOVED, ASK, TRYAGAIN, CLUSTERDOWN").
bool room_script(const lua_script* s) {
    return s == &script_publish() || s == &script_sync() ||
           s == &script_leave() || s == &script_state() ||
           s == &script_touch() || s == &script_reap_room() ||
           s == &script_settle();
}

// The key a command is routed by: its first argument, except for the
// commands that have none.
std::optional<std::string_view> command_key(
    const std::vector<std::string>& argv) {
    if (argv.size() < 2) {
        return std::nullopt;
    }
    const std::string& name = argv[0];
    if (name == "TIME" || name == "INFO" || name == "PING" ||
        name == "CLUSTER" || name == "SCRIPT") {
        return std::nullopt;
    }
    return argv[1];
}

bool cluster_error(std::string_view error) {
    return error.starts_with("MOVED ") || error.starts_with("ASK ") ||
           error.starts_with("TRYAGAIN") || error.starts_with("CLUSTERDOWN");
}

}  // namespace

/* a master: its command connection and its subscriber connection */

struct redis_cluster::node final : public redis_backend::handler,
                                   public cluster_subscriber::handler {
    node(redis_cluster& c, const std::string& host, int port)
        : owner(c) {
        addr = c.seed_;
        addr.unix_socket = false;
        addr.host = host;
        addr.port = port;
        addr.db = 0;
        cmd = std::make_unique<redis_client>(c.loop_, addr, *this, c.opts_);
        sub = std::make_unique<cluster_subscriber>(
            c.loop_, host_port{host, port}, addr.username, addr.password,
            *this, c.opts_);
    }

    const std::string& host() const { return addr.host; }
    int port() const { return addr.port; }
    std::string describe() const { return addr.describe(); }

    void start() {
        cmd->start();
        sub->start();
    }

    void stop() {
        cmd->stop();
        sub->stop();
    }

    // redis_backend::handler (the command connection only)
    void on_redis_ready(redis_connection::role) override {
        owner.node_ready(*this, false);
    }
    void on_redis_lost(redis_connection::role) override {
        owner.node_lost(*this, false);
    }
    void on_subscribed(std::string_view) override {}
    void on_message(std::string_view, std::string_view) override {}
    void on_subscription_lost(std::string_view) override {}

    // cluster_subscriber::handler
    void on_sub_ready(cluster_subscriber&) override {
        owner.node_ready(*this, true);
    }
    void on_sub_lost(cluster_subscriber&) override {
        owner.node_lost(*this, true);
    }
    void on_ssubscribed(cluster_subscriber&,
                        std::string_view channel) override {
        auto it = owner.channels_.find(channel);
        if (it == owner.channels_.end() || it->second.on != this ||
            it->second.confirmed) {
            return;  // sent here before it went elsewhere, or left
        }
        it->second.confirmed = true;
        owner.handler_.on_subscribed(channel);
    }
    void on_ssubscribe_failed(cluster_subscriber&, std::string_view channel,
                              std::string_view error) override {
        log_info("redis cluster: SSUBSCRIBE %.*s on %s: %.*s",
                 static_cast<int>(channel.size()), channel.data(),
                 describe().c_str(), static_cast<int>(error.size()),
                 error.data());
        if (std::optional<cluster_redirect> to =
                parse_redirect(error, host());
            to && !to->ask && owner.map_) {
            owner.map_->set_master(to->slot,
                                   cluster_node{to->host, to->port, {}});
            owner.make_node(to->host, to->port);
        }
        owner.want_refresh();
        auto it = owner.channels_.find(channel);
        if (it != owner.channels_.end() && it->second.on == this) {
            owner.lose(it->first, it->second);
        }
    }
    void on_smessage(cluster_subscriber&, std::string_view channel,
                     std::string_view payload) override {
        auto it = owner.channels_.find(channel);
        if (it != owner.channels_.end() && it->second.on == this) {
            owner.handler_.on_message(channel, payload);
        }
    }
    void on_sunsubscribed(cluster_subscriber&,
                          std::string_view channel) override {
        // Redis dropped it: the slot is served elsewhere now.
        auto it = owner.channels_.find(channel);
        if (it != owner.channels_.end() && it->second.on == this) {
            log_info("redis cluster: %s dropped %.*s (its slot moved)",
                     describe().c_str(), static_cast<int>(channel.size()),
                     channel.data());
            owner.want_refresh();
            owner.lose(it->first, it->second);
        }
    }

    redis_cluster& owner;
    redis_address addr;
    std::unique_ptr<redis_client> cmd;
    std::unique_ptr<cluster_subscriber> sub;
    bool serving = false;  // a master in the current map
};

/* a command on its way, with its redirections and retries */

struct redis_cluster::call {
    const lua_script* script = nullptr;  // eval; else argv
    std::vector<std::string> keys;
    std::vector<std::string> args;
    std::vector<std::string> argv;
    reply_fn cb;
    std::optional<std::string> key;  // routed by its slot; none: any node
    // `sync`: the room's subscription's node, nowhere else
    std::optional<cluster_node> pinned;
    std::optional<cluster_node> ask;  // the next send: ASKING, there
    uint32_t slot = 0;    // of key, or no_slot
    uint64_t serial = 0;  // its place among its slot's calls
    cluster_limits limits;
    cluster_attempts attempts;
};

redis_cluster::redis_cluster(uv_loop_t* loop, const redis_address& seed,
                             handler& h, const redis_options& opts)
    : loop_(loop), seed_(seed), handler_(h), opts_(opts) {
    opts_.subscriber = false;
    opts_.sharded = true;
    opts_.sentinel = nullptr;
    int rc = 0;
    timer_ = make_uv_timer(loop, this, rc);
    if (rc != 0) {
        log_error("redis cluster: timer: %s", uv_strerror(rc));
    }
}

redis_cluster::~redis_cluster() = default;

void redis_cluster::start() {
    if (started_) {
        return;
    }
    started_ = true;
    log_info("redis cluster: seed %s", seed_.describe().c_str());
    make_node(seed_.host, seed_.port);
    want_refresh();
}

void redis_cluster::stop() {
    stopped_ = true;
    for (auto& n : nodes_) {
        n->stop();
    }
    parked_.clear();  // their callbacks are not called once stopped
    if (timer_) {
        uv_timer_stop(timer_.get());
    }
}

redis_cluster::node* redis_cluster::find_node(const std::string& host,
                                              int port) {
    for (auto& n : nodes_) {
        if (n->port() == port && n->host() == host) {
            return n.get();
        }
    }
    return nullptr;
}

// Connects to a node the first time it is named (the seed, a master in a
// map, the target of a MOVED).
redis_cluster::node* redis_cluster::make_node(const std::string& host,
                                              int port) {
    if (node* n = find_node(host, port)) {
        return n;
    }
    nodes_.push_back(std::make_unique<node>(*this, host, port));
    node* n = nodes_.back().get();
    if (!stopped_) {
        n->start();
    }
    return n;
}

redis_cluster::node* redis_cluster::owner_of(std::string_view key) const {
    if (!map_) {
        return nullptr;
    }
    const cluster_node* m = map_->master_of_key(key);
    if (m == nullptr) {
        return nullptr;
    }
    for (const auto& n : nodes_) {
        if (n->port() == m->port && n->host() == m->host) {
            return n.get();
        }
    }
    return nullptr;
}

redis_cluster::node* redis_cluster::any_ready_node() const {
    node* fallback = nullptr;
    for (const auto& n : nodes_) {
        if (n->cmd->commands_ready()) {
            if (n->serving) {
                return n.get();
            }
            fallback = n.get();
        }
    }
    return fallback;
}

/* commands */

bool redis_cluster::eval(const lua_script& script,
                         const std::vector<std::string>& keys,
                         const std::vector<std::string>& args, reply_fn cb) {
    if (stopped_ || !opened_) {
        return false;
    }
    auto c = std::make_shared<call>();
    c->script = &script;
    c->keys = keys;
    c->args = args;
    c->cb = std::move(cb);
    c->slot = no_slot;
    if (!keys.empty()) {
        c->key = keys.front();
        c->slot = key_slot(keys.front());
    }
    if (room_script(&script)) {
        c->limits.follow_ask = false;
    }
    if (&script == &script_sync()) {
        // ARGV[1] is the room's channel: the snapshot is taken where its
        // subscription is confirmed (docs/redis.md "Joining without gaps,
        // in a cluster").
        auto it = args.empty() ? channels_.end() : channels_.find(args[0]);
        if (it == channels_.end() || !it->second.confirmed ||
            it->second.on == nullptr) {
            return false;
        }
        c->pinned = cluster_node{it->second.on->host(),
                                 it->second.on->port(), {}};
        c->limits.follow_moved = false;
    }
    return submit(c);
}

bool redis_cluster::command(const std::vector<std::string>& argv,
                            reply_fn cb) {
    if (stopped_ || !opened_) {
        return false;
    }
    auto c = std::make_shared<call>();
    c->argv = argv;
    c->cb = std::move(cb);
    c->slot = no_slot;
    if (std::optional<std::string_view> k = command_key(argv)) {
        c->key = std::string(*k);
        c->slot = key_slot(*k);
    }
    return submit(c);
}

// A call goes behind those of its slot that wait for a retry.
bool redis_cluster::submit(const std::shared_ptr<call>& c) {
    c->serial = ++serial_;
    auto p = parked_.find(c->slot);
    if (p != parked_.end()) {
        p->second.calls.emplace(c->serial, c);
        return true;
    }
    return send(c);
}

// False when the node it goes to is not connected (nothing is sent then).
bool redis_cluster::send(const std::shared_ptr<call>& c) {
    node* n = nullptr;
    if (c->ask) {
        n = make_node(c->ask->host, c->ask->port);
    } else if (c->pinned) {
        n = find_node(c->pinned->host, c->pinned->port);
    } else if (c->key) {
        n = owner_of(*c->key);
    } else {
        n = any_ready_node();
    }
    if (n == nullptr || !n->cmd->commands_ready()) {
        return false;
    }
    if (c->ask) {
        c->ask.reset();
        n->cmd->command({"ASKING"}, [](const redisReply*) {});
    }
    auto done = [this, c, from = n->host()](const redisReply* r) {
        on_reply(c, from, r);
    };
    return c->script != nullptr
               ? n->cmd->eval(*c->script, c->keys, c->args, std::move(done))
               : n->cmd->command(c->argv, std::move(done));
}

void redis_cluster::on_reply(const std::shared_ptr<call>& c,
                             const std::string& from, const redisReply* r) {
    if (stopped_) {
        return;
    }
    if (r == nullptr || r->type != REDIS_REPLY_ERROR) {
        c->cb(r);
        return;
    }
    std::string_view error(r->str, r->len);
    cluster_action a = cluster_on_error(error, from, c->attempts, c->limits);
    if (a.refresh_map) {
        want_refresh();
    }
    switch (a.step) {
    case cluster_step::fail:
        if (cluster_error(error)) {
            fail(c, error);  // a `sync`'s joiners wait for the next one
        } else {
            c->cb(r);
        }
        return;
    case cluster_step::redirect:
        c->attempts.redirects++;
        (a.to.ask ? counts_.cluster_ask : counts_.cluster_moved)++;
        if (a.to.ask) {
            c->ask = cluster_node{a.to.host, a.to.port, {}};
        } else if (map_) {
            map_->set_master(a.to.slot, cluster_node{a.to.host, a.to.port, {}});
            make_node(a.to.host, a.to.port);
        }
        if (parked_.count(c->slot) != 0 || !send(c)) {
            // behind its slot's parked calls, or the node is not
            // connected yet
            c->ask.reset();
            park(c, c->limits.retry_delay_ms);
        }
        return;
    case cluster_step::retry:
        c->attempts.retries++;
        park(c, a.delay_ms);
        return;
    }
}

// Waits for its slot's next retry, in its original place among the
// slot's other parked calls: a room's commands run in the order they were
// given (a later publish batch must not overtake an earlier one that met
// the migration first, or the earlier one would be taken for a repeat).
void redis_cluster::park(const std::shared_ptr<call>& c, uint64_t delay_ms) {
    counts_.cluster_retries++;
    parked_slot& p = parked_[c->slot];
    p.calls.emplace(c->serial, c);
    p.due = std::max(p.due, uv_now(loop_) + delay_ms);
    arm_timer();
}

// The answer when a call cannot be routed or retried any more: an error
// reply of our own, as if Redis had refused it (a publish answers
// `unavailable`).
void redis_cluster::fail(const std::shared_ptr<call>& c,
                         std::string_view why) {
    if (c->pinned) {
        // a snapshot that could not be taken where the room is subscribed:
        // not an error of the script, its joiners wait for the next sync
        // (once the room is subscribed where its slot is now)
        c->cb(nullptr);
        return;
    }
    std::string text(why);
    if (!cluster_error(why)) {
        text.insert(0, "CLUSTERDOWN ");
    }
    redisReply r{};
    r.type = REDIS_REPLY_ERROR;
    r.str = text.data();
    r.len = text.size();
    c->cb(&r);
}

// Sends the parked calls of every slot whose time has come, in order.  A
// call whose node is not connected waits again, up to its retries.
void redis_cluster::run_retries() {
    uint64_t now = uv_now(loop_);
    std::vector<uint32_t> due;
    for (const auto& [slot, p] : parked_) {
        if (p.due <= now) {
            due.push_back(slot);
        }
    }
    for (uint32_t slot : due) {
        auto it = parked_.find(slot);
        if (it == parked_.end()) {
            continue;
        }
        std::map<uint64_t, std::shared_ptr<call>> calls =
            std::move(it->second.calls);
        parked_.erase(it);
        for (auto& [serial, c] : calls) {
            if (stopped_) {
                return;
            }
            if (parked_.count(slot) == 0 && send(c)) {
                continue;
            }
            if (parked_.count(slot) == 0 &&
                c->attempts.retries >= c->limits.max_retries) {
                fail(c, "no connected master for the slot");
                continue;
            }
            c->attempts.retries++;
            uint64_t delay = c->limits.retry_delay_ms
                             << std::min(c->attempts.retries, 10);
            park(c, std::min(delay, c->limits.retry_delay_max_ms));
        }
    }
}

/* the slot map */

void redis_cluster::want_refresh() {
    refresh_.request();
    arm_timer();
}

void redis_cluster::refresh() {
    if (stopped_ || !refresh_.start(uv_now(loop_))) {
        return;
    }
    node* n = any_ready_node();
    if (n == nullptr) {
        refresh_.finished(false);
        return;
    }
    std::string from = n->host();
    bool sent = n->cmd->command({"CLUSTER", "SLOTS"},
                                [this, from](const redisReply* r) {
                                    on_slots(from, r);
                                });
    if (!sent) {
        refresh_.finished(false);
    }
}

void redis_cluster::on_slots(const std::string& from, const redisReply* r) {
    if (stopped_) {
        return;
    }
    std::optional<cluster_map> m;
    if (r != nullptr) {
        m = cluster_map::from_slots_reply(*r, from);
    }
    refresh_.finished(m.has_value());
    if (!m) {
        log_warn("redis cluster: CLUSTER SLOTS from %s unusable%s%.*s",
                 from.c_str(),
                 r != nullptr && r->type == REDIS_REPLY_ERROR ? ": " : "",
                 r != nullptr && r->type == REDIS_REPLY_ERROR
                     ? static_cast<int>(r->len)
                     : 0,
                 r != nullptr && r->type == REDIS_REPLY_ERROR ? r->str : "");
        arm_timer();
        return;
    }
    map_ = std::move(m);
    last_map_ = uv_now(loop_);
    counts_.cluster_maps++;
    apply_map();
    arm_timer();
}

// Connects to the masters of the new map, lets go of the nodes that are no
// longer masters, and moves every subscription to its slot's master.
void redis_cluster::apply_map() {
    std::vector<const cluster_node*> masters = map_->masters();
    if (!map_->covers_all()) {
        log_warn("redis cluster: %zu slots have no master",
                 map_->unserved_slots());
    }
    for (auto& n : nodes_) {
        n->serving = false;
    }
    std::string list;
    for (const cluster_node* m : masters) {
        make_node(m->host, m->port)->serving = true;
        list += (list.empty() ? "" : " ") + m->host + ":" +
                std::to_string(m->port);
    }
    log_debug("redis cluster: masters %s", list.c_str());
    // A node that is no longer a master keeps its connections (one that
    // is down retries once a backoff, one warning per outage): a demoted
    // master may be promoted again, and answers may still be on their way
    // from one that gave its slots away.
    std::vector<std::string> moved;
    for (auto& [channel, st] : channels_) {
        node* owner = owner_of(channel);
        if (st.on != nullptr && st.on != owner) {
            if (st.on->sub->ready()) {
                st.on->sub->sunsubscribe(channel);
            }
            moved.push_back(channel);
        } else if (st.on == nullptr) {
            subscribe_on(channel, st);
        }
    }
    lose_all(moved);
    update_ready();
}

/* subscriptions */

bool redis_cluster::subscribe(std::string_view channel) {
    if (stopped_) {
        return false;
    }
    auto [it, fresh] = channels_.try_emplace(std::string(channel));
    channel_state& st = it->second;
    if (!fresh && st.on != nullptr && st.on->sub->ready()) {
        // already there (confirmed: nothing to do), or on its way
        return true;
    }
    st.on = nullptr;
    st.confirmed = false;
    subscribe_on(it->first, st);
    return true;  // sent now, or once its node is connected
}

bool redis_cluster::unsubscribe(std::string_view channel) {
    auto it = channels_.find(channel);
    if (it == channels_.end()) {
        return false;
    }
    bool sent = it->second.on != nullptr && it->second.on->sub->ready() &&
                it->second.on->sub->sunsubscribe(channel);
    channels_.erase(it);
    return sent;
}

bool redis_cluster::barrier(std::string_view channel, barrier_fn cb) {
    auto it = channels_.find(channel);
    if (stopped_ || it == channels_.end() || !it->second.confirmed ||
        it->second.on == nullptr || !it->second.on->sub->ready()) {
        return false;
    }
    return it->second.on->sub->barrier(channel, std::move(cb));
}

void redis_cluster::subscribe_on(const std::string& channel,
                                 channel_state& st) {
    node* n = owner_of(channel);
    if (n == nullptr || !n->sub->ready()) {
        return;  // subscribe_waiting() sends it
    }
    if (n->sub->ssubscribe(channel)) {
        st.on = n;
        st.confirmed = false;
    }
}

// The subscription is gone: the room hears of it if it was confirmed (its
// snapshots in flight are void, its gap is filled once subscribed again),
// and it is made again where its slot is now.
void redis_cluster::lose(const std::string& channel, channel_state& st) {
    bool was = st.confirmed;
    st.on = nullptr;
    st.confirmed = false;
    subscribe_on(channel, st);
    if (was) {
        // a copy: the handler may leave the room (channels_ changes)
        std::string name = channel;
        handler_.on_subscription_lost(name);
    }
}

// The same for several, looked up one by one: the handler's reaction to
// one may change the others (a room left, channels_ rehashed).
void redis_cluster::lose_all(const std::vector<std::string>& channels) {
    for (const std::string& channel : channels) {
        auto it = channels_.find(channel);
        if (it != channels_.end()) {
            lose(it->first, it->second);
        }
    }
}

void redis_cluster::subscribe_waiting(node& n) {
    for (auto& [channel, st] : channels_) {
        if (st.on == nullptr && owner_of(channel) == &n) {
            subscribe_on(channel, st);
        }
    }
}

/* node events */

void redis_cluster::node_ready(node& n, bool subscriber) {
    if (stopped_) {
        return;
    }
    if (!map_) {
        want_refresh();
    }
    if (subscriber) {
        subscribe_waiting(n);
    }
    bool was_open = opened_;
    update_ready();
    if (was_open && !subscriber && n.serving) {
        handler_.on_redis_ready(redis_connection::role::command);
    }
}

void redis_cluster::node_lost(node& n, bool subscriber) {
    if (stopped_) {
        return;
    }
    if (subscriber) {
        std::vector<std::string> gone;
        for (const auto& [channel, st] : channels_) {
            if (st.on == &n) {
                gone.push_back(channel);
            }
        }
        lose_all(gone);
    }
    want_refresh();
    update_ready();
}

// The handler learns once that commands and subscriptions are usable:
// when every master of a map that covers every slot is connected.  Later
// a master lost or back is its rooms' business (per room: refused calls,
// on_subscription_lost, resubscribed here), and each command connection
// back is told (node_ready).  commands_ready() and subscriber_ready()
// then say whether any master is connected.
void redis_cluster::update_ready() {
    bool all = map_ && map_->covers_all();
    bool any_cmd = false;
    bool any_sub = false;
    for (const auto& n : nodes_) {
        if (n->serving) {
            bool c = n->cmd->commands_ready();
            bool s = n->sub->ready();
            all = all && c && s;
            any_cmd = any_cmd || c;
            any_sub = any_sub || s;
        }
    }
    all_up_ = all;
    if (!opened_) {
        if (!all || stopped_) {
            return;
        }
        opened_ = true;
        cmd_up_ = true;
        sub_up_ = true;
        log_info("redis cluster: every master connected (%zu)",
                 map_->masters().size());
        handler_.on_redis_ready(redis_connection::role::command);
        handler_.on_redis_ready(redis_connection::role::subscriber);
        return;
    }
    cmd_up_ = any_cmd;
    sub_up_ = any_sub;
}

bool redis_cluster::subscriber_ready(std::string_view channel) const {
    node* n = owner_of(channel);
    return n != nullptr && n->sub->ready();
}

/* the timer: retries and refreshes */

void redis_cluster::arm_timer() {
    if (stopped_ || !timer_) {
        return;
    }
    uint64_t now = uv_now(loop_);
    // The map is asked for again every map_max_age_ms, and every
    // degraded_poll_ms while a master is not connected: a replica takes
    // over a failed master within the cluster's node timeout, and the
    // map shows it.
    uint64_t age = map_ ? now - last_map_ : UINT64_MAX;
    uint64_t period = all_up_ ? map_max_age_ms : degraded_poll_ms;
    uint64_t wait = period;
    if (age < period) {
        wait = period - age;
    } else {
        refresh_.request();
    }
    if (std::optional<uint64_t> w = refresh_.wait_ms(now)) {
        wait = std::min(wait, *w);
    }
    for (const auto& [slot, p] : parked_) {
        wait = std::min(wait, p.due > now ? p.due - now : 0);
    }
    // Never 0: a timer started with 0 from its own callback would run
    // again in the same turn of the loop, and again.
    uv_timer_start(timer_.get(), timer_cb, std::max<uint64_t>(wait, 1), 0);
}

void redis_cluster::timer_cb(uv_timer_t* t) {
    auto* self = static_cast<redis_cluster*>(t->data);
    self->refresh();
    self->run_retries();
    self->arm_timer();
}

/* figures */

const redis_stats& redis_cluster::stats() const {
    stats_ = counts_;
    for (const auto& n : nodes_) {
        if (n->serving) {
            stats_.cluster_masters++;
            if (n->cmd->commands_ready() && n->sub->ready()) {
                stats_.cluster_masters_up++;
            }
        }
        const redis_stats& sub = n->sub->stats();
        stats_.errors += sub.errors;
        stats_.timeouts += sub.timeouts;
        stats_.reconnects += sub.reconnects;
        const redis_stats& s = n->cmd->stats();
        stats_.latency.merge(s.latency);
        stats_.errors += s.errors;
        stats_.timeouts += s.timeouts;
        stats_.refused += s.refused;
        stats_.held += s.held;
        stats_.reconnects += s.reconnects;
        stats_.master_switches += s.master_switches;
    }
    return stats_;
}

const std::string& redis_cluster::replid_for(std::string_view channel) const {
    auto it = channels_.find(channel);
    if (it == channels_.end() || it->second.on == nullptr) {
        return no_replid_;
    }
    return it->second.on->cmd->master_replid();
}

bool redis_cluster::timed_out() const {
    return std::any_of(nodes_.begin(), nodes_.end(), [](const auto& n) {
        return n->cmd->timed_out();
    });
}

int64_t redis_cluster::redis_clock_offset_ms() const {
    for (const auto& n : nodes_) {
        if (n->cmd->clock_known()) {
            return n->cmd->redis_clock_offset_ms();
        }
    }
    return 0;
}

bool redis_cluster::clock_known() const {
    return std::any_of(nodes_.begin(), nodes_.end(), [](const auto& n) {
        return n->cmd->clock_known();
    });
}

}  // namespace rooms
