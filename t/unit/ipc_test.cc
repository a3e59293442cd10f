// Unit tests of the module/sidecar link codec (ngx_http_rooms_ipc.c),
// against docs/protocol.md.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ngx_http_rooms_ipc.h"

namespace {

using bytes_t = std::vector<uint8_t>;

ngx_rooms_ipc_str_t str(const std::string& s) {
    return {s.size(), reinterpret_cast<const uint8_t*>(s.data())};
}

ngx_rooms_ipc_str_t str(const char* s) {
    return {std::strlen(s), reinterpret_cast<const uint8_t*>(s)};
}

std::string to_string(const ngx_rooms_ipc_str_t& s) {
    return std::string(reinterpret_cast<const char*>(s.data), s.len);
}

bytes_t encode(const ngx_rooms_ipc_msg_t& msg) {
    size_t n = ngx_rooms_ipc_size(&msg);
    bytes_t out(n);
    uint8_t* end = ngx_rooms_ipc_encode(out.data(), &msg);
    EXPECT_EQ(static_cast<size_t>(end - out.data()), n);
    return out;
}

// A frame from its type and raw body bytes.
bytes_t raw_frame(unsigned type, const bytes_t& body) {
    uint32_t len = static_cast<uint32_t>(body.size() + 1);
    bytes_t out(5 + body.size());
    out[0] = static_cast<uint8_t>(len >> 24);
    out[1] = static_cast<uint8_t>(len >> 16);
    out[2] = static_cast<uint8_t>(len >> 8);
    out[3] = static_cast<uint8_t>(len);
    out[4] = static_cast<uint8_t>(type);
    std::copy(body.begin(), body.end(), out.begin() + 5);
    return out;
}

long decode(const bytes_t& b, ngx_rooms_ipc_msg_t* msg) {
    return ngx_rooms_ipc_decode(b.data(), b.size(), msg);
}

const std::string kRoom = "ABCD";
const std::string kName = "Zo\xc3\xab";
const std::string kPayload = "{\"type\":\"chat\",\"data\":{\"text\":\"hi\"}}";

// One message of every type, with every field the type carries set.
std::vector<ngx_rooms_ipc_msg_t> every_type() {
    std::vector<ngx_rooms_ipc_msg_t> v;
    ngx_rooms_ipc_msg_t m;

    m = {};
    m.type = NGX_ROOMS_IPC_HELLO;
    m.version = NGX_ROOMS_IPC_VERSION;
    m.pid = 0x01020304;
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_OPEN;
    m.id = 0x1122334455667788ULL;
    m.flags = NGX_ROOMS_IPC_F_RESUME | NGX_ROOMS_IPC_F_SINCE;
    m.since = 0x8000000000000001ULL;
    m.room = str(kRoom);
    m.name = str(kName);
    m.player = str("0a1b2c3d4e5f.123.77");
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_MESSAGE;
    m.id = 42;
    m.seq = 0x0102030405060708ULL;
    m.flags = NGX_ROOMS_IPC_F_EXPIRED;
    m.payload = str(kPayload);
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_CLOSE;
    m.id = 43;
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_ROOMS;
    m.id = 7;
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_STATS;
    m.id = 8;
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_SEND;
    m.id = 44;
    m.payload = str(kPayload);
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_ATTACH;
    m.id = UINT64_MAX;
    m.last_id = 0x8877665544332211ULL;
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_BROADCAST;
    m.room = str(kRoom);
    m.last_id = 99;
    m.payload = str(kPayload);
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_KICK;
    m.id = 45;
    m.status = 4000;
    m.payload = str("kicked");
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_ROOMS_REPLY;
    m.id = 7;
    m.payload = str("[]");
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_STATS_REPLY;
    m.id = 8;
    m.payload = str("rooms_sidecar_rooms 0\n");
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_HELLO_ACK;
    m.version = NGX_ROOMS_IPC_VERSION;
    m.pid = 0x0a0b0c0d;
    v.push_back(m);

    m = {};
    m.type = NGX_ROOMS_IPC_ACK;
    m.id = 46;
    m.seq = 3;
    m.payload = str("{\"type\":\"error\"}");
    v.push_back(m);

    return v;
}

void expect_same(const ngx_rooms_ipc_msg_t& a, const ngx_rooms_ipc_msg_t& b) {
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.flags, b.flags);
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.status, b.status);
    EXPECT_EQ(a.pid, b.pid);
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.since, b.since);
    EXPECT_EQ(a.seq, b.seq);
    EXPECT_EQ(a.last_id, b.last_id);
    EXPECT_EQ(to_string(a.room), to_string(b.room));
    EXPECT_EQ(to_string(a.name), to_string(b.name));
    EXPECT_EQ(to_string(a.player), to_string(b.player));
    EXPECT_EQ(to_string(a.payload), to_string(b.payload));
}

}  // namespace

