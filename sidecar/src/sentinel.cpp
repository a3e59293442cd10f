#include "sentinel.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <utility>

#include "log.h"
#include "redis_adapter.h"
#include "redis_replies.h"

namespace rooms {

namespace {

// A connection to sentinel `s` on the loop, with AUTH first when there is
// a password (its answer is not needed: without it the next command
// fails); nullptr when it cannot even start.
redisAsyncContext* open_sentinel(uv_loop_t* loop, const host_port& s,
                                 const std::string& password, void* owner,
                                 redisConnectCallback* on_connect,
                                 redisDisconnectCallback* on_disconnect) {
    redisAsyncContext* ac = redisAsyncConnect(s.host.c_str(), s.port);
    if (ac == nullptr) {
        return nullptr;
    }
    if (ac->err || attach_redis_to_loop(ac, loop) != REDIS_OK) {
        log_debug("sentinel %s: %s", s.describe().c_str(),
                  ac->err ? ac->errstr : "cannot attach to the loop");
        redisAsyncFree(ac);
        return nullptr;
    }
    ac->data = owner;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (!password.empty()) {
        redisAsyncCommand(ac, nullptr, nullptr, "AUTH %s", password.c_str());
    }
    return ac;
}

// Frees our context, if any, and forgets it first: its callbacks (a NULL
// reply, the disconnect) find it is no longer ours.
void release(redisAsyncContext*& ac) {
    redisAsyncContext* old = ac;
    ac = nullptr;
    if (old != nullptr) {
        redisAsyncFree(old);
    }
}

}  // namespace

/* pure parts */

std::optional<host_port> parse_master_addr(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 ||
        r.element[0]->type != REDIS_REPLY_STRING ||
        r.element[1]->type != REDIS_REPLY_STRING ||
        r.element[0]->len == 0) {
        return std::nullopt;
    }
    // The host as one piece: an IPv6 address has colons of its own.
    const char* port = r.element[1]->str;
    const char* end = port + r.element[1]->len;
    int p = 0;
    auto [stop, ec] = std::from_chars(port, end, p);
    if (ec != std::errc() || stop != end || p < 1 || p > 65535) {
        return std::nullopt;
    }
    host_port hp;
    hp.host.assign(r.element[0]->str, r.element[0]->len);
    hp.port = p;
    return hp;
}

std::optional<replication_info> parse_replication_info(
    std::string_view text) {
    replication_info info;
    bool role_seen = false;
    while (!text.empty()) {
        size_t eol = text.find('\n');
        std::string_view line = text.substr(0, eol);
        text = eol == text.npos ? std::string_view() : text.substr(eol + 1);
        if (!line.empty() && line.back() == '\r') {
            line.remove_suffix(1);
        }
        if (line.starts_with("role:")) {
            role_seen = true;
            info.master = line.substr(5) == "master";
        } else if (line.starts_with("master_replid:")) {
            info.replid.assign(line.substr(14));
        }
    }
    if (!role_seen) {
        return std::nullopt;
    }
    return info;
}

namespace {

// The port of a payload field; 0 when it is not one.
int parse_port(std::string_view f) {
    int port = 0;
    auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), port);
    if (f.empty() || ec != std::errc() || end != f.data() + f.size() ||
        port < 1 || port > 65535) {
        return 0;
    }
    return port;
}

// An event payload's space-separated fields, into f (at most N); how
// many, or N + 1 when there are more.
template <size_t N>
size_t split_fields(std::string_view payload, std::string_view (&f)[N]) {
    size_t n = 0;
    while (!payload.empty() && n < N) {
        size_t sp = payload.find(' ');
        f[n++] = payload.substr(0, sp);
        payload = sp == payload.npos ? std::string_view()
                                     : payload.substr(sp + 1);
    }
    return payload.empty() ? n : N + 1;
}

}  // namespace

std::optional<host_port> parse_switch_master(std::string_view payload,
                                             std::string_view name) {
    std::string_view f[5];
    int port = 0;
    if (split_fields(payload, f) != 5 || f[0] != name || f[3].empty() ||
        (port = parse_port(f[4])) == 0) {
        return std::nullopt;
    }
    return host_port{std::string(f[3]), port};
}

const std::vector<std::string_view>& failover_channels() {
    static const std::vector<std::string_view> channels = {
        "+elected-leader",
        "+failover-state-send-slaveof-noone",
        "-failover-abort-not-elected",
        "-failover-abort-no-good-slave",
        "-failover-abort-slave-timeout",
        "+switch-master",
    };
    return channels;
}

