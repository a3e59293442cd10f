// Unit tests of the RFC 6455 client frame parser and the server frame
// header encoder (ngx_http_rooms_frame.c).

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ngx_http_rooms_frame.h"

namespace {

using bytes_t = std::vector<uint8_t>;

constexpr unsigned kCont = NGX_ROOMS_WS_OP_CONT;
constexpr unsigned kText = NGX_ROOMS_WS_OP_TEXT;
constexpr unsigned kBinary = NGX_ROOMS_WS_OP_BINARY;
constexpr unsigned kClose = NGX_ROOMS_WS_OP_CLOSE;
constexpr unsigned kPing = NGX_ROOMS_WS_OP_PING;
constexpr unsigned kPong = NGX_ROOMS_WS_OP_PONG;

// A client frame.  len_bits forces the 16 or 64 bit length form.
struct Frame {
    unsigned opcode = kText;
    std::string payload;
    bool fin = true;
    bool masked = true;
    unsigned rsv = 0;
    int len_bits = 0;
    uint32_t key = 0x37fa213d;
};

bytes_t build(const Frame& f) {
    bytes_t out;
    uint64_t len = f.payload.size();
    uint8_t mbit = f.masked ? 0x80 : 0;

    out.push_back(static_cast<uint8_t>((f.fin ? 0x80 : 0) | (f.rsv << 4)
                                       | f.opcode));

    if (f.len_bits == 0 && len < 126) {
        out.push_back(static_cast<uint8_t>(mbit | len));
    } else if (f.len_bits == 16 || (f.len_bits == 0 && len <= 0xffff)) {
        out.push_back(mbit | 126);
        out.push_back(static_cast<uint8_t>(len >> 8));
        out.push_back(static_cast<uint8_t>(len));
    } else {
        out.push_back(mbit | 127);
        for (int i = 7; i >= 0; i--) {
            out.push_back(static_cast<uint8_t>(len >> (8 * i)));
        }
    }

    uint8_t key[4] = {static_cast<uint8_t>(f.key >> 24),
                      static_cast<uint8_t>(f.key >> 16),
                      static_cast<uint8_t>(f.key >> 8),
                      static_cast<uint8_t>(f.key)};
    if (f.masked) {
        out.insert(out.end(), key, key + 4);
    }
    for (size_t i = 0; i < f.payload.size(); i++) {
        uint8_t c = static_cast<uint8_t>(f.payload[i]);
        out.push_back(f.masked ? c ^ key[i % 4] : c);
    }
    return out;
}

bytes_t text(const std::string& s, bool fin = true) {
    return build({.opcode = kText, .payload = s, .fin = fin});
}

bytes_t cont(const std::string& s, bool fin = true) {
    return build(
        {.opcode = kCont, .payload = s, .fin = fin, .key = 0xa1b2c3d4});
}

bytes_t control(unsigned opcode, const std::string& s) {
    return build({.opcode = opcode, .payload = s, .key = 0x01020304});
}

std::string close_payload(unsigned code, const std::string& reason = "") {
    std::string s;
    s += static_cast<char>(code >> 8);
    s += static_cast<char>(code & 0xff);
    return s + reason;
}

bytes_t cat(std::initializer_list<bytes_t> parts) {
    bytes_t out;
    for (const auto& p : parts) {
        out.insert(out.end(), p.begin(), p.end());
    }
    return out;
}

struct Ev {
    int rc;
    unsigned opcode;
    std::string data;
    unsigned status;
    bool compressed = false;

    bool operator==(const Ev&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Ev& e) {
    return os << "{rc " << e.rc << " op " << e.opcode << " "
              << testing::PrintToString(e.data) << " status " << e.status
              << "}";
}

Ev text_ev(const std::string& s) {
    return {NGX_ROOMS_WS_EVENT, kText, s, 0};
}

Ev ping_ev(const std::string& s) {
    return {NGX_ROOMS_WS_EVENT, kPing, s, 0};
}

Ev pong_ev(const std::string& s) {
    return {NGX_ROOMS_WS_EVENT, kPong, s, 0};
}

Ev close_ev(unsigned status, const std::string& reason) {
    return {NGX_ROOMS_WS_EVENT, kClose, reason, status};
}

Ev error_ev(unsigned status) {
    return {NGX_ROOMS_WS_ERROR, 0, "", status};
}

// A client connection: feeds input in chunks of a given size, answers
// NEED_BUF with realloc(), collects events up to the first error.
class Conn {
  public:
    explicit Conn(size_t max_message = 1 << 20) {
        ngx_rooms_ws_parser_init(&p_, max_message);
    }