TEST(Ipc, RoundTripEveryType) {
    for (const auto& m : every_type()) {
        SCOPED_TRACE(m.type);
        bytes_t b = encode(m);
        ASSERT_GT(b.size(), 5u);

        ngx_rooms_ipc_msg_t d;
        ASSERT_EQ(decode(b, &d), static_cast<long>(b.size()));
        expect_same(d, m);
    }
}

TEST(Ipc, EmptyStringsAndPayloads) {
    for (auto m : every_type()) {
        SCOPED_TRACE(m.type);
        m.room = {0, nullptr};
        m.name = {0, nullptr};
        m.player = {0, nullptr};
        m.payload = {0, nullptr};
        bytes_t b = encode(m);

        ngx_rooms_ipc_msg_t d;
        ASSERT_EQ(decode(b, &d), static_cast<long>(b.size()));
        expect_same(d, m);
    }
}

TEST(Ipc, WireLayout) {
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_HELLO;
    m.version = 2;
    m.pid = 0x01020304;
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 7, 0x01, 0, 2, 1, 2, 3, 4}));

    m = {};
    m.type = NGX_ROOMS_IPC_OPEN;
    m.id = 0x0102030405060708ULL;
    m.flags = NGX_ROOMS_IPC_F_SINCE;
    m.since = 9;
    m.room = str("AB");
    m.name = str("x");
    m.player = str("p1");
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 26, 0x02,
                                  1, 2, 3, 4, 5, 6, 7, 8,
                                  0x02,
                                  0, 0, 0, 0, 0, 0, 0, 9,
                                  2, 'A', 'B',
                                  1, 'x',
                                  2, 'p', '1'}));

    m = {};
    m.type = NGX_ROOMS_IPC_MESSAGE;
    m.id = 5;
    m.seq = 6;
    m.flags = NGX_ROOMS_IPC_F_EXPIRED;
    m.payload = str("{}");
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 20, 0x03,
                                  0, 0, 0, 0, 0, 0, 0, 5,
                                  0, 0, 0, 0, 0, 0, 0, 6,
                                  0x01,
                                  '{', '}'}));

    m = {};
    m.type = NGX_ROOMS_IPC_ACK;
    m.id = 5;
    m.seq = 6;
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 17, 0x87,
                                  0, 0, 0, 0, 0, 0, 0, 5,
                                  0, 0, 0, 0, 0, 0, 0, 6}));

    m = {};
    m.type = NGX_ROOMS_IPC_ATTACH;
    m.id = 5;
    m.last_id = 258;
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 17, 0x82,
                                  0, 0, 0, 0, 0, 0, 0, 5,
                                  0, 0, 0, 0, 0, 0, 1, 2}));

    m = {};
    m.type = NGX_ROOMS_IPC_KICK;
    m.id = 5;
    m.status = 1008;
    m.payload = str("no");
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 13, 0x84,
                                  0, 0, 0, 0, 0, 0, 0, 5,
                                  0x03, 0xf0,
                                  'n', 'o'}));

    m = {};
    m.type = NGX_ROOMS_IPC_BROADCAST;
    m.room = str("R");
    m.last_id = 7;
    m.payload = str("p");
    EXPECT_EQ(encode(m), (bytes_t{0, 0, 0, 12, 0x83, 1, 'R',
                                  0, 0, 0, 0, 0, 0, 0, 7, 'p'}));
}