std::optional<failover_event> parse_failover_event(std::string_view channel,
                                                   std::string_view payload,
                                                   std::string_view name) {
    using kind = failover_event::kind;
    if (channel == "+switch-master") {
        std::optional<host_port> m = parse_switch_master(payload, name);
        if (!m) {
            return std::nullopt;
        }
        return failover_event{kind::switched, std::move(*m)};
    }
    std::string_view f[8];
    size_t n = split_fields(payload, f);
    bool of_master = n == 4 && f[0] == "master" && f[1] == name &&
                     parse_port(f[3]) != 0;
    bool of_replica = n == 8 && f[0] == "slave" && f[4] == "@" &&
                      f[5] == name && !f[2].empty() && parse_port(f[3]) != 0 &&
                      parse_port(f[7]) != 0;
    if (channel == "+elected-leader" && of_master) {
        return failover_event{kind::started, {}};
    }
    if (channel == "+failover-state-send-slaveof-noone" && of_replica) {
        return failover_event{kind::started, {}};
    }
    if (channel.starts_with("-failover-abort-") && of_master) {
        return failover_event{kind::aborted, {}};
    }
    return std::nullopt;
}

bool failover_hold::apply(size_t index, failover_event::kind e) {
    switch (e) {
    case failover_event::kind::started:
        started_.at(index) = true;
        break;
    case failover_event::kind::aborted:
        started_.at(index) = false;
        break;
    case failover_event::kind::switched:
        std::fill(started_.begin(), started_.end(), false);
        break;
    }
    return update();
}

bool failover_hold::expire() {
    std::fill(started_.begin(), started_.end(), false);
    return update();
}

bool failover_hold::update() {
    bool hold = std::find(started_.begin(), started_.end(), true) !=
                started_.end();
    bool changed = hold != holding_;
    holding_ = hold;
    return changed;
}

sentinel_rotation::sentinel_rotation(size_t count) : order_(count) {
    for (size_t i = 0; i < count; i++) {
        order_[i] = i;
    }
}

void sentinel_rotation::answered(size_t index) {
    auto it = std::find(order_.begin(), order_.end(), index);
    if (it == order_.end()) {
        return;
    }
    // The others keep their configured order behind it.
    order_.erase(it);
    std::sort(order_.begin(), order_.end());
    order_.insert(order_.begin(), index);
}

/* sentinel_resolver */

sentinel_resolver::sentinel_resolver(uv_loop_t* loop,
                                     const sentinel_settings& settings,
                                     uint64_t timeout_ms)
    : loop_(loop),
      settings_(settings),
      timeout_ms_(timeout_ms),
      rotation_(settings.sentinels.size()) {}

sentinel_resolver::~sentinel_resolver() {
    stop();
}

void sentinel_resolver::stop() {
    stopped_ = true;
    waiting_.clear();  // before freeing: no callback runs from now on
    drop_context();
    timer_.reset();
}

void sentinel_resolver::resolve(done_fn cb) {
    if (stopped_) {
        return;
    }
    bool running = !waiting_.empty();
    waiting_.push_back(std::move(cb));
    if (running) {
        return;  // shares the discovery in flight
    }
    if (!timer_) {
        int rc = 0;
        timer_ = make_uv_timer(loop_, this, rc);
        if (!timer_) {
            log_error("sentinel: uv_timer_init: %s", uv_strerror(rc));
            finish(std::nullopt);
            return;
        }
    }
    ask(0);
}

// Connects to the step-th sentinel of the rotation and asks it; each
// sentinel gets timeout_ms for the connect and the answer.
void sentinel_resolver::ask(size_t step) {
    step_ = step;
    if (step >= rotation_.order().size()) {
        finish(std::nullopt);
        return;
    }
    const host_port& s = settings_.sentinels[rotation_.order()[step]];
    redisAsyncContext* ac = open_sentinel(loop_, s, settings_.password, this,
                                          connect_cb, disconnect_cb);
    if (ac == nullptr) {
        next();
        return;
    }
    ac_ = ac;
    redisAsyncCommand(ac, reply_cb, this,
                      "SENTINEL get-master-addr-by-name %s",
                      settings_.master_name.c_str());
    uv_timer_start(timer_.get(), timer_cb, timeout_ms_, 0);
}

void sentinel_resolver::next() {
    drop_context();
    ask(step_ + 1);
}

void sentinel_resolver::drop_context() {
    release(ac_);
}

void sentinel_resolver::finish(std::optional<host_port> addr) {
    if (timer_) {
        uv_timer_stop(timer_.get());
    }
    std::vector<done_fn> todo = std::exchange(waiting_, {});
    for (done_fn& cb : todo) {
        cb(addr);
    }
}