    ~Conn() { std::free(p_.buf); }

    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    std::vector<Ev> feed(const bytes_t& in, size_t chunk = SIZE_MAX) {
        bytes_t data(in);
        std::vector<Ev> out;
        size_t off = 0;

        while (off < data.size() && !failed_) {
            size_t n = std::min(chunk, data.size() - off);
            uint8_t* pos = data.data() + off;
            uint8_t* end = pos + n;

            for (int guard = 0;; guard++) {
                if (guard > 1000) {
                    ADD_FAILURE() << "the parser does not progress";
                    return out;
                }

                ngx_rooms_ws_event_t ev{};
                uint8_t* before = pos;
                int rc = ngx_rooms_ws_parse(&p_, &pos, end, &ev);
                EXPECT_TRUE(pos >= before && pos <= end);

                if (rc == NGX_ROOMS_WS_AGAIN) {
                    EXPECT_EQ(pos, end);
                    break;
                }
                if (rc == NGX_ROOMS_WS_NEED_BUF) {
                    grow(ev.len);
                    continue;
                }
                if (rc == NGX_ROOMS_WS_ERROR) {
                    EXPECT_NE(ev.reason, nullptr);
                    out.push_back(error_ev(ev.status));
                    failed_ = true;
                    break;
                }

                EXPECT_EQ(rc, NGX_ROOMS_WS_EVENT);
                out.push_back({rc, ev.opcode,
                               std::string(ev.data, ev.data + ev.len),
                               ev.status, ev.compressed != 0});

                if (ev.opcode == kText && free_after_text_) {
                    std::free(p_.buf);
                    p_.buf = nullptr;
                    p_.buf_size = 0;
                }
            }

            off += n;

            // as the module does: a parser with nothing pending is dropped
            // after each read and a fresh one takes the next
            if (reinit_when_idle_ && !failed_
                && ngx_rooms_ws_parser_idle(&p_)) {
                idle_seen_++;
                EXPECT_EQ(p_.buf, nullptr);
                unsigned deflate = p_.deflate;
                ngx_rooms_ws_parser_init(&p_, p_.max_message);
                p_.deflate = deflate;
            }
        }

        return out;
    }

    ngx_rooms_ws_parser_t p_;
    std::vector<size_t> needs_;
    bool free_after_text_ = false;
    bool reinit_when_idle_ = false;
    size_t idle_seen_ = 0;
    bool failed_ = false;

