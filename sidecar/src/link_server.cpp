#include "link_server.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "log.h"

namespace rooms {

namespace {

constexpr unsigned max_iov = 256;

unsigned long long ull(uint64_t v) {
    return static_cast<unsigned long long>(v);
}

// True if some process accepts connections on the socket at path.
bool socket_in_use(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_un sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.data(),
                std::min(path.size(), sizeof(sa.sun_path) - 1));
    int rc = connect(fd, reinterpret_cast<struct sockaddr*>(&sa),
                     sizeof(sa));
    ::close(fd);
    return rc == 0;
}

}  // namespace

frame_ptr encode_frame(const ngx_rooms_ipc_msg_t& msg) {
    size_t size = ngx_rooms_ipc_size(&msg);
    if (size == 0) {
        return nullptr;
    }
    auto s = std::make_shared<std::string>(size, '\0');
    ngx_rooms_ipc_encode(reinterpret_cast<uint8_t*>(s->data()), &msg);
    return s;
}

/* link */

link::link(link_server& server, uint64_t id) : server_(server), id_(id) {
    std::memset(&pipe_, 0, sizeof(pipe_));
}

int link::accept(uv_stream_t* listener) {
    int rc = uv_pipe_init(server_.loop_, &pipe_, 0);
    if (rc < 0) {
        return rc;
    }
    pipe_.data = this;
    rc = uv_accept(listener, reinterpret_cast<uv_stream_t*>(&pipe_));
    if (rc == 0) {
        rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&pipe_), alloc_cb,
                           read_cb);
    }
    return rc;
}

void link::send(frame_ptr frame) {
    if (!frame || frame->empty() || closing()) {
        return;
    }
    queued_ += frame->size();
    out_.push_back(std::move(frame));

    if (queued_ > link_out_limit) {
        log_error("link output over limit link=%llu pid=%u queued=%zu",
                  ull(id_), pid_, queued_);
        close_later("output queue over limit");
        return;
    }
    if (queued_ > link_out_high_water && !over_high_water_) {
        over_high_water_ = true;
        log_warn("link output backlog link=%llu pid=%u queued=%zu", ull(id_),
                 pid_, queued_);
    }
    server_.mark_dirty(*this);
}

bool link::send(const ngx_rooms_ipc_msg_t& msg) {
    frame_ptr f = encode_frame(msg);
    if (!f) {
        log_error("cannot encode frame type=0x%02x link=%llu conn=%llu",
                  msg.type, ull(id_), ull(msg.id));
        return false;
    }
    send(std::move(f));
    return true;
}

void link::close_later(const char* reason) {
    if (closing()) {
        return;
    }
    doomed_ = true;
    doom_reason_ = reason;
    // The queued output is dropped with the link.
    server_.mark_dirty(*this);
}

void link::close_now(const char* reason) {
    if (closing_) {
        return;
    }
    closing_ = true;
    if (pid_ != 0) {
        log_info("link closed link=%llu pid=%u reason=\"%s\"", ull(id_), pid_,
                 reason);
    } else {
        log_info("link closed link=%llu reason=\"%s\"", ull(id_), reason);
    }

    // From here on the close callback owns this object.
    std::unique_ptr<link> self = server_.take(id_);
    server_.handler_.on_link_closed(*this);
    out_.clear();
    uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), close_cb);
    (void) self.release();
}

void link::close_cb(uv_handle_t* h) {
    delete static_cast<link*>(h->data);
}

void link::flush() {
    if (closing() || writing_ || out_.empty()) {
        return;
    }

    uv_buf_t bufs[max_iov];
    unsigned n = 0;
    auto* stream = reinterpret_cast<uv_stream_t*>(&pipe_);

    // Write what the socket takes now, max_iov frames at a time.
    for (;;) {
        size_t want = 0;
        n = 0;
        for (auto it = out_.begin(); it != out_.end() && n < max_iov; ++it) {
            const std::string& f = **it;
            size_t skip = n == 0 ? out_offset_ : 0;
            bufs[n++] = uv_buf_init(const_cast<char*>(f.data()) + skip,
                                    static_cast<unsigned>(f.size() - skip));
            want += f.size() - skip;
        }

        int rc = uv_try_write(stream, bufs, n);
        if (rc == UV_EAGAIN) {
            rc = 0;
        }
        if (rc < 0) {
            log_warn("link write failed link=%llu pid=%u: %s", ull(id_),
                     pid_, uv_strerror(rc));
            close_now("write failed");
            return;
        }
        consume(static_cast<size_t>(rc));
        if (out_.empty()) {
            return;
        }
        if (static_cast<size_t>(rc) < want) {
            break;
        }
    }

    // The kernel buffer is full: hand the rest to libuv, which writes it
    // when the socket drains.  Frames queued meanwhile wait in out_.
    auto* req = new (std::nothrow) write_req;
    if (req == nullptr) {
        close_now("out of memory");
        return;
    }
    req->owner = this;
    req->bytes = 0;
    n = 0;
    while (!out_.empty() && n < max_iov) {
        frame_ptr f = std::move(out_.front());
        out_.pop_front();
        size_t skip = n == 0 ? out_offset_ : 0;
        bufs[n++] = uv_buf_init(const_cast<char*>(f->data()) + skip,
                                static_cast<unsigned>(f->size() - skip));
        req->bytes += f->size() - skip;
        req->frames.push_back(std::move(f));
    }
    out_offset_ = 0;
    req->req.data = req;

    int rc = uv_write(&req->req, stream, bufs, n, write_cb);
    if (rc < 0) {
        delete req;
        log_warn("link write failed link=%llu pid=%u: %s", ull(id_), pid_,
                 uv_strerror(rc));
        close_now("write failed");
        return;
    }
    writing_ = true;
}