void sentinel_resolver::connect_cb(const redisAsyncContext* ac, int status) {
    auto* self = static_cast<sentinel_resolver*>(ac->data);
    if (self->ac_ != ac || status == REDIS_OK) {
        return;
    }
    // hiredis frees the context after this callback.
    self->ac_ = nullptr;
    log_debug("sentinel %s: %s",
              self->settings_.sentinels[self->rotation_.order()[self->step_]]
                  .describe()
                  .c_str(),
              ac->errstr);
    self->next();
}

void sentinel_resolver::disconnect_cb(const redisAsyncContext* ac, int) {
    auto* self = static_cast<sentinel_resolver*>(ac->data);
    if (self->ac_ != ac) {
        return;  // we closed it
    }
    self->ac_ = nullptr;  // freed by hiredis after this callback
    self->next();
}

void sentinel_resolver::reply_cb(redisAsyncContext* ac, void* r,
                                 void* privdata) {
    auto* self = static_cast<sentinel_resolver*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (reply == nullptr || self->ac_ != ac) {
        return;
    }
    size_t index = self->rotation_.order()[self->step_];
    const host_port& s = self->settings_.sentinels[index];
    std::optional<host_port> addr = parse_master_addr(*reply);
    // Done with this sentinel either way: hiredis closes the connection
    // once this callback returns; its disconnect callback finds it is no
    // longer ours.
    self->ac_ = nullptr;
    redisAsyncDisconnect(ac);
    if (!addr) {
        log_warn("sentinel %s does not know master \"%s\"%s%.*s",
                 s.describe().c_str(), self->settings_.master_name.c_str(),
                 reply->type == REDIS_REPLY_ERROR ? ": " : "",
                 reply->type == REDIS_REPLY_ERROR
                     ? static_cast<int>(reply->len)
                     : 0,
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        self->ask(self->step_ + 1);
        return;
    }
    log_debug("sentinel %s: master \"%s\" is at %s", s.describe().c_str(),
              self->settings_.master_name.c_str(), addr->describe().c_str());
    self->rotation_.answered(index);
    self->finish(std::move(addr));
}

void sentinel_resolver::timer_cb(uv_timer_t* t) {
    auto* self = static_cast<sentinel_resolver*>(t->data);
    if (self->waiting_.empty()) {
        return;
    }
    log_debug("sentinel %s: no answer within %llu ms",
              self->settings_.sentinels[self->rotation_.order()[self->step_]]
                  .describe()
                  .c_str(),
              static_cast<unsigned long long>(self->timeout_ms_));
    self->next();
}

/* sentinel_watch */

sentinel_watch::sentinel_watch(uv_loop_t* loop,
                               const sentinel_settings& settings,
                               uint64_t retry_ms, uint64_t hold_max_ms,
                               switch_fn on_switch, hold_fn on_hold)
    : loop_(loop),
      settings_(settings),
      retry_ms_(retry_ms),
      hold_max_ms_(hold_max_ms),
      on_switch_(std::move(on_switch)),
      on_hold_(std::move(on_hold)),
      hold_(settings.sentinels.size()) {}

sentinel_watch::~sentinel_watch() {
    stop();
}

void sentinel_watch::start() {
    int rc = 0;
    hold_timer_ = make_uv_timer(loop_, this, rc);
    if (!hold_timer_) {
        log_error("sentinel watch: uv_timer_init: %s", uv_strerror(rc));
        return;
    }
    for (size_t i = 0; i < settings_.sentinels.size(); i++) {
        auto s = std::make_unique<slot>();
        s->owner = this;
        s->index = i;
        s->timer = make_uv_timer(loop_, s.get(), rc);
        if (!s->timer) {
            log_error("sentinel watch: uv_timer_init: %s", uv_strerror(rc));
            return;
        }
        slots_.push_back(std::move(s));
    }
    for (std::unique_ptr<slot>& s : slots_) {
        watch(*s);
    }
}

void sentinel_watch::stop() {
    stopped_ = true;
    for (std::unique_ptr<slot>& s : slots_) {
        release(s->ac);
        s->timer.reset();
    }
    hold_timer_.reset();
}

void sentinel_watch::watch(slot& s) {
    if (stopped_) {
        return;
    }
    // One that refused the subscription: lost() kept it (it cannot be
    // freed from its own callback).
    release(s.ac);
    const host_port& at = settings_.sentinels[s.index];
    redisAsyncContext* ac = open_sentinel(loop_, at, settings_.password, &s,
                                          connect_cb, disconnect_cb);
    if (ac == nullptr) {
        lost(s, "cannot connect");
        return;
    }
    s.ac = ac;
    std::vector<const char*> argv{"SUBSCRIBE"};
    std::vector<size_t> lens{9};
    for (std::string_view c : failover_channels()) {
        argv.push_back(c.data());
        lens.push_back(c.size());
    }
    redisAsyncCommandArgv(ac, event_cb, &s, static_cast<int>(argv.size()),
                          argv.data(), lens.data());
    log_debug("sentinel watch: subscribing to the failover events on %s",
              at.describe().c_str());
}

// Again after retry_ms.  A failover this sentinel announced still holds
// writes: it may be under way (hold_max_ms bounds it).
void sentinel_watch::lost(slot& s, const char* why) {
    log_debug("sentinel watch: %s: %s, subscribing again in %llu ms",
              settings_.sentinels[s.index].describe().c_str(), why,
              static_cast<unsigned long long>(retry_ms_));
    if (s.timer && !stopped_) {
        uv_timer_start(s.timer.get(), timer_cb, retry_ms_, 0);
    }
}

void sentinel_watch::event(slot& s, const failover_event& e) {
    const char* master = settings_.master_name.c_str();
    const std::string from = settings_.sentinels[s.index].describe();
    switch (e.what) {
    case failover_event::kind::started:
        if (!hold_.started_by(s.index)) {
            log_info("sentinel %s leads a failover of \"%s\": holding "
                     "writes",
                     from.c_str(), master);
        }
        break;
    case failover_event::kind::aborted:
        log_info("sentinel %s: failover of \"%s\" aborted", from.c_str(),
                 master);
        break;
    case failover_event::kind::switched:
        log_info("sentinel %s: master \"%s\" switched to %s", from.c_str(),
                 master, e.master.describe().c_str());
        // The connections leave the old master before writes go again.
        on_switch_(e.master);
        break;
    }
    if (!stopped_ && hold_.apply(s.index, e.what)) {
        hold_changed(e.what == failover_event::kind::switched
                         ? "new master known"
                         : "failover aborted");
    }
}

// Writes wait while a sentinel announced a failover, at most
// hold_max_ms.
void sentinel_watch::hold_changed(const char* why) {
    if (hold_.holding()) {
        uv_timer_start(hold_timer_.get(), hold_timer_cb, hold_max_ms_, 0);
    } else {
        uv_timer_stop(hold_timer_.get());
        log_info("sentinel watch: writes go again (%s)", why);
    }
    on_hold_(hold_.holding());
}

void sentinel_watch::connect_cb(const redisAsyncContext* ac, int status) {
    auto* s = static_cast<slot*>(ac->data);
    if (s->ac != ac || status == REDIS_OK) {
        return;
    }
    s->ac = nullptr;  // freed by hiredis after this callback
    s->owner->lost(*s, ac->errstr);
}

void sentinel_watch::disconnect_cb(const redisAsyncContext* ac, int) {
    auto* s = static_cast<slot*>(ac->data);
    if (s->ac != ac) {
        return;
    }
    s->ac = nullptr;  // freed by hiredis after this callback
    s->owner->lost(*s, "connection lost");
}

void sentinel_watch::event_cb(redisAsyncContext* ac, void* r,
                              void* privdata) {
    auto* s = static_cast<slot*>(privdata);
    auto* reply = static_cast<redisReply*>(r);
    if (reply == nullptr || s->ac != ac) {
        return;
    }
    sentinel_watch* self = s->owner;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn("sentinel watch: SUBSCRIBE refused by %s: %s",
                 self->settings_.sentinels[s->index].describe().c_str(),
                 reply->str);
        self->lost(*s, "refused");
        return;
    }
    std::optional<pubsub_push> push = parse_pubsub_push(*reply);
    if (!push || push->kind != "message" || !push->payload) {
        return;  // a subscription's confirmation
    }
    std::optional<failover_event> e = parse_failover_event(
        push->channel, *push->payload, self->settings_.master_name);
    if (e) {
        self->event(*s, *e);
    }
}

void sentinel_watch::timer_cb(uv_timer_t* t) {
    auto* s = static_cast<slot*>(t->data);
    s->owner->watch(*s);
}

void sentinel_watch::hold_timer_cb(uv_timer_t* t) {
    auto* self = static_cast<sentinel_watch*>(t->data);
    log_warn("sentinel watch: no new master %llu ms after a failover "
             "started: writes go again",
             static_cast<unsigned long long>(self->hold_max_ms_));
    if (self->hold_.expire()) {
        self->hold_changed("hold expired");
    }
}

}  // namespace rooms