  private:
    void grow(size_t want) {
        needs_.push_back(want);
        EXPECT_GT(want, p_.buf_size);
        void* nb = std::realloc(p_.buf, want);
        ASSERT_NE(nb, nullptr);
        p_.buf = static_cast<uint8_t*>(nb);
        p_.buf_size = want;
    }
};

std::vector<Ev> events(const bytes_t& in, size_t max_message = 1 << 20) {
    Conn c(max_message);
    return c.feed(in);
}

}  // namespace

TEST(Frame, SingleText) {
    Conn c;
    EXPECT_EQ(c.feed(text("Hello")), std::vector<Ev>{text_ev("Hello")});
    EXPECT_EQ(c.needs_, std::vector<size_t>{5});
}

TEST(Frame, EmptyText) {
    Conn c;
    EXPECT_EQ(c.feed(text("")), std::vector<Ev>{text_ev("")});
    EXPECT_TRUE(c.needs_.empty());
}

TEST(Frame, FragmentedTextWithControlFramesInterleaved) {
    Conn c;
    bytes_t in = cat({text("Hel", false), control(kPing, "p1"),
                      cont("lo ", false), control(kPong, ""),
                      cont("", false), cont("world")});
    EXPECT_EQ(c.feed(in), (std::vector<Ev>{ping_ev("p1"), pong_ev(""),
                                           text_ev("Hello world")}));
    EXPECT_EQ(c.needs_, (std::vector<size_t>{3, 6, 11}));
}

TEST(Frame, CoalescedFrames) {
    bytes_t in;
    std::vector<Ev> want;
    for (int i = 0; i < 100; i++) {
        std::string s = "message " + std::to_string(i);
        bytes_t f = text(s);
        in.insert(in.end(), f.begin(), f.end());
        want.push_back(text_ev(s));
    }
    EXPECT_EQ(events(in), want);
}

TEST(Frame, PayloadLengthForms) {
    for (size_t len : {0, 1, 125, 126, 127, 65535, 65536, 70001}) {
        SCOPED_TRACE(len);
        std::string s(len, 'x');
        for (size_t i = 0; i < len; i++) {
            s[i] = static_cast<char>('a' + i % 26);
        }
        EXPECT_EQ(events(text(s)), std::vector<Ev>{text_ev(s)});
    }

    // Longer forms than needed are accepted.
    EXPECT_EQ(events(build({.payload = "short", .len_bits = 16})),
              std::vector<Ev>{text_ev("short")});
    EXPECT_EQ(events(build({.payload = "short", .len_bits = 64})),
              std::vector<Ev>{text_ev("short")});

    // Not for control frames: their 7 bit length must be 125 at most.
    EXPECT_EQ(
        events(build({.opcode = kPing, .payload = "p", .len_bits = 16})),
        std::vector<Ev>{error_ev(1002)});
}

TEST(Frame, ChunkedFeedingGivesTheSameEvents) {
    std::string big(70000, 'b');
    std::string mid(300, 'm');
    bytes_t in = cat({
        text("Hello"),
        control(kPing, "ping payload"),
        text("caf\xc3", false),                  // split U+00E9
        control(kPong, "x"),
        cont("\xa9 ", false),
        cont("\xe2\x82", false),                 // split U+20AC
        control(kPing, ""),
        cont("\xac!"),
        text(""),
        text(mid),
        build({.payload = big, .key = 0xdeadbeef}),
        text("0123456789", false),
        cont("abcdefg"),
        control(kClose, close_payload(1000, "bye")),
        text("ignored after close"),
    });
    std::vector<Ev> want = {
        text_ev("Hello"),
        ping_ev("ping payload"),
        pong_ev("x"),
        ping_ev(""),
        text_ev("caf\xc3\xa9 \xe2\x82\xac!"),
        text_ev(""),
        text_ev(mid),
        text_ev(big),
        text_ev("0123456789abcdefg"),
        close_ev(1000, "bye"),
    };

    for (size_t chunk : {size_t(1), size_t(2), size_t(3), size_t(5),
                         size_t(7), size_t(13), size_t(64), size_t(4096),
                         SIZE_MAX}) {
        SCOPED_TRACE(chunk);
        Conn c;
        EXPECT_EQ(c.feed(in, chunk), want);

        Conn f;
        f.free_after_text_ = true;
        EXPECT_EQ(f.feed(in, chunk), want);

        Conn r;
        r.free_after_text_ = true;
        r.reinit_when_idle_ = true;
        EXPECT_EQ(r.feed(in, chunk), want);
        if (chunk == 1) {
            // every boundary between whole messages was seen
            EXPECT_GT(r.idle_seen_, 0u);
        }
    }
}

TEST(Frame, IdleOnlyBetweenWholeMessages) {
    ngx_rooms_ws_parser_t p;
    bytes_t hello = text("Hello");
    bytes_t first = text("frag", false);
    bytes_t ping = control(kPing, "p");

    ngx_rooms_ws_parser_init(&p, 100);
    EXPECT_TRUE(ngx_rooms_ws_parser_idle(&p));

    auto step = [&p](const bytes_t& in, size_t n) {
        bytes_t data(in.begin(), in.begin() + n);
        uint8_t* pos = data.data();
        uint8_t buf[100];
        ngx_rooms_ws_event_t ev{};
        int rc;

        do {
            rc = ngx_rooms_ws_parse(&p, &pos, data.data() + data.size(), &ev);
            if (rc == NGX_ROOMS_WS_NEED_BUF) {
                p.buf = buf;
                p.buf_size = sizeof(buf);
            }
        } while (rc != NGX_ROOMS_WS_AGAIN && rc != NGX_ROOMS_WS_ERROR);

        p.buf = nullptr;
        p.buf_size = 0;
        return rc;
    };

    // a header, a mask, a payload cut short: pending
    for (size_t n : {size_t(1), size_t(2), size_t(6), hello.size() - 1}) {
        SCOPED_TRACE(n);
        ngx_rooms_ws_parser_init(&p, 100);
        EXPECT_EQ(step(hello, n), NGX_ROOMS_WS_AGAIN);
        EXPECT_FALSE(ngx_rooms_ws_parser_idle(&p));
    }

    ngx_rooms_ws_parser_init(&p, 100);
    EXPECT_EQ(step(hello, hello.size()), NGX_ROOMS_WS_AGAIN);
    EXPECT_TRUE(ngx_rooms_ws_parser_idle(&p));

    // inside a fragmented message, also between its frames
    EXPECT_EQ(step(first, first.size()), NGX_ROOMS_WS_AGAIN);
    EXPECT_FALSE(ngx_rooms_ws_parser_idle(&p));
    EXPECT_EQ(step(ping, ping.size()), NGX_ROOMS_WS_AGAIN);
    EXPECT_FALSE(ngx_rooms_ws_parser_idle(&p));

    // closed and failed parsers are never idle
    ngx_rooms_ws_parser_init(&p, 100);
    bytes_t bye = control(kClose, close_payload(1000));
    EXPECT_EQ(step(bye, bye.size()), NGX_ROOMS_WS_AGAIN);
    EXPECT_FALSE(ngx_rooms_ws_parser_idle(&p));

    ngx_rooms_ws_parser_init(&p, 100);
    bytes_t bad = build({.payload = "x", .masked = false});
    EXPECT_EQ(step(bad, bad.size()), NGX_ROOMS_WS_ERROR);
    EXPECT_FALSE(ngx_rooms_ws_parser_idle(&p));
}

TEST(Frame, EveryMaskPhase) {
    // Fragments of every length 0..17 so that each frame starts at another
    // offset and unmasking crosses eight byte words at every alignment.
    bytes_t in;
    std::string whole;
    for (size_t len = 0; len < 18; len++) {
        std::string s;
        for (size_t i = 0; i < len; i++) {
            s += static_cast<char>('A' + (len + i) % 26);
        }
        whole += s;
        Frame f{.opcode = len ? kCont : kText, .payload = s, .fin = false,
                .key = static_cast<uint32_t>(0x9e3779b9u * (len + 1))};
        bytes_t b = build(f);
        in.insert(in.end(), b.begin(), b.end());
    }
    bytes_t last = cont("");
    in.insert(in.end(), last.begin(), last.end());

    for (size_t chunk : {size_t(1), size_t(3), SIZE_MAX}) {
        Conn c;
        EXPECT_EQ(c.feed(in, chunk), std::vector<Ev>{text_ev(whole)});
    }
}

TEST(Frame, ProtocolErrors) {
    struct Case {
        const char* what;
        bytes_t in;
        unsigned status;
    };
    std::vector<Case> cases = {
        {"unmasked", build({.payload = "hi", .masked = false}), 1002},
        {"unmasked ping",
         build({.opcode = kPing, .payload = "", .masked = false}), 1002},
        {"rsv1", build({.payload = "hi", .rsv = 4}), 1002},
        {"rsv2", build({.payload = "hi", .rsv = 2}), 1002},
        {"rsv3", build({.payload = "hi", .rsv = 1}), 1002},
        {"ping of 126", control(kPing, std::string(126, 'p')), 1002},
        {"close of 126", control(kClose, std::string(126, 'p')), 1002},
        {"ping not fin",
         build({.opcode = kPing, .payload = "", .fin = false}), 1002},
        {"close not fin",
         build({.opcode = kClose, .payload = "", .fin = false}), 1002},
        {"continuation first", cont("x"), 1002},
        {"continuation after a message", cat({text("a"), cont("b")}), 1002},
        {"text inside a message", cat({text("a", false), text("b")}), 1002},
        {"binary inside a message",
         cat({text("a", false), build({.opcode = kBinary, .payload = ""})}),
         1002},
        {"binary", build({.opcode = kBinary, .payload = "b"}), 1003},
        {"binary fragment",
         build({.opcode = kBinary, .payload = "b", .fin = false}), 1003},
        {"64 bit length top bit",
         {0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, 1002},
        {"invalid UTF-8", text("ok \xff"), 1007},
        {"overlong", text("\xc0\x80"), 1007},
        {"surrogate", text("\xed\xa0\x80"), 1007},
        {"ends mid sequence", text("abc\xe2\x82"), 1007},
        {"close of 1 byte", control(kClose, "\x03"), 1002},
        {"close reason not UTF-8",
         control(kClose, close_payload(1000, "\xff")), 1007},
    };
    for (unsigned op : {3u, 4u, 5u, 6u, 7u, 0xbu, 0xcu, 0xdu, 0xeu, 0xfu}) {
        cases.push_back(
            {"reserved opcode", build({.opcode = op, .payload = ""}), 1002});
    }
    for (unsigned code : {0u, 999u, 1004u, 1005u, 1006u, 1012u, 1014u, 1015u,
                          1016u, 2000u, 2999u, 5000u, 65535u}) {
        cases.push_back({"close status",
                         control(kClose, close_payload(code)), 1002});
    }

    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        std::vector<Ev> ev = events(c.in);
        ASSERT_FALSE(ev.empty());
        EXPECT_EQ(ev.back(), error_ev(c.status));

        Conn slow;
        std::vector<Ev> ev1 = slow.feed(c.in, 1);
        EXPECT_EQ(ev1, ev);
    }
}

TEST(Frame, ValidCloseStatuses) {
    for (unsigned code : {1000u, 1001u, 1002u, 1003u, 1007u, 1008u, 1009u,
                          1010u, 1011u, 3000u, 3999u, 4000u, 4999u}) {
        SCOPED_TRACE(code);
        EXPECT_EQ(events(control(kClose, close_payload(code, "r"))),
                  std::vector<Ev>{close_ev(code, "r")});
        EXPECT_EQ(ngx_rooms_ws_check_close(
                      reinterpret_cast<const uint8_t*>(
                          close_payload(code).data()),
                      2),
                  0u);
    }
}

TEST(Frame, CloseWithCodeAndReason) {
    std::string reason = "going away: \xc3\xa9t\xc3\xa9";
    EXPECT_EQ(events(control(kClose, close_payload(1001, reason))),
              std::vector<Ev>{close_ev(1001, reason)});

    std::string longest(123, 'r');
    EXPECT_EQ(events(control(kClose, close_payload(4000, longest))),
              std::vector<Ev>{close_ev(4000, longest)});
}

TEST(Frame, CloseWithoutStatus) {
    EXPECT_EQ(events(control(kClose, "")),
              std::vector<Ev>{close_ev(NGX_ROOMS_WS_CLOSE_NO_STATUS, "")});
}

TEST(Frame, CloseInsideFragmentedMessage) {
    EXPECT_EQ(events(cat({text("part", false),
                          control(kClose, close_payload(1000))})),
              std::vector<Ev>{close_ev(1000, "")});
}

TEST(Frame, NothingAfterClose) {
    Conn c;
    EXPECT_EQ(c.feed(cat({control(kClose, close_payload(1000)), text("a")})),
              std::vector<Ev>{close_ev(1000, "")});
    EXPECT_TRUE(c.p_.closed);

    // Even garbage is discarded: AGAIN with all input consumed.
    bytes_t junk = {0xff, 0xff, 0x00};
    uint8_t* pos = junk.data();
    ngx_rooms_ws_event_t ev{};
    EXPECT_EQ(ngx_rooms_ws_parse(&c.p_, &pos, junk.data() + junk.size(), &ev),
              NGX_ROOMS_WS_AGAIN);
    EXPECT_EQ(pos, junk.data() + junk.size());
}

TEST(Frame, ErrorIsSticky) {
    ngx_rooms_ws_parser_t p;
    ngx_rooms_ws_parser_init(&p, 100);
    bytes_t in = cat({build({.opcode = kBinary, .payload = ""}), text("a")});
    uint8_t* pos = in.data();
    uint8_t* end = in.data() + in.size();
    ngx_rooms_ws_event_t ev{};

    EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_ERROR);
    EXPECT_EQ(ev.status, 1003u);
    uint8_t* stop = pos;