TEST(Ipc, EncodeHeadPlusPayloadEqualsEncode) {
    for (const auto& m : every_type()) {
        SCOPED_TRACE(m.type);
        size_t head = ngx_rooms_ipc_head_size(&m);
        bytes_t b(head);
        uint8_t* end = ngx_rooms_ipc_encode_head(b.data(), &m);
        ASSERT_EQ(static_cast<size_t>(end - b.data()), head);

        bool has_payload = m.type == NGX_ROOMS_IPC_MESSAGE
                           || m.type == NGX_ROOMS_IPC_SEND
                           || m.type == NGX_ROOMS_IPC_BROADCAST
                           || m.type == NGX_ROOMS_IPC_KICK
                           || m.type == NGX_ROOMS_IPC_ROOMS_REPLY
                           || m.type == NGX_ROOMS_IPC_STATS_REPLY
                           || m.type == NGX_ROOMS_IPC_ACK;
        if (has_payload) {
            b.insert(b.end(), m.payload.data, m.payload.data + m.payload.len);
        }
        EXPECT_EQ(b, encode(m));
        EXPECT_EQ(ngx_rooms_ipc_size(&m),
                  head + (has_payload ? m.payload.len : 0));
    }
}

TEST(Ipc, PayloadIgnoredByTypesWithout) {
    for (auto m : every_type()) {
        if (m.type != NGX_ROOMS_IPC_HELLO && m.type != NGX_ROOMS_IPC_OPEN
            && m.type != NGX_ROOMS_IPC_CLOSE && m.type != NGX_ROOMS_IPC_ROOMS
            && m.type != NGX_ROOMS_IPC_STATS
            && m.type != NGX_ROOMS_IPC_ATTACH
            && m.type != NGX_ROOMS_IPC_HELLO_ACK)
        {
            continue;
        }
        SCOPED_TRACE(m.type);
        bytes_t before = encode(m);
        m.payload = str("ignored");
        EXPECT_EQ(encode(m), before);
        EXPECT_EQ(ngx_rooms_ipc_head_size(&m), before.size());
    }
}

TEST(Ipc, Unencodable) {
    std::string long_str(256, 'a');
    std::string max_str(255, 'a');
    ngx_rooms_ipc_msg_t m{};

    m.type = 0x7f;
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);
    EXPECT_EQ(ngx_rooms_ipc_head_size(&m), 0u);

    m = {};
    m.type = NGX_ROOMS_IPC_OPEN;
    m.room = str(kRoom);
    m.name = str(long_str);
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);
    m.name = str(max_str);
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 5u + 17 + 1 + 4 + 1 + 255 + 1);
    m.player = str(long_str);
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);
    m.player = str(max_str);
    m.room = str(long_str);
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);

    m = {};
    m.type = NGX_ROOMS_IPC_BROADCAST;
    m.room = str(long_str);
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);
    EXPECT_EQ(ngx_rooms_ipc_head_size(&m), 0u);

    // The frame limit: length = 1 + 8 + payload <= 16 MiB.
    static const uint8_t dummy = 0;
    m = {};
    m.type = NGX_ROOMS_IPC_SEND;
    m.payload = {NGX_ROOMS_IPC_MAX_FRAME - 9, &dummy};
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 4u + NGX_ROOMS_IPC_MAX_FRAME);
    m.payload.len++;
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);
    m.payload.len = SIZE_MAX;
    EXPECT_EQ(ngx_rooms_ipc_size(&m), 0u);
}

TEST(Ipc, MaximalFrameRoundTrip) {
    std::string big(NGX_ROOMS_IPC_MAX_FRAME - 9, 'x');
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_SEND;
    m.id = 1;
    m.payload = str(big);
    bytes_t b = encode(m);
    ASSERT_EQ(b.size(), 4u + NGX_ROOMS_IPC_MAX_FRAME);

    ngx_rooms_ipc_msg_t d;
    ASSERT_EQ(decode(b, &d), static_cast<long>(b.size()));
    EXPECT_EQ(d.payload.len, big.size());
}

