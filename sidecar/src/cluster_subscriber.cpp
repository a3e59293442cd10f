#include "cluster_subscriber.h"

#include <hiredis/hiredis.h>

#include <utility>
#include <vector>

#include "log.h"

namespace rooms {

namespace {

// One write: the commands' RESP text, alive until the write callback.
struct write_req {
    uv_write_t req;
    std::string data;
};

// Appends one command in RESP; false if hiredis cannot format it.
bool append_command(std::string& out,
                    std::initializer_list<std::string_view> argv) {
    std::vector<const char*> args;
    std::vector<size_t> lens;
    args.reserve(argv.size());
    lens.reserve(argv.size());
    for (std::string_view a : argv) {
        args.push_back(a.data());
        lens.push_back(a.size());
    }
    char* cmd = nullptr;
    int len = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()),
                                     args.data(), lens.data());
    if (len < 0) {
        return false;
    }
    out.append(cmd, static_cast<size_t>(len));
    redisFreeCommand(cmd);
    return true;
}

}  // namespace

void cluster_subscriber::reader_free::operator()(redisReader* r) const {
    redisReaderFree(r);
}

cluster_subscriber::cluster_subscriber(uv_loop_t* loop, host_port node,
                                       const std::string& username,
                                       const std::string& password,
                                       handler& h,
                                       const redis_options& opts)
    : loop_(loop),
      node_(std::move(node)),
      username_(username),
      password_(password),
      handler_(h),
      opts_(opts),
      backoff_(opts.backoff_min_ms, opts.backoff_max_ms) {}

cluster_subscriber::~cluster_subscriber() {
    stop();
    *alive_ = false;
}

void cluster_subscriber::start() {
    if (state_ != state::idle) {
        return;
    }
    int rc = 0;
    timer_ = make_uv_timer(loop_, this, rc);
    if (!timer_) {
        log_error("redis node %s: uv_timer_init: %s",
                  node_.describe().c_str(), uv_strerror(rc));
        state_ = state::stopped;
        return;
    }
    connect();
}

void cluster_subscriber::stop() {
    if (state_ == state::stopped) {
        return;
    }
    state_ = state::stopped;
    close_socket();
    dispatch_.clear();  // the barriers' callbacks are not called
    pending_.clear();
    timer_.reset();
}

// The current connection is left: its handle closes, and the requests
// libuv cancels for it find no owner (tcp_->data).
void cluster_subscriber::close_socket() {
    if (tcp_) {
        tcp_->data = nullptr;
        tcp_.reset();
    }
    reader_.reset();
    broken_ = false;
}

void cluster_subscriber::connect() {
    sockaddr_storage addr{};
    const char* host = node_.host.c_str();
    if (uv_ip4_addr(host, node_.port,
                    reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
        uv_ip6_addr(host, node_.port,
                    reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
        connect_failed("not an IP address");
        retry_later();
        return;
    }
    int rc = 0;
    tcp_ = make_uv_handle<uv_tcp_t>(
        [this](uv_tcp_t* t) { return uv_tcp_init(loop_, t); }, rc, this);
    if (!tcp_) {
        connect_failed(uv_strerror(rc));
        retry_later();
        return;
    }
    uv_tcp_nodelay(tcp_.get(), 1);
    auto* req = new uv_connect_t{};
    rc = uv_tcp_connect(req, tcp_.get(),
                        reinterpret_cast<const sockaddr*>(&addr),
                        connect_cb);
    if (rc < 0) {
        delete req;  // its callback will not run
        close_socket();
        connect_failed(uv_strerror(rc));
        retry_later();
        return;
    }
    state_ = state::connecting;
    uv_timer_start(timer_.get(), timer_cb, opts_.timeout_ms, 0);
    log_debug("redis node %s: connecting", node_.describe().c_str());
}

void cluster_subscriber::connect_cb(uv_connect_t* req, int status) {
    std::unique_ptr<uv_connect_t> own(req);
    auto* self = static_cast<cluster_subscriber*>(req->handle->data);
    if (self == nullptr) {
        return;  // left (timed out, stopped): the handle is closing
    }
    if (status < 0) {
        self->close_socket();
        self->connect_failed(uv_strerror(status));
        self->retry_later();
        return;
    }
    int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(self->tcp_.get()),
                           alloc_cb, read_cb);
    if (rc < 0) {
        self->close_socket();
        self->connect_failed(uv_strerror(rc));
        self->retry_later();
        return;
    }
    self->handshake();
}

void cluster_subscriber::connect_failed(const char* why) {
    std::string what = "redis node " + node_.describe() + ": connect";
    backoff_.log_failure(what.c_str(), why);
}

// AUTH when there is a password, then PING: ready once Redis answered
// both (a stopped Redis still completes connects from its listen
// backlog).  The handshake gets its own timeout, from now.
void cluster_subscriber::handshake() {
    state_ = state::handshaking;
    reader_.reset(redisReaderCreate());
    dispatch_.clear();
    pending_.clear();
    uv_timer_start(timer_.get(), timer_cb, opts_.timeout_ms, 0);
    bool ok = false;
    if (reader_ == nullptr) {
        log_error("redis node %s: cannot allocate a reader",
                  node_.describe().c_str());
    } else if (password_.empty()) {
        ok = send({{"PING"}});
    } else if (username_.empty()) {
        ok = send({{"AUTH", password_}, {"PING"}});
        dispatch_.auth_sent();
    } else {
        ok = send({{"AUTH", username_, password_}, {"PING"}});
        dispatch_.auth_sent();
    }
    dispatch_.hello_sent();
    if (!ok) {
        // the timer gives it up
        uv_timer_start(timer_.get(), timer_cb, 0, 0);
    }
}

bool cluster_subscriber::send(
    std::initializer_list<std::initializer_list<std::string_view>>
        commands) {
    if (!tcp_ || broken_) {
        return false;
    }
    auto* w = new write_req{};
    for (std::initializer_list<std::string_view> argv : commands) {
        if (!append_command(w->data, argv)) {
            delete w;
            return false;
        }
    }
    uv_buf_t buf = uv_buf_init(w->data.data(),
                               static_cast<unsigned>(w->data.size()));
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp_.get()),
                      &buf, 1, write_cb);
    if (rc < 0) {
        delete w;  // its callback will not run
        log_warn("redis node %s: write failed: %s",
                 node_.describe().c_str(), uv_strerror(rc));
        broken_ = true;
        uv_timer_start(timer_.get(), timer_cb, 0, 0);
        return false;
    }
    uint64_t now = uv_now(loop_);
    for (size_t i = 0; i < commands.size(); i++) {
        pending_.push(now);
    }
    return true;
}