    ev = {};
    EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_ERROR);
    EXPECT_EQ(ev.status, 1003u);
    EXPECT_NE(ev.reason, nullptr);
    EXPECT_EQ(pos, stop);
}

TEST(Frame, TooBigBeforeThePayloadArrives) {
    struct Case {
        size_t max;
        size_t len;
        size_t header;      // bytes up to the end of the length field
    };
    for (const auto& c : {Case{10, 11, 2}, Case{299, 300, 4},
                          Case{65536, 70000, 10}}) {
        SCOPED_TRACE(c.len);
        bytes_t f = text(std::string(c.len, 'x'));
        ngx_rooms_ws_parser_t p;
        ngx_rooms_ws_parser_init(&p, c.max);
        ngx_rooms_ws_event_t ev{};
        uint8_t* pos = f.data();

        // Every byte before the length is complete: nothing to say yet.
        for (size_t i = 0; i + 1 < c.header; i++) {
            EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, pos + 1, &ev),
                      NGX_ROOMS_WS_AGAIN);
        }
        EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, pos + 1, &ev),
                  NGX_ROOMS_WS_ERROR);
        EXPECT_EQ(ev.status, 1009u);
        EXPECT_EQ(pos, f.data() + c.header);
        EXPECT_EQ(p.buf, nullptr);
    }

    // Exactly the limit is fine.
    EXPECT_EQ(events(text(std::string(10, 'x')), 10),
              std::vector<Ev>{text_ev(std::string(10, 'x'))});

    // Control frames do not count.
    EXPECT_EQ(events(control(kPing, std::string(100, 'p')), 3),
              std::vector<Ev>{ping_ev(std::string(100, 'p'))});
}