TEST(Ipc, MalformedLength) {
    ngx_rooms_ipc_msg_t d;

    EXPECT_EQ(decode({0, 0, 0, 0}, &d), NGX_ROOMS_IPC_MALFORMED);
    EXPECT_EQ(decode({0, 0, 0, 0, 1, 2, 3}, &d), NGX_ROOMS_IPC_MALFORMED);

    // 16 MiB + 1: malformed as soon as the length field is there.
    EXPECT_EQ(decode({0x01, 0x00, 0x00, 0x01}, &d), NGX_ROOMS_IPC_MALFORMED);
    EXPECT_EQ(decode({0xff, 0xff, 0xff, 0xff, 0x03}, &d),
              NGX_ROOMS_IPC_MALFORMED);

    // Exactly 16 MiB is allowed: merely incomplete.
    EXPECT_EQ(decode({0x01, 0x00, 0x00, 0x00, 0x03}, &d),
              NGX_ROOMS_IPC_INCOMPLETE);
}

TEST(Ipc, TruncatedBodies) {
    struct Case {
        unsigned type;
        size_t min_body;
    };
    const Case cases[] = {
        {NGX_ROOMS_IPC_HELLO, 6},        {NGX_ROOMS_IPC_OPEN, 20},
        {NGX_ROOMS_IPC_MESSAGE, 17},     {NGX_ROOMS_IPC_CLOSE, 8},
        {NGX_ROOMS_IPC_ROOMS, 8},        {NGX_ROOMS_IPC_SEND, 8},
        {NGX_ROOMS_IPC_ATTACH, 16},      {NGX_ROOMS_IPC_BROADCAST, 9},
        {NGX_ROOMS_IPC_KICK, 10},        {NGX_ROOMS_IPC_ROOMS_REPLY, 8},
        {NGX_ROOMS_IPC_HELLO_ACK, 6},    {NGX_ROOMS_IPC_ACK, 16},
        {NGX_ROOMS_IPC_STATS, 8},        {NGX_ROOMS_IPC_STATS_REPLY, 8},
    };

    for (const auto& c : cases) {
        SCOPED_TRACE(c.type);
        ngx_rooms_ipc_msg_t d;
        // Zero bytes where strings are: empty str8s.
        bytes_t ok = raw_frame(c.type, bytes_t(c.min_body, 0));
        EXPECT_EQ(decode(ok, &d), static_cast<long>(ok.size()));
        EXPECT_EQ(d.type, c.type);

        for (size_t n = 0; n < c.min_body; n++) {
            bytes_t b = raw_frame(c.type, bytes_t(n, 0));
            EXPECT_EQ(decode(b, &d), NGX_ROOMS_IPC_MALFORMED) << n;
        }
    }
}

TEST(Ipc, Str8Overrun) {
    ngx_rooms_ipc_msg_t d;

    // OPEN: room claims 5 bytes, 3 present, no name.
    bytes_t body(17, 0);
    body.insert(body.end(), {5, 'A', 'B', 'C'});
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_OPEN, body), &d),
              NGX_ROOMS_IPC_MALFORMED);

    // OPEN: room fine, name length byte missing.
    body.assign(17, 0);
    body.insert(body.end(), {2, 'A', 'B'});
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_OPEN, body), &d),
              NGX_ROOMS_IPC_MALFORMED);

    // OPEN: name overruns by one.
    body.insert(body.end(), {3, 'x', 'y'});
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_OPEN, body), &d),
              NGX_ROOMS_IPC_MALFORMED);
    body.push_back('z');
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_OPEN, body), &d),
              NGX_ROOMS_IPC_MALFORMED);  // no player
    body.insert(body.end(), {1, 'p'});
    bytes_t f = raw_frame(NGX_ROOMS_IPC_OPEN, body);
    EXPECT_EQ(decode(f, &d), static_cast<long>(f.size()));
    EXPECT_EQ(to_string(d.room), "AB");
    EXPECT_EQ(to_string(d.name), "xyz");
    EXPECT_EQ(to_string(d.player), "p");

    // BROADCAST: room overruns.
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_BROADCAST, {4, 'A', 'B'}), &d),
              NGX_ROOMS_IPC_MALFORMED);
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_BROADCAST, {255}), &d),
              NGX_ROOMS_IPC_MALFORMED);
    // BROADCAST: room fine, id cut short.
    EXPECT_EQ(decode(raw_frame(NGX_ROOMS_IPC_BROADCAST,
                               {1, 'A', 0, 0, 0, 0, 0, 0, 0}), &d),
              NGX_ROOMS_IPC_MALFORMED);

    // The str8 must not reach into the next frame in the buffer.
    bytes_t two = raw_frame(NGX_ROOMS_IPC_BROADCAST, {2, 'A'});
    bytes_t next = raw_frame(NGX_ROOMS_IPC_CLOSE, bytes_t(8, 0));
    two.insert(two.end(), next.begin(), next.end());
    EXPECT_EQ(decode(two, &d), NGX_ROOMS_IPC_MALFORMED);
}