void cluster_subscriber::write_cb(uv_write_t* req, int status) {
    std::unique_ptr<write_req> own(reinterpret_cast<write_req*>(req));
    auto* self = static_cast<cluster_subscriber*>(req->handle->data);
    if (self == nullptr || status >= 0) {
        return;
    }
    self->lost(uv_strerror(status));
}

void cluster_subscriber::alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
    auto* self = static_cast<cluster_subscriber*>(h->data);
    if (self == nullptr) {
        *buf = uv_buf_init(nullptr, 0);  // read_cb gets UV_ENOBUFS
        return;
    }
    *buf = uv_buf_init(self->read_buf_.data(),
                       static_cast<unsigned>(self->read_buf_.size()));
}

void cluster_subscriber::read_cb(uv_stream_t* s, ssize_t nread,
                                 const uv_buf_t* buf) {
    auto* self = static_cast<cluster_subscriber*>(s->data);
    if (self == nullptr || nread == 0) {
        return;
    }
    if (nread < 0) {
        self->lost(nread == UV_EOF ? "closed by Redis"
                                   : uv_strerror(static_cast<int>(nread)));
        return;
    }
    if (redisReaderFeed(self->reader_.get(), buf->base,
                        static_cast<size_t>(nread)) != REDIS_OK) {
        self->lost("cannot buffer the input");
        return;
    }
    self->read_replies();
}

// Every whole reply read so far, in order.  A callback may leave the
// connection (stop(), a refused handshake) or destroy this object: each
// reply is checked for that after it is dispatched.
void cluster_subscriber::read_replies() {
    std::shared_ptr<bool> alive = alive_;
    while (state_ == state::handshaking || state_ == state::ready) {
        void* r = nullptr;
        if (redisReaderGetReply(reader_.get(), &r) != REDIS_OK) {
            lost("unreadable reply (protocol error)");
            return;
        }
        if (r == nullptr) {
            return;
        }
        std::unique_ptr<redisReply, void (*)(redisReply*)> reply(
            static_cast<redisReply*>(r),
            [](redisReply* p) { freeReplyObject(p); });
        if (reply->type == REDIS_REPLY_ERROR) {
            stats_.errors++;
        }
        if (!dispatch_.take(*reply, *this)) {
            log_error("redis node %s: a reply that answers nothing sent "
                      "(type %d)",
                      node_.describe().c_str(), reply->type);
            lost("unexpected reply");
            return;
        }
        if (!*alive) {
            return;
        }
        // The answered requests leave the tracker (requests sent from
        // the callback joined both).
        while (pending_.size() > dispatch_.pending()) {
            pending_.pop();
        }
    }
}

void cluster_subscriber::on_handshake_done() {
    state_ = state::ready;
    backoff_.connected();
    if (ever_ready_) {
        stats_.reconnects++;
    }
    ever_ready_ = true;
    log_info("redis node %s: subscriber connected",
             node_.describe().c_str());
    uv_timer_start(timer_.get(), timer_cb,
                   deadline_tracker::probe_period(opts_.timeout_ms), 0);
    handler_.on_sub_ready(*this);
}

