#include "redis_client.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <optional>

#include "log.h"
#include "redis_adapter.h"
#include "redis_replies.h"

namespace rooms {

namespace {

// The command connection sends TIME at least this often, also when it is
// never idle, to keep redis_clock_offset_ms() fresh.
constexpr uint64_t clock_refresh_ms = 10000;

// A call answered NOSCRIPT this often (the scripts cannot be loaded, or
// the cache is flushed faster than they run) gets that error as its reply.
constexpr unsigned max_noscripts = 5;

}  // namespace

/* redis_connection */

redis_connection::redis_connection(uv_loop_t* loop, const redis_address& addr,
                                   role r, redis_client& owner,
                                   const redis_options& opts)
    : loop_(loop),
      addr_(addr),
      role_(r),
      owner_(owner),
      opts_(opts),
      backoff_(opts.backoff_min_ms, opts.backoff_max_ms) {}

redis_connection::~redis_connection() {
    stop();
}

const char* redis_connection::name() const {
    return role_ == role::command ? "command" : "subscriber";
}

void redis_connection::start() {
    if (state_ != state::idle) {
        return;
    }
    int rc = 0;
    timer_ = make_uv_timer(loop_, this, rc);
    if (!timer_) {
        log_error("redis %s: uv_timer_init: %s", name(), uv_strerror(rc));
        state_ = state::stopped;
        return;
    }
    connect();
}

void redis_connection::stop() {
    if (state_ == state::stopped) {
        return;
    }
    state_ = state::stopped;
    redisAsyncContext* ac = ac_;
    ac_ = nullptr;
    if (ac != nullptr) {
        // Runs pending callbacks with a NULL reply; our disconnect
        // callback sees a context it no longer owns and does nothing.
        redisAsyncFree(ac);
    }
    timer_.reset();
}

// Asks the sentinels first when there are any (a new answer every time:
// the master may have moved since the last connect).
void redis_connection::connect() {
    if (owner_.sentinel_ == nullptr) {
        target_ = addr_;
        open();
        return;
    }
    state_ = state::resolving;
    owner_.sentinel_->resolve([this](std::optional<host_port> master) {
        resolved(std::move(master));
    });
}

void redis_connection::resolved(std::optional<host_port> master) {
    if (state_ != state::resolving) {
        return;
    }
    if (!master) {
        connect_failed("no sentinel named the master");
        retry_later();
        return;
    }
    target_ = addr_;
    target_.unix_socket = false;
    target_.host = std::move(master->host);
    target_.port = master->port;
    open();
}

void redis_connection::open() {
    redisAsyncContext* ac =
        target_.unix_socket
            ? redisAsyncConnectUnix(target_.path.c_str())
            : redisAsyncConnect(target_.host.c_str(), target_.port);
    if (ac == nullptr) {
        log_error("redis %s: cannot allocate a context", name());
        retry_later();
        return;
    }
    if (ac->err) {
        connect_failed(ac->errstr);
        redisAsyncFree(ac);
        retry_later();
        return;
    }
    ac->data = this;
    if (attach_redis_to_loop(ac, loop_) != REDIS_OK) {
        log_error("redis %s: cannot attach to the event loop", name());
        redisAsyncFree(ac);
        retry_later();
        return;
    }
    redisAsyncSetConnectCallback(ac, connect_cb);
    redisAsyncSetDisconnectCallback(ac, disconnect_cb);

    ac_ = ac;
    state_ = state::connecting;
    pending_.clear();
    uv_timer_start(timer_.get(), timer_cb, opts_.timeout_ms, 0);
    log_debug("redis %s: connecting to %s", name(),
              target_.describe().c_str());
}

void redis_connection::connect_cb(const redisAsyncContext* ac, int status) {
    auto* c = static_cast<redis_connection*>(ac->data);
    if (c->ac_ != ac) {
        return;
    }
    if (status != REDIS_OK) {
        // hiredis frees the context after this callback.
        c->ac_ = nullptr;
        c->connect_failed(ac->errstr);
        c->retry_later();
        return;
    }
    c->handshake();
}

void redis_connection::connect_failed(const char* why) {
    std::string what = std::string("redis ") + name() + ": connect to " +
                       target_.describe();
    backoff_.log_failure(what.c_str(), why);
}

// AUTH and SELECT when configured, then TIME (command) or PING
// (subscriber, not subscribed yet): the connection is ready only once
// Redis answered them all.  A stopped Redis still accepts connects (the
// kernel completes them from its listen backlog), so without the answer
// we would call it ready, find it hung one timeout later, and so on.
void redis_connection::handshake() {
    state_ = state::handshaking;
    handshake_left_ = 0;
    // The handshake gets its own timeout, from now.
    uv_timer_start(timer_.get(), timer_cb, opts_.timeout_ms, 0);

    auto queued = [this](int rc) {
        if (rc == REDIS_OK) {
            handshake_left_++;
            sent();
        }
        return rc;
    };
    int rc = REDIS_OK;
    if (!addr_.password.empty()) {
        if (!addr_.username.empty()) {
            rc = queued(redisAsyncCommand(ac_, handshake_cb, this,
                                          "AUTH %s %s",
                                          addr_.username.c_str(),
                                          addr_.password.c_str()));
        } else {
            rc = queued(redisAsyncCommand(ac_, handshake_cb, this, "AUTH %s",
                                          addr_.password.c_str()));
        }
    }
    if (rc == REDIS_OK && addr_.db != 0) {
        rc = queued(redisAsyncCommand(ac_, handshake_cb, this, "SELECT %d",
                                      addr_.db));
    }
    // The command connection learns the replication id; behind Sentinel
    // both check that they reached a master.
    if (rc == REDIS_OK &&
        (role_ == role::command || owner_.sentinel_ != nullptr)) {
        rc = queued(redisAsyncCommand(ac_, info_cb, this,
                                      "INFO replication"));
    }
    if (rc == REDIS_OK) {
        rc = queued(redisAsyncCommand(
            ac_, handshake_cb, this,
            role_ == role::command ? "TIME" : "PING"));
        last_time_sent_ = uv_now(loop_);
    }
    if (rc != REDIS_OK) {
        // We are inside hiredis's connect callback, where the context must
        // not be freed: let the timer give up on it right away.
        log_error("redis %s: cannot queue the handshake", name());
        uv_timer_start(timer_.get(), timer_cb, 0, 0);
    }
}

// A handshake reply's connection, once the reply is taken; nullptr when
// the context is going away.
redis_connection* redis_connection::handshake_reply(redisAsyncContext* ac,
                                                    const redisReply* reply,
                                                    void* privdata) {
    auto* c = static_cast<redis_connection*>(privdata);
    if (reply == nullptr || c->ac_ != ac) {
        return nullptr;
    }
    c->took_reply(reply);
    return c;
}

void redis_connection::handshake_cb(redisAsyncContext* ac, void* r,
                                    void* privdata) {
    auto* reply = static_cast<redisReply*>(r);
    redis_connection* c = handshake_reply(ac, reply, privdata);
    if (c == nullptr) {
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis %s: handshake refused: %s", c->name(), reply->str);
        // Disconnects once the pending replies are in; the disconnect
        // callback retries later.
        redisAsyncDisconnect(ac);
        return;
    }
    c->handshake_step_done();
}

void redis_connection::handshake_step_done() {
    if (--handshake_left_ == 0) {
        became_ready();
    }
}

// A server that is not a master (a demoted master back up, a replica a
// stale sentinel named) is left: the next connect asks the sentinels
// again.  Without Sentinel, a server that does not answer INFO (an ACL
// without it) is used anyway, with no replication id.
void redis_connection::info_cb(redisAsyncContext* ac, void* r,
                               void* privdata) {
    auto* reply = static_cast<redisReply*>(r);
    redis_connection* c = handshake_reply(ac, reply, privdata);
    if (c == nullptr) {
        return;
    }
    std::optional<replication_info> info;
    if (reply->type == REDIS_REPLY_STRING) {
        info = parse_replication_info(std::string_view(reply->str,
                                                       reply->len));
    }
    if (c->owner_.sentinel_ != nullptr && (!info || !info->master)) {
        log_warn("redis %s: %s is not a master, asking the sentinels again",
                 c->name(), c->target_.describe().c_str());
        redisAsyncDisconnect(ac);  // the disconnect callback retries
        return;
    }
    if (c->role_ == role::command) {
        c->owner_.replid_ = info ? info->replid : std::string();
    }
    c->handshake_step_done();
}

void redis_connection::probe_cb(redisAsyncContext* ac, void* r,
                                void* privdata) {
    auto* c = static_cast<redis_connection*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (reply != nullptr && c->ac_ == ac) {
        c->took_reply(reply);
    }
}

void redis_connection::took_reply(const redisReply* reply) {
    uint64_t sent_at = pending_.oldest_sent();
    pending_.pop();
    if (role_ == role::command && reply->type == REDIS_REPLY_ARRAY) {
        owner_.clock_sample(sent_at, uv_now(loop_), reply);  // TIME
    }
}

void redis_connection::became_ready() {
    state_ = state::ready;
    backoff_.connected();
    if (role_ == role::command && !owner_.replid_.empty()) {
        log_info("redis %s connected to %s (replication id %s)", name(),
                 target_.describe().c_str(), owner_.replid_.c_str());
    } else {
        log_info("redis %s connected to %s", name(),
                 target_.describe().c_str());
    }
    // From now on the timer runs the health checks.
    uv_timer_start(timer_.get(), timer_cb,
                   deadline_tracker::probe_period(opts_.timeout_ms), 0);
    owner_.connection_ready(role_);
}

// Runs while ready: every timeout / 4, and when the oldest outstanding
// request's time is up.  An idle connection is probed so that a hang is
// found before anyone waits on it: TIME on the command connection (which
// also samples Redis's clock); on the subscriber connection a barrier (a
// SUBSCRIBE of the barrier channel).  Not PING there: once subscribed,
// hiredis 0.14 queues a PING's callback among the "invalid" commands,
// which it only runs for a reply that is not an array, but Redis answers
// a PING in subscribed mode with the array ["pong", ""], which hiredis
// then looks up as a message of channel "": the callback never runs.
void redis_connection::check_health() {
    uint64_t now = uv_now(loop_);
    deadline_tracker::verdict v = pending_.check(now, opts_.timeout_ms);
    if (v.what == deadline_tracker::action::hung) {
        log_warn("redis %s connection not answering for %llu ms, "
                 "reconnecting",
                 name(),
                 static_cast<unsigned long long>(pending_.oldest_age(now)));
        // The reconnects log at debug level until one succeeds.
        backoff_.lost();
        owner_.timed_out_ = true;
        owner_.stats_.timeouts++;
        abandon();
        owner_.timed_out_ = false;
        return;
    }
    bool probe = v.what == deadline_tracker::action::probe;
    if (role_ == role::command &&
        (probe || now - last_time_sent_ >= clock_refresh_ms)) {
        if (redisAsyncCommand(ac_, probe_cb, this, "TIME") == REDIS_OK) {
            sent();
            last_time_sent_ = now;
        }
    } else if (probe) {
        owner_.barrier([](bool) {});
    }
    uv_timer_start(timer_.get(), timer_cb, v.next_ms, 0);
}

void redis_connection::disconnect_cb(const redisAsyncContext* ac,
                                     int status) {
    auto* c = static_cast<redis_connection*>(ac->data);
    if (c->ac_ != ac) {
        return;  // abandoned or stopped by us
    }
    // hiredis frees the context after this callback.
    c->ac_ = nullptr;
    c->pending_.clear();
    bool was_ready =
        c->state_ == state::ready || c->state_ == state::draining;
    if (status != REDIS_OK) {
        log_warn("redis %s connection lost: %s", c->name(), ac->errstr);
    } else {
        log_warn("redis %s connection closed", c->name());
    }
    c->retry_later();
    if (was_ready) {
        c->owner_.connection_lost(c->role_);
    }
}

void redis_connection::abandon() {
    redisAsyncContext* ac = ac_;
    bool was_ready = state_ == state::ready || state_ == state::draining;
    ac_ = nullptr;
    pending_.clear();
    retry_later();
    if (ac != nullptr) {
        redisAsyncFree(ac);
    }
    if (was_ready) {
        owner_.connection_lost(role_);
    }
}

// Commands in flight on the command connection were sent to the old
// master, which still runs them (a demoted master refuses writes): their
// answers are awaited rather than turned into "in doubt", which the new
// master, missing what the old one did not replicate, could not settle
// truthfully.  The subscriber connection is left after that
// (redis_client::leave_subscriber).
void redis_connection::master_moved(const host_port& master) {
    if (at(master)) {
        return;
    }
    if (state_ != state::ready && state_ != state::connecting &&
        state_ != state::handshaking) {
        return;  // resolving or waiting: the sentinels are asked next
    }
    log_info("redis %s: leaving %s, the master moved to %s", name(),
             target_.describe().c_str(), master.describe().c_str());
    backoff_.restart();
    backoff_.lost();  // the reconnects log at debug level until one works
    if (state_ == state::ready && role_ == role::command &&
        outstanding() > 0) {
        state_ = state::draining;
        uv_timer_start(timer_.get(), timer_cb, opts_.timeout_ms, 0);
        // Closes once every answer is in (maybe right now: the disconnect
        // callback then runs from here).
        redisAsyncDisconnect(ac_);
        return;
    }
    abandon();
}

// From a callback of this connection's context, which must not be freed
// there: the timer leaves it.
void redis_connection::leave_soon(const host_port& master) {
    if (state_ != state::ready) {
        return;
    }
    leaving_to_ = master;
    uv_timer_start(timer_.get(), timer_cb, 0, 0);
}

void redis_connection::retry_later() {
    if (state_ == state::stopped) {
        return;
    }
    state_ = state::waiting;
    uint64_t delay = backoff_.next_delay();
    uv_timer_start(timer_.get(), timer_cb, delay, 0);
    log_debug("redis %s: reconnecting in %llu ms", name(),
              static_cast<unsigned long long>(delay));
}

void redis_connection::timer_cb(uv_timer_t* t) {
    auto* c = static_cast<redis_connection*>(t->data);
    switch (c->state_) {
    case state::waiting:
        c->connect();
        break;
    case state::connecting:
    case state::handshaking:
        c->connect_failed(c->state_ == state::connecting
                              ? "timed out"
                              : "no answer to the handshake");
        c->abandon();
        break;
    case state::ready:
        if (c->leaving_to_) {
            host_port master = std::move(*c->leaving_to_);
            c->leaving_to_.reset();
            c->master_moved(master);
            break;
        }
        c->check_health();
        break;
    case state::draining:
        log_warn("redis %s: no answer from the old master for %llu ms, "
                 "leaving it",
                 c->name(),
                 static_cast<unsigned long long>(c->opts_.timeout_ms));
        c->abandon();
        break;
    default:
        break;
    }
}

/* redis_client */

redis_client::redis_client(uv_loop_t* loop, const redis_address& addr,
                           handler& h, const redis_options& opts)
    : handler_(h),
      addr_(addr),
      opts_(opts),
      sentinel_(opts.sentinel != nullptr && !opts.sentinel->sentinels.empty()
                    ? std::make_unique<sentinel_resolver>(
                          loop, *opts.sentinel, opts.timeout_ms)
                    : nullptr),
      watch_(sentinel_ ? std::make_unique<sentinel_watch>(
                             loop, *opts.sentinel, opts.backoff_max_ms,
                             failover_hold_max_ms,
                             [this](const host_port& master) {
                                 master_moved(master);
                             },
                             [this](bool hold) { failover_hold(hold); })
                       : nullptr),
      cmd_(loop, addr_, redis_connection::role::command, *this, opts_),
      sub_(loop, addr_, redis_connection::role::subscriber, *this, opts_) {}

redis_client::~redis_client() = default;

void redis_client::start() {
    if (sentinel_) {
        std::string list;
        for (const host_port& s : opts_.sentinel->sentinels) {
            list += (list.empty() ? "" : ",") + s.describe();
        }
        log_info("redis master \"%s\" through sentinels %s",
                 opts_.sentinel->master_name.c_str(), list.c_str());
        watch_->start();
    } else {
        log_info("redis at %s", addr_.describe().c_str());
    }
    cmd_.start();
    if (opts_.subscriber) {
        sub_.start();
    }
}

void redis_client::stop() {
    stopped_ = true;
    if (sentinel_) {
        sentinel_->stop();
        watch_->stop();
    }
    cmd_.stop();
    sub_.stop();
    unconfirmed_.clear();
    barriers_.clear();
    recovering_ = false;
    retry_.clear();  // their callbacks are not called once stopped
    held_.clear();
}

void redis_client::connection_ready(redis_connection::role r) {
    bool& ever = ever_ready_[r == redis_connection::role::command ? 0 : 1];
    if (ever) {
        stats_.reconnects++;
    }
    ever = true;
    if (r == redis_connection::role::command) {
        if (holding_) {
            return;  // failover_hold(false) goes on from here
        }
        sha_.clear();
        load_scripts();
    }
    if (!stopped_) {
        handler_.on_redis_ready(r);
    }
}

// The command connection drains first; the subscriber connection stays
// until it is done (connection_lost), then until a barrier shows that
// the copies of everything the old master published to it, the messages
// just answered included (two sockets: no order between them), have
// arrived.  Otherwise a sender would be told "published" and never see
// its copy, which the new master may not have.
void redis_client::master_moved(const host_port& master) {
    // Every sentinel announces the switch: one failover counted per new
    // master.
    if (last_switch_ != master) {
        stats_.master_switches++;
        last_switch_ = master;
    }
    if (cmd_.at(master) && sub_.at(master)) {
        return;  // already there (reconnected after a loss)
    }
    moved_to_ = master;
    cmd_.master_moved(master);
    if (!cmd_.draining()) {
        leave_subscriber();
    }
}

// While held, the command connection counts as not usable; when the
// hold ends, what was refused meanwhile (the scripts' loading, the rooms'
// syncs, settles) is done as after a reconnect.
void redis_client::failover_hold(bool hold) {
    holding_ = hold;
    if (hold || stopped_ || !cmd_.ready()) {
        return;
    }
    sha_.clear();
    load_scripts();
    handler_.on_redis_ready(redis_connection::role::command);
}

void redis_client::leave_subscriber() {
    if (!moved_to_) {
        return;
    }
    host_port master = std::move(*moved_to_);
    moved_to_.reset();
    bool waits = sub_.ready() && barrier([this, master](bool ok) {
        if (ok) {
            sub_.leave_soon(master);
        }
    });
    if (!waits) {
        sub_.master_moved(master);
    }
}

void redis_client::connection_lost(redis_connection::role r) {
    std::deque<barrier_fn> failed;
    if (r == redis_connection::role::subscriber) {
        unconfirmed_.clear();
        failed.swap(barriers_);
    } else {
        check_backlog();
    }
    if (stopped_) {
        return;
    }
    if (r == redis_connection::role::command) {
        fail_held();  // after the calls in flight, as they were sent
        leave_subscriber();  // the old master's answers are all in
    }
    handler_.on_redis_lost(r);
    for (barrier_fn& cb : failed) {
        cb(false);
    }
}

void redis_client::clock_sample(uint64_t sent, uint64_t now,
                                const redisReply* r) {
    std::optional<redis_time> t = parse_time_reply(*r);
    if (!t) {
        return;
    }
    int64_t sec = t->sec;
    int64_t usec = t->usec;
    // Redis read its clock about half the round trip before `now`.
    uint64_t rtt = now >= sent ? now - sent : 0;
    int64_t redis_now =
        sec * 1000 + usec / 1000 + static_cast<int64_t>(rtt / 2);
    int64_t offset = redis_now - static_cast<int64_t>(now);
    // Logged when it moves more than the sampling noise (every probe
    // would flood a debug log).
    if (!clock_known_ || offset > clock_offset_ms_ + 5 ||
        offset < clock_offset_ms_ - 5) {
        log_debug("redis clock offset %lld ms (round trip %llu ms)",
                  static_cast<long long>(offset),
                  static_cast<unsigned long long>(rtt));
    }
    clock_offset_ms_ = offset;
    clock_known_ = true;
}

// Ends a backlog episode once half the outstanding commands are answered
// (or the connection is gone).
void redis_client::check_backlog() {
    if (backlogged_ && cmd_.outstanding() <= opts_.max_pending / 2) {
        log_info("redis command connection: accepting commands again "
                 "(refused %llu)",
                 static_cast<unsigned long long>(refused_));
        backlogged_ = false;
        refused_ = 0;
    }
}

struct redis_client::call {
    redis_client* self = nullptr;
    const lua_script* script = nullptr;  // EVAL/EVALSHA: for a retry
    std::vector<std::string> argv;
    reply_fn cb;
    uint64_t serial = 0;     // sent_serial_ when it was written
    uint64_t written_ns = 0; // uv_hrtime() then: its latency
    unsigned noscripts = 0;  // NOSCRIPT answers so far
};

bool redis_client::command(const std::vector<std::string>& argv,
                           reply_fn cb) {
    auto c = std::make_unique<call>();
    c->argv = argv;
    c->cb = std::move(cb);
    return send(std::move(c));
}

bool redis_client::eval(const lua_script& script,
                        const std::vector<std::string>& keys,
                        const std::vector<std::string>& args, reply_fn cb) {
    const lua_script& s = opts_.sharded ? sharded_script(script) : script;
    auto c = std::make_unique<call>();
    c->script = &s;
    c->argv.reserve(3 + keys.size() + args.size());
    auto it = sha_.find(&s);
    if (it != sha_.end()) {
        c->argv.emplace_back("EVALSHA");
        c->argv.push_back(it->second);
    } else {
        c->argv.emplace_back("EVAL");
        c->argv.push_back(s.body);
    }
    c->argv.push_back(std::to_string(keys.size()));
    c->argv.insert(c->argv.end(), keys.begin(), keys.end());
    c->argv.insert(c->argv.end(), args.begin(), args.end());
    c->cb = std::move(cb);
    return send(std::move(c));
}

bool redis_client::send(std::unique_ptr<call> c) {
    if (!cmd_.ready() || stopped_) {
        return false;
    }
    if (holding_) {
        // A failover is under way: the master may be about to lose its
        // replica's copy of anything written now (docs/redis.md
        // "Sentinel").
        stats_.held++;
        return false;
    }
    size_t queued = cmd_.outstanding() + retry_.size() + held_.size();
    if (queued >= opts_.max_pending) {
        // Redis is far behind: answer "unavailable" rather than queue
        // without bound.
        if (!backlogged_) {
            log_warn("redis command connection has %zu commands "
                     "outstanding: refusing more until half are answered",
                     queued);
            backlogged_ = true;
        }
        refused_++;
        stats_.refused++;
        return false;
    }
    if (recovering_) {
        held_.push_back(std::move(c));  // behind the NOSCRIPT retries
        return true;
    }
    return write(c);
}

// Hands the call to hiredis; on success it owns it until command_cb.
bool redis_client::write(std::unique_ptr<call>& c) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    argv.reserve(c->argv.size());
    lens.reserve(c->argv.size());
    for (const std::string& a : c->argv) {
        argv.push_back(a.data());
        lens.push_back(a.size());
    }
    c->self = this;
    int rc = redisAsyncCommandArgv(cmd_.context(), command_cb, c.get(),
                                   static_cast<int>(argv.size()),
                                   argv.data(), lens.data());
    if (rc != REDIS_OK) {
        return false;
    }
    c->serial = ++sent_serial_;
    c->written_ns = uv_hrtime();
    cmd_.sent();
    c.release();
    return true;
}