void link::consume(size_t n) {
    queued_ -= n;
    while (n > 0 && !out_.empty()) {
        size_t left = out_.front()->size() - out_offset_;
        if (n < left) {
            out_offset_ += n;
            break;
        }
        n -= left;
        out_offset_ = 0;
        out_.pop_front();
    }
    if (over_high_water_ && queued_ < link_out_low_water) {
        over_high_water_ = false;
        log_info("link output backlog cleared link=%llu pid=%u", ull(id_),
                 pid_);
    }
}

void link::write_cb(uv_write_t* r, int status) {
    auto* req = static_cast<write_req*>(r->data);
    link* l = req->owner;
    size_t bytes = req->bytes;
    delete req;

    l->writing_ = false;
    if (status < 0) {
        if (!l->closing_) {
            log_warn("link write failed link=%llu pid=%u: %s", ull(l->id_),
                     l->pid_, uv_strerror(status));
            l->close_now("write failed");
        }
        return;
    }
    l->queued_ -= bytes;
    l->consume(0);
    l->flush();
}

/* link input */

void link::alloc(uv_buf_t* buf) {
    size_t len = 0;
    uint8_t* p = in_.space(&len);
    // nullptr: read_cb gets UV_ENOBUFS
    *buf = uv_buf_init(reinterpret_cast<char*>(p), static_cast<unsigned>(len));
}

void link::alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
    static_cast<link*>(h->data)->alloc(buf);
}

void link::read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
    static_cast<link*>(s->data)->on_read(nread);
}

void link::on_read(ssize_t nread) {
    if (closing_) {
        return;
    }
    if (nread < 0) {
        if (nread == UV_EOF) {
            close_now("closed by worker");
        } else {
            log_warn("link read failed link=%llu pid=%u: %s", ull(id_), pid_,
                     uv_strerror(static_cast<int>(nread)));
            close_now("read failed");
        }
        return;
    }
    in_.filled(static_cast<size_t>(nread));
    process_input();
}

void link::process_input() {
    if (closing()) {
        return;
    }
    auto st = in_.drain([this](const ngx_rooms_ipc_msg_t& msg) {
        server_.handler_.on_link_frame(*this, msg);
        return !closing();
    });
    if (st == link_reader::status::malformed) {
        size_t avail = in_.buffered();
        log_error("malformed frame link=%llu pid=%u type=0x%02x", ull(id_),
                  pid_,
                  avail >= NGX_ROOMS_IPC_HEADER_LEN ? in_.head()[4] : 0u);
        close_now("malformed frame");
    }
}

/* link_server */

link_server::link_server(uv_loop_t* loop, link_handler& handler)
    : loop_(loop), handler_(handler) {}

link_server::~link_server() {
    close();
}

bool link_server::listen(const std::string& path, unsigned mode,
                         std::string& err) {
    struct stat st;
    if (lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            err = path + " exists and is not a socket";
            return false;
        }
        if (socket_in_use(path)) {
            err = "another process listens on " + path;
            return false;
        }
        if (unlink(path.c_str()) != 0) {
            err = "cannot remove stale socket " + path + ": " +
                  std::strerror(errno);
            return false;
        }
        log_info("removed stale socket %s", path.c_str());
    }

    if (!init_listener(err)) {
        return false;
    }
    int rc = uv_pipe_bind(listener_.get(), path.c_str());
    if (rc < 0) {
        err = "cannot bind " + path + ": " + uv_strerror(rc);
        listener_.reset();
        return false;
    }
    path_ = path;
    if (lstat(path.c_str(), &st) == 0) {
        dev_ = st.st_dev;
        ino_ = st.st_ino;
    }
    if (chmod(path.c_str(), static_cast<mode_t>(mode)) != 0) {
        err = "cannot chmod " + path + ": " + std::strerror(errno);
        close();
        return false;
    }
    return start_listening(path, err);
}

