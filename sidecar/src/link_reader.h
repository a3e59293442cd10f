#pragma once

// The input side of a worker's link, without the socket: the bytes read
// go into its buffer (space(), then filled(n)), drain() decodes the whole
// frames among them with the shared codec (ngx_http_rooms_ipc.h).  Pure
// logic: link_server.cpp reads into it from libuv, fuzz/link_fuzz.cc
// feeds it arbitrary bytes.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ngx_http_rooms_ipc.h"

namespace rooms {

// The buffer holds at most one partial frame plus one read: it grows to
// what the frame still needs (up to NGX_ROOMS_IPC_MAX_FRAME); above
// link_read_keep, it is freed once drained, and moved to a small one once
// the big frame is consumed (unless the next is big too).
constexpr size_t link_read_chunk = 64 * 1024;
constexpr size_t link_read_keep = 1024 * 1024;

class link_reader {
public:
    enum class status { more, stopped, malformed };

    // Room for the next read: at least link_read_chunk bytes, more when a
    // partial frame needs them.  nullptr (and *len 0) when out of memory.
    uint8_t* space(size_t* len);

    // len bytes were read into space().
    void filled(size_t len) { rend_ += len; }

    // Decodes the buffered frames in order and hands each to
    // on_frame(msg), which returns false to stop (the link is closing).
    // more: every whole frame was taken, the rest waits for more bytes;
    // malformed: the frame at head() is malformed, the link must close.
    // Strings in msg point into the buffer until the next space().
    template <typename F>
    status drain(F&& on_frame);

    // The undecoded bytes (the malformed frame's, after drain()).
    const uint8_t* head() const { return rbuf_.get() + rstart_; }
    size_t buffered() const { return rend_ - rstart_; }
    size_t capacity() const { return rcap_; }

private:
    void settle();

    // Bytes [rstart_, rend_) of rbuf_ are undecoded.
    std::unique_ptr<uint8_t[]> rbuf_;
    size_t rcap_ = 0;
    size_t rstart_ = 0;
    size_t rend_ = 0;
    size_t rneed_ = 0;        // bytes still missing of a partial frame
};

template <typename F>
link_reader::status link_reader::drain(F&& on_frame) {
    rneed_ = 0;
    status st = status::more;
    while (rstart_ < rend_) {
        ngx_rooms_ipc_msg_t msg;
        const uint8_t* p = rbuf_.get() + rstart_;
        size_t avail = rend_ - rstart_;
        long rc = ngx_rooms_ipc_decode(p, avail, &msg);

        if (rc == NGX_ROOMS_IPC_MALFORMED) {
            return status::malformed;
        }
        if (rc == NGX_ROOMS_IPC_INCOMPLETE) {
            if (avail >= 4) {
                size_t len = (size_t(p[0]) << 24) | (size_t(p[1]) << 16) |
                             (size_t(p[2]) << 8) | size_t(p[3]);
                if (len <= NGX_ROOMS_IPC_MAX_FRAME && 4 + len > avail) {
                    rneed_ = 4 + len - avail;
                }
            }
            break;
        }
        rstart_ += static_cast<size_t>(rc);
        if (!on_frame(static_cast<const ngx_rooms_ipc_msg_t&>(msg))) {
            st = status::stopped;
            break;
        }
    }
    settle();
    return st;
}

}  // namespace rooms