TEST(Frame, TooBigAcrossFragments) {
    Conn c(10);
    bytes_t first = text("123456", false);
    bytes_t second = cont("78901");
    EXPECT_TRUE(c.feed(first).empty());

    // Only the 2 byte header of the second fragment.
    bytes_t head(second.begin(), second.begin() + 2);
    EXPECT_EQ(c.feed(head), std::vector<Ev>{error_ev(1009)});
    EXPECT_EQ(c.needs_, std::vector<size_t>{6});

    Conn ok(10);
    EXPECT_EQ(ok.feed(cat({first, cont("7890")})),
              std::vector<Ev>{text_ev("1234567890")});
}

TEST(Frame, Utf8AcrossFragments) {
    // U+1F600 split over four fragments, a ping in the middle.
    EXPECT_EQ(events(cat({text("\xf0", false), cont("\x9f", false),
                          control(kPing, ""), cont("\x98", false),
                          cont("\x80")})),
              (std::vector<Ev>{ping_ev(""), text_ev("\xf0\x9f\x98\x80")}));

    // Invalid continuation in the next fragment.
    EXPECT_EQ(events(cat({text("\xe2", false), cont("\x41")})),
              std::vector<Ev>{error_ev(1007)});

    // The message ends mid sequence although each fragment is a prefix.
    EXPECT_EQ(events(cat({text("a\xe2", false), cont("\x82")})),
              std::vector<Ev>{error_ev(1007)});

    // The surrogate check spans fragments too.
    EXPECT_EQ(events(cat({text("\xed", false), cont("\xa0\x80")})),
              std::vector<Ev>{error_ev(1007)});
}