bool link_server::adopt(int fd, std::string& err) {
    if (!init_listener(err)) {
        return false;
    }
    // Once opened, the handle owns fd: closing it closes our copy only,
    // not the one systemd keeps.
    int rc = uv_pipe_open(listener_.get(), fd);
    if (rc < 0) {
        err = "cannot use fd " + std::to_string(fd) + ": " + uv_strerror(rc);
        listener_.reset();
        ::close(fd);
        return false;
    }
    return start_listening("fd " + std::to_string(fd), err);
}

bool link_server::init_listener(std::string& err) {
    int rc = 0;
    listener_ = make_uv_handle<uv_pipe_t>(
        [&](uv_pipe_t* p) { return uv_pipe_init(loop_, p, 0); }, rc, this);
    if (!listener_) {
        err = std::string("uv_pipe_init: ") + uv_strerror(rc);
        return false;
    }
    return true;
}

// listen(2) again on a passed socket is harmless: it only sets the
// backlog.
bool link_server::start_listening(const std::string& what,
                                  std::string& err) {
    int rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_.get()),
                       link_listen_backlog, connection_cb);
    if (rc < 0) {
        err = "cannot listen on " + what + ": " + uv_strerror(rc);
        close();
        return false;
    }

    flusher_ = make_uv_handle<uv_prepare_t>(
        [&](uv_prepare_t* p) { return uv_prepare_init(loop_, p); }, rc, this);
    if (!flusher_) {
        err = std::string("uv_prepare_init: ") + uv_strerror(rc);
        close();
        return false;
    }
    uv_prepare_start(flusher_.get(), prepare_cb);
    return true;
}

void link_server::close() {
    listener_.reset();
    std::vector<uint64_t> ids;
    ids.reserve(links_.size());
    for (const auto& [id, l] : links_) {
        ids.push_back(id);
    }
    for (uint64_t id : ids) {
        if (link* l = find(id)) {
            l->close_now("shutdown");
        }
    }
    flusher_.reset();
    dirty_.clear();
    unlink_socket();
}

void link_server::unlink_socket() {
    if (path_.empty()) {
        return;
    }
    // Only our own socket file: a newer sidecar may have replaced it.
    struct stat st;
    if (lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ &&
        st.st_ino == ino_) {
        unlink(path_.c_str());
    }
    path_.clear();
}

link* link_server::find(uint64_t id) {
    auto it = links_.find(id);
    return it == links_.end() ? nullptr : it->second.get();
}

std::unique_ptr<link> link_server::take(uint64_t id) {
    auto it = links_.find(id);
    if (it == links_.end()) {
        return nullptr;
    }
    std::unique_ptr<link> l = std::move(it->second);
    links_.erase(it);
    return l;
}

void link_server::connection_cb(uv_stream_t* s, int status) {
    static_cast<link_server*>(s->data)->on_connection(status);
}

void link_server::on_connection(int status) {
    if (status < 0) {
        log_error("accept failed: %s", uv_strerror(status));
        return;
    }
    uint64_t id = next_id_++;
    auto l = std::unique_ptr<link>(new (std::nothrow) link(*this, id));
    if (!l) {
        log_error("accept failed: out of memory");
        return;
    }
    int rc = l->accept(reinterpret_cast<uv_stream_t*>(listener_.get()));
    if (rc < 0) {
        log_error("accept failed: %s", uv_strerror(rc));
        if (l->pipe_.loop != nullptr) {
            // Initialised: the close callback frees it.
            l->closing_ = true;
            uv_close(reinterpret_cast<uv_handle_t*>(&l->pipe_),
                     link::close_cb);
            (void) l.release();
        }
        return;
    }
    log_info("link accepted link=%llu", ull(id));
    links_.emplace(id, std::move(l));
}

void link_server::mark_dirty(link& l) {
    if (!l.dirty_) {
        l.dirty_ = true;
        dirty_.push_back(l.id_);
    }
}

void link_server::prepare_cb(uv_prepare_t* p) {
    static_cast<link_server*>(p->data)->flush_all();
}

void link_server::flush_all() {
    if (dirty_.empty()) {
        return;
    }
    std::vector<uint64_t> ids;
    ids.swap(dirty_);
    for (uint64_t id : ids) {
        link* l = find(id);
        if (l == nullptr) {
            continue;
        }
        l->dirty_ = false;
        if (l->doomed_) {
            l->close_now(l->doom_reason_);
        } else {
            l->flush();
        }
    }
    // Keep the vector's capacity for the next pass.
    if (dirty_.empty()) {
        ids.clear();
        dirty_.swap(ids);
    }
}

}  // namespace rooms
