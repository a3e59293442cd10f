#pragma once

// The Unix socket the nginx workers connect to: one link per worker, any
// number of workers from any number of nginx instances.  Transport only:
// frames are decoded with the shared codec (ngx_http_rooms_ipc.h) and
// handed to a link_handler; what they mean is the handler's business.
//
// Output is queued per link and written once per loop iteration (a
// uv_prepare_t runs the flush before the loop polls), so the frames made
// while handling one batch of input leave in one writev.  A frame is a
// shared, immutable buffer: a BROADCAST is encoded once and the same bytes
// are queued on every link that needs it.

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <sys/types.h>
#include <unordered_map>
#include <vector>

#include "link_reader.h"
#include "ngx_http_rooms_ipc.h"
#include "uv_handle.h"

namespace rooms {

using frame_ptr = std::shared_ptr<const std::string>;

// Encodes one frame, or nullptr if the codec refuses it.
frame_ptr encode_frame(const ngx_rooms_ipc_msg_t& msg);

// Output queue thresholds of one link.  Over the high-water mark a
// warning is logged; over the limit the worker is considered stuck and its
// link is closed (the worker reconnects and re-announces its clients).
constexpr size_t link_out_high_water = 8u << 20;
constexpr size_t link_out_low_water = 1u << 20;
constexpr size_t link_out_limit = 256u << 20;

// listen(2) backlog: a connect() waits there while no sidecar accepts
// (socket activation: during a restart).  Each nginx worker keeps one
// link, so this covers 255 workers through a binary upgrade.  It also
// replaces the backlog of a socket passed by systemd: Backlog= in
// conf/rooms-sidecar.socket says the same number.
constexpr int link_listen_backlog = 511;

class link_server;

class link {
public:
    ~link() = default;
    link(const link&) = delete;
    link& operator=(const link&) = delete;

    uint64_t id() const { return id_; }

    // HELLO seen, and the worker's pid.
    bool greeted() const { return greeted_; }
    uint32_t pid() const { return pid_; }
    void greet(uint32_t pid) {
        greeted_ = true;
        pid_ = pid;
    }

    // Queues a frame; it is written before the loop next polls.
    void send(frame_ptr frame);

    // Encodes and queues; false if the frame could not be encoded.
    bool send(const ngx_rooms_ipc_msg_t& msg);

    // Closes the link soon (from the flush pass), never from inside the
    // caller's stack; frames sent later are dropped.  Safe to call from a
    // link_handler callback.
    void close_later(const char* reason);

    bool closing() const { return closing_ || doomed_; }
    size_t queued_bytes() const { return queued_; }

    // Input: bytes received and not yet decoded, and the buffer's size.
    size_t input_pending() const { return in_.buffered(); }
    size_t input_capacity() const { return in_.capacity(); }

private:
    friend class link_server;

    struct write_req {
        uv_write_t req;
        link* owner;
        std::vector<frame_ptr> frames;
        size_t bytes;
    };

    link(link_server& server, uint64_t id);

    int accept(uv_stream_t* listener);
    void close_now(const char* reason);
    void flush();
    void consume(size_t n);
    void alloc(uv_buf_t* buf);
    void on_read(ssize_t nread);
    void process_input();

    static void alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
    static void read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
    static void write_cb(uv_write_t* req, int status);
    static void close_cb(uv_handle_t* h);

    link_server& server_;
    uint64_t id_;
    uv_pipe_t pipe_;
    bool greeted_ = false;
    bool closing_ = false;    // uv_close() called
    bool doomed_ = false;     // close_later() called
    bool dirty_ = false;      // in the server's flush list
    bool writing_ = false;    // a uv_write() is in flight
    bool over_high_water_ = false;
    uint32_t pid_ = 0;
    const char* doom_reason_ = "";

    link_reader in_;

    // Output: frames not yet handed to a uv_write(); out_offset_ bytes of
    // the first one are already written.  queued_ counts those and the
    // bytes in flight.
    std::deque<frame_ptr> out_;
    size_t out_offset_ = 0;
    size_t queued_ = 0;
};

class link_handler {
public:
    // A well-formed frame (any type, known or not).  Strings in msg point
    // into the link's input buffer: copy what you keep.
    virtual void on_link_frame(link& l, const ngx_rooms_ipc_msg_t& msg) = 0;

    // The link is closing: forget everything about it.  It is already out
    // of the server's table; sending to it is pointless.
    virtual void on_link_closed(link& l) = 0;

protected:
    ~link_handler() = default;
};

class link_server {
public:
    link_server(uv_loop_t* loop, link_handler& handler);
    ~link_server();

    link_server(const link_server&) = delete;
    link_server& operator=(const link_server&) = delete;

    // Binds the socket (replacing a stale socket file, refusing one that
    // a live process still listens on), sets its mode and listens.
    bool listen(const std::string& path, unsigned mode, std::string& err);

    // Accepts on fd, a listening socket passed by systemd (socket
    // activation) and checked with check_listen_socket().  Its file, mode
    // and lifetime are systemd's: never chmod'ed or removed here.
    bool adopt(int fd, std::string& err);

    // Stops listening, closes every link, removes the socket file if
    // listen() made it.
    void close();

    link* find(uint64_t id);
    size_t link_count() const { return links_.size(); }

private:
    friend class link;

    bool init_listener(std::string& err);
    bool start_listening(const std::string& what, std::string& err);
    void on_connection(int status);
    void mark_dirty(link& l);
    void flush_all();
    std::unique_ptr<link> take(uint64_t id);
    void unlink_socket();

    static void connection_cb(uv_stream_t* s, int status);
    static void prepare_cb(uv_prepare_t* p);

    uv_loop_t* loop_;
    link_handler& handler_;
    uv_ptr<uv_pipe_t> listener_;
    uv_ptr<uv_prepare_t> flusher_;
    std::unordered_map<uint64_t, std::unique_ptr<link>> links_;
    std::vector<uint64_t> dirty_;
    uint64_t next_id_ = 1;
    std::string path_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

}  // namespace rooms