void redis_client::load_scripts() {
    for (const lua_script* const* s = all_scripts(); *s != nullptr; s++) {
        const lua_script* script =
            opts_.sharded ? &sharded_script(**s) : *s;
        command({"SCRIPT", "LOAD", script->body},
                [this, script](const redisReply* r) {
                    if (r != nullptr && r->type == REDIS_REPLY_STRING) {
                        sha_[script] = std::string(r->str, r->len);
                    } else if (r != nullptr) {
                        log_error("redis SCRIPT LOAD %s failed: %s",
                                  script->name,
                                  r->type == REDIS_REPLY_ERROR ? r->str
                                                               : "?");
                    }
                });
    }
}

// Every call in flight when the first NOSCRIPT came is answered: the
// scripts are loaded again, pipelined ahead of the calls that failed and
// of those given meanwhile, which follow in their original order.
void redis_client::resume_after_noscript() {
    recovering_ = false;
    std::deque<std::unique_ptr<call>> calls;
    calls.swap(retry_);
    size_t retried = calls.size();
    for (std::unique_ptr<call>& c : held_) {
        calls.push_back(std::move(c));
    }
    held_.clear();
    log_info("redis: loading the scripts again, then %zu failed and %zu "
             "held commands in order",
             retried, calls.size() - retried);
    load_scripts();
    std::vector<reply_fn> failed;
    for (std::unique_ptr<call>& c : calls) {
        if (!write(c)) {
            failed.push_back(std::move(c->cb));
        }
    }
    for (reply_fn& cb : failed) {
        if (cb) {
            cb(nullptr);
        }
    }
}