TEST(Frame, InvalidUtf8FailsBeforeTheFrameEnds) {
    bytes_t f = text("ab\xff" + std::string(1000, 'x'));
    Conn c;
    bytes_t part(f.begin(), f.begin() + 4 + 4 + 3);    // header + "ab\xff"
    EXPECT_EQ(c.feed(part), std::vector<Ev>{error_ev(1007)});
}

TEST(Frame, NeedBufProtocol) {
    ngx_rooms_ws_parser_t p;
    ngx_rooms_ws_parser_init(&p, 100);
    bytes_t f1 = text("abc", false);
    bytes_t f2 = cont("defg");
    bytes_t in = cat({f1, f2});
    uint8_t* pos = in.data();
    uint8_t* end = in.data() + in.size();
    ngx_rooms_ws_event_t ev{};

    // The header is consumed, then the parser asks for 3 bytes.
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_NEED_BUF);
    EXPECT_EQ(ev.len, 3u);
    EXPECT_EQ(pos, in.data() + 6);
    EXPECT_EQ(p.msg_len, 0u);

    // Asked again until it gets it, consuming nothing.
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_NEED_BUF);
    EXPECT_EQ(ev.len, 3u);
    EXPECT_EQ(pos, in.data() + 6);

    p.buf = static_cast<uint8_t*>(std::malloc(3));
    p.buf_size = 3;

    // The second fragment needs the buffer to grow to 7, keeping "abc".
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_NEED_BUF);
    EXPECT_EQ(ev.len, 7u);
    EXPECT_EQ(p.msg_len, 3u);
    EXPECT_EQ(pos, in.data() + f1.size() + 6);
    EXPECT_EQ(std::string(p.buf, p.buf + 3), "abc");

    p.buf = static_cast<uint8_t*>(std::realloc(p.buf, 7));
    p.buf_size = 7;

    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_EVENT);
    EXPECT_EQ(ev.opcode, kText);
    EXPECT_EQ(ev.data, p.buf);
    EXPECT_EQ(std::string(ev.data, ev.data + ev.len), "abcdefg");

    EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_AGAIN);
    EXPECT_EQ(pos, end);

    // A big enough buffer is reused without asking.
    bytes_t more = cat({text("1234567"), text("xy")});
    pos = more.data();
    end = more.data() + more.size();
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_EVENT);
    EXPECT_EQ(std::string(ev.data, ev.data + ev.len), "1234567");
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_EVENT);
    EXPECT_EQ(std::string(ev.data, ev.data + ev.len), "xy");

    // Freed between messages: asked again.
    std::free(p.buf);
    p.buf = nullptr;
    p.buf_size = 0;
    bytes_t last = text("z");
    pos = last.data();
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, last.data() + last.size(), &ev),
              NGX_ROOMS_WS_NEED_BUF);
    EXPECT_EQ(ev.len, 1u);
}

