// A link's input without the socket (link_reader) and the rules that
// close a worker's link (link_frame_fault); docs/protocol.md.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "link_rules.h"
#include "link_reader.h"
#include "ngx_http_rooms_ipc.h"

using rooms::link_frame_fault;
using rooms::link_reader;

namespace {

std::string frame(const ngx_rooms_ipc_msg_t& m) {
    std::string s(ngx_rooms_ipc_size(&m), '\0');
    ngx_rooms_ipc_encode(reinterpret_cast<uint8_t*>(s.data()), &m);
    return s;
}

ngx_rooms_ipc_str_t str(const char* s) {
    return {std::strlen(s), reinterpret_cast<const uint8_t*>(s)};
}

ngx_rooms_ipc_msg_t hello(unsigned version = NGX_ROOMS_IPC_VERSION) {
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_HELLO;
    m.version = version;
    m.pid = 42;
    return m;
}

ngx_rooms_ipc_msg_t open_msg(const char* room, const char* name,
                             const char* player) {
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_OPEN;
    m.id = 7;
    m.room = str(room);
    m.name = str(name);
    m.player = str(player);
    return m;
}

ngx_rooms_ipc_msg_t close_msg(uint64_t conn) {
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_CLOSE;
    m.id = conn;
    return m;
}

// Feeds bytes in reads of at most `step` bytes (and what space() offers),
// draining after each; the types of the frames taken.
struct feeder {
    link_reader reader;
    std::vector<unsigned> types;
    link_reader::status last = link_reader::status::more;

    void feed(const std::string& bytes, size_t step) {
        for (size_t off = 0; off < bytes.size();) {
            size_t room = 0;
            uint8_t* p = reader.space(&room);
            ASSERT_NE(p, nullptr);
            ASSERT_GE(room, rooms::link_read_chunk);
            size_t n = std::min({step, room, bytes.size() - off});
            std::memcpy(p, bytes.data() + off, n);
            reader.filled(n);
            off += n;
            last = reader.drain([this](const ngx_rooms_ipc_msg_t& m) {
                types.push_back(m.type);
                return true;
            });
            if (last == link_reader::status::malformed) {
                return;
            }
        }
    }
};

}  // namespace

TEST(LinkReader, FramesWhateverTheReads) {
    std::string bytes = frame(hello()) +
                        frame(open_msg("ABCD", "Alice", "t.1.7")) +
                        frame(close_msg(7));
    for (size_t step : {size_t(1), size_t(3), size_t(17), bytes.size()}) {
        feeder f;
        f.feed(bytes, step);
        EXPECT_EQ(f.last, link_reader::status::more) << step;
        EXPECT_EQ(f.types, (std::vector<unsigned>{NGX_ROOMS_IPC_HELLO,
                                                  NGX_ROOMS_IPC_OPEN,
                                                  NGX_ROOMS_IPC_CLOSE}))
            << step;
        EXPECT_EQ(f.reader.buffered(), 0u);
    }
}

TEST(LinkReader, PartialFrameWaits) {
    std::string bytes = frame(hello()) + frame(close_msg(1));
    feeder f;
    f.feed(bytes.substr(0, bytes.size() - 2), 5);
    EXPECT_EQ(f.last, link_reader::status::more);
    EXPECT_EQ(f.types, std::vector<unsigned>{NGX_ROOMS_IPC_HELLO});
    EXPECT_EQ(f.reader.buffered(), frame(close_msg(1)).size() - 2);
}

TEST(LinkReader, MalformedStopsAtTheFrame) {
    // a zero length, then a frame that must not be taken
    std::string bytes = frame(hello()) + std::string("\0\0\0\0\x01", 5) +
                        frame(close_msg(1));
    feeder f;
    f.feed(bytes, bytes.size());
    EXPECT_EQ(f.last, link_reader::status::malformed);
    EXPECT_EQ(f.types, std::vector<unsigned>{NGX_ROOMS_IPC_HELLO});
    EXPECT_EQ(f.reader.head()[4], 0x01);
}

TEST(LinkReader, StopsWhenTold) {
    std::string bytes = frame(close_msg(1)) + frame(close_msg(2));
    link_reader r;
    size_t room = 0;
    uint8_t* p = r.space(&room);
    std::memcpy(p, bytes.data(), bytes.size());
    r.filled(bytes.size());
    int taken = 0;
    auto st = r.drain([&taken](const ngx_rooms_ipc_msg_t&) {
        taken++;
        return false;
    });
    EXPECT_EQ(st, link_reader::status::stopped);
    EXPECT_EQ(taken, 1);
}

TEST(LinkReader, BigFrameGrowsThenFrees) {
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_MESSAGE;
    m.id = 1;
    m.seq = 1;
    std::string payload(3u << 20, 'x');
    m.payload = {payload.size(),
                 reinterpret_cast<const uint8_t*>(payload.data())};
    std::string bytes = frame(m);
    feeder f;
    f.feed(bytes, 100000);
    EXPECT_EQ(f.types, std::vector<unsigned>{NGX_ROOMS_IPC_MESSAGE});
    EXPECT_EQ(f.reader.buffered(), 0u);
    EXPECT_EQ(f.reader.capacity(), 0u);  // above link_read_keep: freed
}

TEST(LinkRules, HelloFirstAndOurVersion) {
    EXPECT_STREQ(link_frame_fault(close_msg(1), false), "no HELLO");
    EXPECT_STREQ(link_frame_fault(hello(1), false), "unsupported version");
    EXPECT_STREQ(link_frame_fault(hello(1), true), "unsupported version");
    EXPECT_EQ(link_frame_fault(hello(), false), nullptr);
    EXPECT_EQ(link_frame_fault(hello(), true), nullptr);  // ignored
    EXPECT_EQ(link_frame_fault(close_msg(1), true), nullptr);

    ngx_rooms_ipc_msg_t future{};
    future.type = 0x42;
    EXPECT_STREQ(link_frame_fault(future, false), "no HELLO");
    EXPECT_EQ(link_frame_fault(future, true), nullptr);  // skipped
}

TEST(LinkRules, OpenAsTheModuleNormalises) {
    EXPECT_EQ(link_frame_fault(open_msg("AB_1-2", "Al \xc3\xa9", "t.1.7"),
                               true),
              nullptr);
    EXPECT_STREQ(link_frame_fault(open_msg("abcd", "A", "t.1.7"), true),
                 "bad OPEN");
    EXPECT_STREQ(link_frame_fault(open_msg("", "A", "t.1.7"), true),
                 "bad OPEN");
    EXPECT_STREQ(link_frame_fault(open_msg("A", "", "t.1.7"), true),
                 "bad OPEN");
    EXPECT_STREQ(link_frame_fault(open_msg("A", "\x01", "t.1.7"), true),
                 "bad OPEN");
    EXPECT_STREQ(link_frame_fault(open_msg("A", "n", "t 1"), true),
                 "bad OPEN");
    EXPECT_STREQ(link_frame_fault(open_msg("A", "n", "t\"1"), true),
                 "bad OPEN");
    EXPECT_STREQ(link_frame_fault(open_msg("A", "n", ""), true), "bad OPEN");
}