TEST(Ipc, TrailingBytesOfFixedTypesAreIgnored) {
    ngx_rooms_ipc_msg_t d;
    bytes_t body = {0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1,
                    0xaa, 0xbb};
    bytes_t f = raw_frame(NGX_ROOMS_IPC_ATTACH, body);
    EXPECT_EQ(decode(f, &d), static_cast<long>(f.size()));
    EXPECT_EQ(d.id, 9u);
    EXPECT_EQ(d.payload.len, 0u);
}

TEST(Ipc, EveryPrefixIsIncomplete) {
    for (const auto& m : every_type()) {
        SCOPED_TRACE(m.type);
        bytes_t b = encode(m);
        for (size_t n = 0; n < b.size(); n++) {
            ngx_rooms_ipc_msg_t d;
            EXPECT_EQ(ngx_rooms_ipc_decode(b.data(), n, &d),
                      NGX_ROOMS_IPC_INCOMPLETE)
                << n;
        }
    }
}

TEST(Ipc, CoalescedFramesInSequence) {
    auto all = every_type();
    bytes_t stream;
    for (const auto& m : all) {
        bytes_t b = encode(m);
        stream.insert(stream.end(), b.begin(), b.end());
    }

    size_t off = 0;
    for (const auto& m : all) {
        SCOPED_TRACE(m.type);
        ngx_rooms_ipc_msg_t d;
        long n = ngx_rooms_ipc_decode(stream.data() + off,
                                      stream.size() - off, &d);
        ASSERT_GT(n, 0);
        expect_same(d, m);
        off += static_cast<size_t>(n);
    }
    EXPECT_EQ(off, stream.size());

    ngx_rooms_ipc_msg_t d;
    EXPECT_EQ(ngx_rooms_ipc_decode(stream.data() + off, 0, &d),
              NGX_ROOMS_IPC_INCOMPLETE);
}

TEST(Ipc, UnknownTypeIsSkipped) {
    bytes_t stream = raw_frame(0x42, {1, 2, 3});
    bytes_t empty = raw_frame(0xc0, {});
    stream.insert(stream.end(), empty.begin(), empty.end());

    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_CLOSE;
    m.id = 77;
    bytes_t known = encode(m);
    stream.insert(stream.end(), known.begin(), known.end());

    ngx_rooms_ipc_msg_t d;
    long n = decode(stream, &d);
    ASSERT_EQ(n, 8);
    EXPECT_EQ(d.type, 0x42u);
    EXPECT_EQ(d.payload.len, 3u);
    EXPECT_EQ(d.payload.data, stream.data() + 5);
    EXPECT_EQ(d.id, 0u);

    size_t off = static_cast<size_t>(n);
    n = ngx_rooms_ipc_decode(stream.data() + off, stream.size() - off, &d);
    ASSERT_EQ(n, 5);
    EXPECT_EQ(d.type, 0xc0u);
    EXPECT_EQ(d.payload.len, 0u);

    off += static_cast<size_t>(n);
    n = ngx_rooms_ipc_decode(stream.data() + off, stream.size() - off, &d);
    ASSERT_EQ(n, static_cast<long>(known.size()));
    EXPECT_EQ(d.type, static_cast<unsigned>(NGX_ROOMS_IPC_CLOSE));
    EXPECT_EQ(d.id, 77u);
}

TEST(Ipc, DecodeZeroesUnusedFields) {
    ngx_rooms_ipc_msg_t d;
    std::memset(&d, 0xab, sizeof(d));
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_ATTACH;
    m.id = 3;
    ASSERT_GT(decode(encode(m), &d), 0);
    expect_same(d, m);
    EXPECT_EQ(d.room.data, nullptr);
}