TEST(Frame, NeedBufGrowthAcrossManyFragments) {
    Conn c;
    bytes_t in = text("a", false);
    std::string whole = "a";
    for (int i = 0; i < 20; i++) {
        std::string s(static_cast<size_t>(i * 7 + 1),
                      static_cast<char>('b' + i));
        whole += s;
        bytes_t f = cont(s, false);
        in.insert(in.end(), f.begin(), f.end());
    }
    bytes_t fin = cont("!");
    in.insert(in.end(), fin.begin(), fin.end());
    whole += "!";

    EXPECT_EQ(c.feed(in, 5), std::vector<Ev>{text_ev(whole)});
    ASSERT_EQ(c.needs_.size(), 22u);
    EXPECT_EQ(c.needs_.back(), whole.size());
}

TEST(Frame, EmptyInput) {
    ngx_rooms_ws_parser_t p;
    ngx_rooms_ws_parser_init(&p, 100);
    ngx_rooms_ws_event_t ev{};
    uint8_t* pos = nullptr;
    EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, nullptr, &ev), NGX_ROOMS_WS_AGAIN);
    EXPECT_EQ(pos, nullptr);

    // A complete empty frame needs no further input to be reported.
    bytes_t f = cat({text("", false), cont("")});
    pos = f.data();
    uint8_t* end = f.data() + f.size();
    ASSERT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_EVENT);
    EXPECT_EQ(ev.len, 0u);
    EXPECT_EQ(ngx_rooms_ws_parse(&p, &pos, end, &ev), NGX_ROOMS_WS_AGAIN);
}

