// libFuzzer target for the sidecar's side of a worker link
// (sidecar/src/link_reader.h, sidecar/src/link_rules.h): the bytes a
// worker sends, in reads of any size, through the link's input buffer
// and decoder to the rules the sidecar applies before it acts on a
// frame.  The stub App takes a frame as app::on_link_frame() does:
// link_frame_fault() first; a fault closes the link.
//
// Input: two control bytes (the read sizes), then the byte stream.
//
// Checked: the frames taken are exactly those a decoder reading the
// whole stream at once finds, in order, field for field, whatever the
// reads; a malformed frame drops the link (not skipped, nothing after it
// taken); a link's first frame taken is a HELLO of our version, and an
// OPEN taken has a room, a name and a player id within their bounds; the
// input buffer stays within one partial frame and one read, and stays
// above link_read_keep only while a frame that big is under way.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "link_rules.h"
#include "link_reader.h"
#include "ngx_http_rooms_ipc.h"

namespace {

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

bool same_str(const ngx_rooms_ipc_str_t& a, const ngx_rooms_ipc_str_t& b) {
    return a.len == b.len &&
           (a.len == 0 || std::memcmp(a.data, b.data, a.len) == 0);
}

bool same_msg(const ngx_rooms_ipc_msg_t& a, const ngx_rooms_ipc_msg_t& b) {
    return a.type == b.type && a.flags == b.flags &&
           a.version == b.version && a.status == b.status &&
           a.pid == b.pid && a.id == b.id && a.since == b.since &&
           a.seq == b.seq && a.last_id == b.last_id &&
           same_str(a.room, b.room) && same_str(a.name, b.name) &&
           same_str(a.player, b.player) && same_str(a.payload, b.payload);
}

// The stream decoded at once: its frames, and how it ends.
struct expected {
    std::vector<ngx_rooms_ipc_msg_t> frames;
    bool malformed = false;
    size_t rest = 0;  // bytes after the last whole frame
    size_t at = 0;    // where the rest starts
};

expected decode_all(const uint8_t* p, size_t n) {
    const uint8_t* start = p;
    expected e;
    while (n > 0) {
        ngx_rooms_ipc_msg_t msg;
        long rc = ngx_rooms_ipc_decode(p, n, &msg);
        if (rc == NGX_ROOMS_IPC_MALFORMED) {
            e.malformed = true;
            break;
        }
        if (rc == NGX_ROOMS_IPC_INCOMPLETE) {
            break;
        }
        e.frames.push_back(msg);
        p += rc;
        n -= static_cast<size_t>(rc);
    }
    e.rest = n;
    e.at = static_cast<size_t>(p - start);
    return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) {
        return 0;
    }
    uint32_t rng = (uint32_t(data[0]) << 8 | data[1]) * 2654435761u + 1;
    const uint8_t* in = data + 2;
    size_t n = size - 2;

    expected want = decode_all(in, n);

    rooms::link_reader reader;
    bool greeted = false;
    bool dropped = false;
    const char* fault = nullptr;
    size_t taken = 0;
    size_t off = 0;

    auto on_frame = [&](const ngx_rooms_ipc_msg_t& msg) {
        check(taken < want.frames.size());
        check(same_msg(msg, want.frames[taken]));
        taken++;

        fault = rooms::link_frame_fault(msg, greeted);
        if (fault != nullptr) {
            return false;  // close_later(): nothing more is taken
        }
        if (!greeted) {
            check(msg.type == NGX_ROOMS_IPC_HELLO && msg.version == 2);
            greeted = true;
        }
        if (msg.type == NGX_ROOMS_IPC_OPEN) {
            check(msg.room.len >= 1 && msg.room.len <= 32);
            check(msg.name.len >= 1 && msg.name.len <= 128);
            check(msg.player.len >= 1 && msg.player.len <= 64);
        }
        return true;
    };

    constexpr size_t max_capacity =
        2 * (NGX_ROOMS_IPC_MAX_FRAME + 4 + rooms::link_read_chunk);

    while (off < n && !dropped && fault == nullptr) {
        size_t room = 0;
        uint8_t* buf = reader.space(&room);
        check(buf != nullptr && room >= rooms::link_read_chunk);
        check(reader.capacity() <= max_capacity);

        // a read of 1 to 4096 bytes
        rng = rng * 1103515245u + 12345u;
        size_t len = 1 + (rng >> 16) % 4096;
        len = std::min({len, room, n - off});
        std::memcpy(buf, in + off, len);
        reader.filled(len);
        off += len;

        auto st = reader.drain(on_frame);
        if (st == rooms::link_reader::status::malformed) {
            dropped = true;
        } else if (st == rooms::link_reader::status::stopped) {
            check(fault != nullptr);
        } else {
            check(fault == nullptr);
        }
        // Above link_read_keep only while a big frame is under way.
        if (reader.capacity() > rooms::link_read_keep &&
            st != rooms::link_reader::status::malformed) {
            size_t left = reader.buffered();
            check(left >= 4);
            const uint8_t* h = reader.head();
            size_t len = size_t(h[0]) << 24 | size_t(h[1]) << 16 |
                         size_t(h[2]) << 8 | size_t(h[3]);
            size_t need = 4 + len > left ? 4 + len - left : 0;
            check(left + std::max(rooms::link_read_chunk, need) >
                  rooms::link_read_keep);
        }
    }

    if (fault != nullptr) {
        return 0;  // closed by the rules, at the frame they refused
    }
    if (dropped) {
        // exactly at the frame a whole-stream decoder finds malformed
        check(want.malformed && taken == want.frames.size());
        // the reader stopped at the malformed frame's first byte
        size_t left = reader.buffered();
        check(left >= 4 && left <= want.rest);
        check(std::memcmp(reader.head(), in + want.at, left) == 0);
        return 0;
    }
    check(!want.malformed);
    check(taken == want.frames.size());
    check(reader.buffered() == want.rest);
    check(want.rest == 0 ||
          std::memcmp(reader.head(), in + want.at, want.rest) == 0);
    return 0;
}