void redis_client::fail_held() {
    recovering_ = false;
    std::deque<std::unique_ptr<call>> calls;
    calls.swap(retry_);
    for (std::unique_ptr<call>& c : held_) {
        calls.push_back(std::move(c));
    }
    held_.clear();
    for (std::unique_ptr<call>& c : calls) {
        if (c->cb) {
            c->cb(nullptr);
        }
    }
}

void redis_client::command_cb(redisAsyncContext*, void* r, void* privdata) {
    std::unique_ptr<call> c(static_cast<call*>(privdata));
    auto* reply = static_cast<redisReply*>(r);
    redis_client* self = c->self;
    if (reply != nullptr) {
        self->cmd_.answered();
        self->check_backlog();
        self->stats_.latency.observe(
            static_cast<double>(uv_hrtime() - c->written_ns) / 1e9);
        if (reply->type == REDIS_REPLY_ERROR) {
            self->stats_.errors++;
        }
    }
    if (self->stopped_) {
        return;
    }
    if (reply == nullptr) {
        // The connection is going: connection_lost() fails what is held.
        if (c->cb) {
            c->cb(nullptr);
        }
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && c->script != nullptr &&
        c->argv[0] == "EVALSHA" && c->noscripts < max_noscripts &&
        std::string_view(reply->str, reply->len).starts_with("NOSCRIPT")) {
        // The script cache was flushed (SCRIPT FLUSH, a restarted Redis
        // behind a proxy): every EVALSHA in flight fails the same way.
        // They run again, in order, once all of them are answered; calls
        // given meanwhile wait behind them (send()).
        c->noscripts++;
        if (!self->recovering_) {
            self->recovering_ = true;
            self->recover_upto_ = self->sent_serial_;
            log_warn("redis: NOSCRIPT for %s (script cache flushed): "
                     "holding commands until the scripts are loaded again",
                     c->script->name);
        }
        bool last = c->serial == self->recover_upto_;
        self->retry_.push_back(std::move(c));
        if (last) {
            self->resume_after_noscript();
        }
        return;
    }
    bool last = self->recovering_ && c->serial == self->recover_upto_;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("redis %s failed: %.*s",
                 c->script != nullptr ? c->script->name : c->argv[0].c_str(),
                 static_cast<int>(reply->len), reply->str);
    }
    if (c->cb) {
        c->cb(reply);
    }
    if (last && self->recovering_ && !self->stopped_) {
        self->resume_after_noscript();
    }
}