TEST(Frame, ServerFrameHeader) {
    uint8_t b[NGX_ROOMS_WS_HEADER_MAX];

    struct Case {
        unsigned opcode;
        uint64_t len;
        bytes_t want;
    };
    const Case cases[] = {
        {kText, 0, {0x81, 0}},
        {kText, 125, {0x81, 125}},
        {kText, 126, {0x81, 126, 0, 126}},
        {kText, 65535, {0x81, 126, 0xff, 0xff}},
        {kText, 65536, {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
        {kText, 0x0102030405060708ULL,
         {0x81, 127, 1, 2, 3, 4, 5, 6, 7, 8}},
        {kClose, 2, {0x88, 2}},
        {kPong, 5, {0x8a, 5}},
    };
    for (const auto& c : cases) {
        size_t n = ngx_rooms_ws_frame_header(b, c.opcode, c.len);
        EXPECT_EQ(bytes_t(b, b + n), c.want) << c.len;
    }
}

TEST(Frame, CheckClose) {
    auto check = [](const std::string& s) {
        return ngx_rooms_ws_check_close(
            reinterpret_cast<const uint8_t*>(s.data()), s.size());
    };
    EXPECT_EQ(check(""), 0u);
    EXPECT_EQ(check("\x03"), 1002u);
    EXPECT_EQ(check(close_payload(1000)), 0u);
    EXPECT_EQ(check(close_payload(1000, "fine \xe2\x82\xac")), 0u);
    EXPECT_EQ(check(close_payload(1000, "\xe2\x82")), 1007u);
    EXPECT_EQ(check(close_payload(1006)), 1002u);
    EXPECT_EQ(check(close_payload(1006, "\xff")), 1002u);
}

// permessage-deflate (RFC 7692 6.1): RSV1 marks the first frame of a
// compressed message, only once negotiated (p.deflate); never on a
// continuation or a control frame.  A compressed payload is not UTF-8
// (the caller checks it inflated) and its compressed length has the
// message limit.

Ev deflated_ev(const std::string& s) {
    return {NGX_ROOMS_WS_EVENT, kText, s, 0, true};
}

TEST(Frame, Rsv1MarksACompressedMessageOnceNegotiated) {
    std::string raw("\xf2\x48\xcd\xc9\xc9\x07\x00", 7);  // "Hello"
    bytes_t in = cat({build({.payload = raw, .rsv = 4}), text("plain")});

    Conn c;
    c.p_.deflate = 1;
    EXPECT_EQ(c.feed(in), (std::vector<Ev>{deflated_ev(raw),
                                           text_ev("plain")}));

    // the same bytes one at a time
    Conn slow;
    slow.p_.deflate = 1;
    EXPECT_EQ(slow.feed(in, 1), (std::vector<Ev>{deflated_ev(raw),
                                                 text_ev("plain")}));

    // not negotiated: a protocol error, as any reserved bit
    EXPECT_EQ(events(in), std::vector<Ev>{error_ev(1002)});
}

TEST(Frame, Rsv1OnTheFirstFrameCoversTheFragments) {
    std::string raw("\xff\xfe\x00\xc0", 4);  // not UTF-8: not checked
    bytes_t in = cat({build({.payload = raw.substr(0, 1), .fin = false,
                             .rsv = 4}),
                      control(kPing, "p"),
                      cont(raw.substr(1, 2), false), cont(raw.substr(3))});
    Conn c;
    c.p_.deflate = 1;
    EXPECT_EQ(c.feed(in), (std::vector<Ev>{ping_ev("p"), deflated_ev(raw)}));
}

TEST(Frame, Rsv1ProtocolErrors) {
    struct Case {
        const char* what;
        bytes_t in;
        unsigned status;
    };
    std::vector<Case> cases = {
        {"rsv1 on a continuation",
         cat({build({.payload = "a", .fin = false, .rsv = 4}),
              build({.opcode = kCont, .payload = "b", .rsv = 4})}),
         1002},
        {"rsv1 on a continuation of a plain message",
         cat({text("a", false),
              build({.opcode = kCont, .payload = "b", .rsv = 4})}),
         1002},
        {"rsv1 on a ping", build({.opcode = kPing, .payload = "", .rsv = 4}),
         1002},
        {"rsv1 on a pong", build({.opcode = kPong, .payload = "", .rsv = 4}),
         1002},
        {"rsv1 on a close",
         build({.opcode = kClose, .payload = "", .rsv = 4}), 1002},
        {"rsv1 on a ping inside a compressed message",
         cat({build({.payload = "a", .fin = false, .rsv = 4}),
              build({.opcode = kPing, .payload = "", .rsv = 4})}),
         1002},
        {"rsv2 with deflate", build({.payload = "hi", .rsv = 2}), 1002},
        {"rsv3 with deflate", build({.payload = "hi", .rsv = 1}), 1002},
        {"rsv1+rsv2", build({.payload = "hi", .rsv = 6}), 1002},
        {"rsv1 binary", build({.opcode = kBinary, .payload = "b", .rsv = 4}),
         1003},
        {"compressed over the limit",
         build({.payload = std::string(101, 'x'), .rsv = 4}), 1009},
        {"plain text after a compressed one is UTF-8 checked",
         cat({build({.payload = "\xff", .rsv = 4}), text("\xff")}), 1007},
    };

    for (const auto& c : cases) {
        SCOPED_TRACE(c.what);
        Conn fast(100);
        fast.p_.deflate = 1;
        std::vector<Ev> ev = fast.feed(c.in);
        ASSERT_FALSE(ev.empty());
        EXPECT_EQ(ev.back(), error_ev(c.status));

        Conn slow(100);
        slow.p_.deflate = 1;
        EXPECT_EQ(slow.feed(c.in, 1), ev);
    }
}

TEST(Frame, ServerFrameHeaderWithRsv1) {
    uint8_t buf[NGX_ROOMS_WS_HEADER_MAX];
    size_t n = ngx_rooms_ws_frame_header(buf, kText | NGX_ROOMS_WS_RSV1, 5);
    ASSERT_EQ(n, 2u);
    EXPECT_EQ(buf[0], 0xc1);
    EXPECT_EQ(buf[1], 5);
}