// AUTH or a PING refused (a wrong password, an ACL): logged once per
// outage, as a failed connect is.
void cluster_subscriber::on_refused(std::string_view error) {
    std::string why = "refused: " + std::string(error);
    lost(why.c_str());
}

void cluster_subscriber::on_ssubscribed(std::string_view channel) {
    handler_.on_ssubscribed(*this, channel);
}

void cluster_subscriber::on_ssubscribe_failed(std::string_view channel,
                                              std::string_view error) {
    handler_.on_ssubscribe_failed(*this, channel, error);
}

void cluster_subscriber::on_smessage(std::string_view channel,
                                     std::string_view payload) {
    handler_.on_smessage(*this, channel, payload);
}

void cluster_subscriber::on_sunsubscribed(std::string_view channel) {
    handler_.on_sunsubscribed(*this, channel);
}

void cluster_subscriber::on_barrier(barrier_fn cb, bool ok) {
    if (cb) {
        cb(ok);
    }
}

// The connection is left (closed by Redis, reset, refused, not
// answering): reconnect later; a ready one is reported lost, then its
// barriers fail, in order.
void cluster_subscriber::lost(const char* why) {
    bool was_ready = state_ == state::ready;
    if (was_ready) {
        log_warn("redis node %s: subscriber connection lost: %s",
                 node_.describe().c_str(), why);
        backoff_.lost();  // the reconnects log at debug level
    } else {
        connect_failed(why);
    }
    close_socket();
    std::vector<barrier_fn> failed = dispatch_.clear();
    pending_.clear();
    retry_later();
    if (!was_ready) {
        return;
    }
    std::shared_ptr<bool> alive = alive_;
    handler_.on_sub_lost(*this);
    for (barrier_fn& cb : failed) {
        if (!*alive || state_ == state::stopped) {
            return;
        }
        if (cb) {
            cb(false);
        }
    }
}

void cluster_subscriber::retry_later() {
    if (state_ == state::stopped) {
        return;
    }
    state_ = state::waiting;
    uint64_t delay = backoff_.next_delay();
    uv_timer_start(timer_.get(), timer_cb, delay, 0);
    log_debug("redis node %s: reconnecting in %llu ms",
              node_.describe().c_str(),
              static_cast<unsigned long long>(delay));
}

// Every timeout / 4 while ready, and when the oldest outstanding
// request's time is up.  An idle connection is PINGed (in subscribed mode
// Redis answers ["pong", ""]).
void cluster_subscriber::check_health() {
    uint64_t now = uv_now(loop_);
    deadline_tracker::verdict v = pending_.check(now, opts_.timeout_ms);
    if (v.what == deadline_tracker::action::hung) {
        stats_.timeouts++;
        timed_out_ = true;
        std::shared_ptr<bool> alive = alive_;
        lost("not answering");
        if (*alive) {
            timed_out_ = false;
        }
        return;
    }
    if (v.what == deadline_tracker::action::probe && send({{"PING"}})) {
        dispatch_.ping_sent();
    }
    if (state_ == state::ready && !broken_) {
        uv_timer_start(timer_.get(), timer_cb, v.next_ms, 0);
    }
}

void cluster_subscriber::timer_cb(uv_timer_t* t) {
    auto* self = static_cast<cluster_subscriber*>(t->data);
    switch (self->state_) {
    case state::waiting:
        self->connect();
        break;
    case state::connecting:
        self->close_socket();
        self->connect_failed("timed out");
        self->retry_later();
        break;
    case state::handshaking:
        self->lost(self->broken_ || self->reader_ == nullptr
                       ? "handshake not sent"
                       : "no answer to the handshake");
        break;
    case state::ready:
        if (self->broken_) {
            self->lost("write failed");
            break;
        }
        self->check_health();
        break;
    default:
        break;
    }
}

bool cluster_subscriber::ssubscribe(std::string_view channel) {
    if (state_ != state::ready || !send({{"SSUBSCRIBE", channel}})) {
        return false;
    }
    dispatch_.ssubscribe_sent(channel);
    log_debug("redis node %s: SSUBSCRIBE %.*s", node_.describe().c_str(),
              static_cast<int>(channel.size()), channel.data());
    return true;
}

// Followed by a PING (sharded_dispatch.h).
bool cluster_subscriber::sunsubscribe(std::string_view channel) {
    if (state_ != state::ready ||
        !send({{"SUNSUBSCRIBE", channel}, {"PING"}})) {
        return false;
    }
    dispatch_.sunsubscribe_sent(channel);
    log_debug("redis node %s: SUNSUBSCRIBE %.*s", node_.describe().c_str(),
              static_cast<int>(channel.size()), channel.data());
    return true;
}

bool cluster_subscriber::barrier(std::string_view channel, barrier_fn cb) {
    if (state_ != state::ready || !send({{"SSUBSCRIBE", channel}})) {
        return false;
    }
    dispatch_.barrier_sent(channel, std::move(cb));
    return true;
}

}  // namespace rooms