bool redis_client::subscribe(std::string_view channel) {
    if (!sub_.ready()) {
        return false;
    }
    int rc = redisAsyncCommand(sub_.context(), subscribe_cb, this,
                               "SUBSCRIBE %b", channel.data(),
                               channel.size());
    if (rc != REDIS_OK) {
        return false;
    }
    sub_.sent();
    unconfirmed_[std::string(channel)]++;
    log_debug("redis SUBSCRIBE %.*s", static_cast<int>(channel.size()),
              channel.data());
    return true;
}

bool redis_client::unsubscribe(std::string_view channel) {
    if (!sub_.ready()) {
        return false;
    }
    int rc = redisAsyncCommand(sub_.context(), subscribe_cb, this,
                               "UNSUBSCRIBE %b", channel.data(),
                               channel.size());
    log_debug("redis UNSUBSCRIBE %.*s", static_cast<int>(channel.size()),
              channel.data());
    return rc == REDIS_OK;
}

bool redis_client::barrier(barrier_fn cb) {
    if (!sub_.ready() || stopped_ || barrier_channel_.empty()) {
        return false;
    }
    int rc = redisAsyncCommand(sub_.context(), subscribe_cb, this,
                               "SUBSCRIBE %b", barrier_channel_.data(),
                               barrier_channel_.size());
    if (rc != REDIS_OK) {
        return false;
    }
    sub_.sent();
    barriers_.push_back(std::move(cb));
    return true;
}

void redis_client::subscribe_cb(redisAsyncContext*, void* r, void* privdata) {
    auto* self = static_cast<redis_client*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (reply == nullptr || self->stopped_) {
        return;  // the context is going away
    }
    std::optional<pubsub_push> push = parse_pubsub_push(*reply);
    if (!push) {
        log_warn("redis: unexpected reply on the subscriber connection");
        return;
    }

    std::string_view kind = push->kind;
    std::string_view channel = push->channel;

    if (kind == "message") {
        if (push->payload) {
            self->handler_.on_message(channel, *push->payload);
        }
        return;
    }

    // Every SUBSCRIBE (of a room or a barrier) is confirmed, in order.
    // UNSUBSCRIBEs are not counted: hiredis runs no callback for the reply
    // of one whose channel it no longer lists.
    if (kind == "subscribe") {
        self->sub_.answered();
    }

    if (kind == "subscribe" && channel == self->barrier_channel_) {
        if (!self->barriers_.empty()) {
            barrier_fn cb = std::move(self->barriers_.front());
            self->barriers_.pop_front();
            cb(true);
        }
        return;
    }

    if (kind == "subscribe") {
        auto it = self->unconfirmed_.find(std::string(channel));
        if (it == self->unconfirmed_.end()) {
            return;
        }
        if (--it->second > 0) {
            return;  // a later SUBSCRIBE of the channel is in flight
        }
        self->unconfirmed_.erase(it);
        self->handler_.on_subscribed(channel);
    }
}

}  // namespace rooms
