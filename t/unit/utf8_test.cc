// Unit tests of the incremental UTF-8 validator (ngx_http_rooms_utf8.c).

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ngx_http_rooms_utf8.h"

namespace {

const uint8_t* bytes(const std::string& s) {
    return reinterpret_cast<const uint8_t*>(s.data());
}

int valid(const std::string& s) {
    return ngx_rooms_utf8_valid(bytes(s), s.size());
}

size_t text_len(const std::string& s) {
    return ngx_rooms_utf8_text_len(bytes(s), s.size());
}

// The verdict of feeding s in the given chunks: INVALID if any chunk was
// invalid or the input ends mid sequence.
int feed_chunks(const std::string& s, const std::vector<size_t>& cuts) {
    ngx_rooms_utf8_state_t st{};
    size_t from = 0;
    int rc = NGX_ROOMS_UTF8_OK;

    std::vector<size_t> all(cuts);
    all.push_back(s.size());
    for (size_t to : all) {
        rc = ngx_rooms_utf8_feed(&st, bytes(s) + from, to - from);
        if (rc == NGX_ROOMS_UTF8_INVALID) {
            return rc;
        }
        from = to;
    }
    return rc == NGX_ROOMS_UTF8_OK ? rc : NGX_ROOMS_UTF8_INVALID;
}

// A straightforward reference: decode and check RFC 3629 rules.
bool reference_valid(const std::vector<uint8_t>& s) {
    size_t i = 0;
    while (i < s.size()) {
        uint32_t c = s[i];
        size_t n;
        uint32_t min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            c &= 0x1f;
            min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            c &= 0x0f;
            min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            c &= 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        if (i + n >= s.size()) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return false;
            }
            c = (c << 6) | (s[i + k] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

std::string encode(uint32_t c) {
    std::string s;
    if (c < 0x80) {
        s += static_cast<char>(c);
    } else if (c < 0x800) {
        s += static_cast<char>(0xc0 | (c >> 6));
        s += static_cast<char>(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
        s += static_cast<char>(0xe0 | (c >> 12));
        s += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
        s += static_cast<char>(0x80 | (c & 0x3f));
    } else {
        s += static_cast<char>(0xf0 | (c >> 18));
        s += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
        s += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
        s += static_cast<char>(0x80 | (c & 0x3f));
    }
    return s;
}

const std::vector<std::string> kValid = {
    "",
    "hello, world",
    "a long ASCII run that crosses several eight byte words ......",
    "\xc3\xa9",                          // U+00E9
    "caf\xc3\xa9 cr\xc3\xa8me",
    "\xdf\xbf",                          // U+07FF
    "\xe0\xa0\x80",                      // U+0800
    "\xe2\x82\xac",                      // U+20AC
    "\xed\x9f\xbf",                      // U+D7FF
    "\xee\x80\x80",                      // U+E000
    "\xef\xbf\xbf",                      // U+FFFF
    "\xf0\x90\x80\x80",                  // U+10000
    "\xf0\x9f\x98\x80",                  // U+1F600
    "\xf4\x8f\xbf\xbf",                  // U+10FFFF
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
    "0123456789abcdef\xf0\x9f\x98\x80" "0123456789abcdef",
};

const std::vector<std::string> kInvalid = {
    "\x80",                              // stray continuation
    "abc\xbf",
    "\xc0\x80",                          // overlong NUL
    "\xc1\xbf",                          // overlong
    "\xe0\x80\x80",                      // overlong
    "\xe0\x9f\xbf",                      // overlong
    "\xf0\x80\x80\x80",                  // overlong
    "\xf0\x8f\xbf\xbf",                  // overlong
    "\xed\xa0\x80",                      // U+D800
    "\xed\xbf\xbf",                      // U+DFFF
    "\xf4\x90\x80\x80",                  // U+110000
    "\xf5\x80\x80\x80",
    "\xf8\x88\x80\x80\x80",
    "\xfe",
    "\xff",
    "\xc3",                              // truncated
    "\xe2\x82",                          // truncated
    "\xf0\x9f\x98",                      // truncated
    "\xc3\x41",                          // missing continuation
    "\xe2\x82\x41",
    "\xc3\xa9\xa9",                      // one continuation too many
    "0123456789abcdef\x80" "0123456789abcdef",
};

}  // namespace

TEST(Utf8, ValidSamples) {
    for (const auto& s : kValid) {
        EXPECT_EQ(valid(s), NGX_ROOMS_UTF8_OK) << testing::PrintToString(s);
    }
}

TEST(Utf8, InvalidSamples) {
    for (const auto& s : kInvalid) {
        EXPECT_EQ(valid(s), NGX_ROOMS_UTF8_INVALID)
            << testing::PrintToString(s);
    }
}

TEST(Utf8, FeedSplitAtEveryPosition) {
    std::vector<std::string> all(kValid);
    all.insert(all.end(), kInvalid.begin(), kInvalid.end());

    for (const auto& s : all) {
        int whole = valid(s);
        for (size_t cut = 0; cut <= s.size(); cut++) {
            EXPECT_EQ(feed_chunks(s, {cut}), whole)
                << testing::PrintToString(s) << " cut " << cut;
        }
        std::vector<size_t> every;
        for (size_t i = 1; i < s.size(); i++) {
            every.push_back(i);
        }
        EXPECT_EQ(feed_chunks(s, every), whole)
            << testing::PrintToString(s) << " byte by byte";
    }
}

TEST(Utf8, PartialWhileMidSequence) {
    ngx_rooms_utf8_state_t st{};
    const std::string euro = "\xe2\x82\xac";

    EXPECT_EQ(ngx_rooms_utf8_feed(&st, bytes(euro), 1), NGX_ROOMS_UTF8_PARTIAL);
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, bytes(euro) + 1, 1),
              NGX_ROOMS_UTF8_PARTIAL);
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, nullptr, 0), NGX_ROOMS_UTF8_PARTIAL);
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, bytes(euro) + 2, 1), NGX_ROOMS_UTF8_OK);
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, nullptr, 0), NGX_ROOMS_UTF8_OK);
}

TEST(Utf8, InvalidIsSticky) {
    ngx_rooms_utf8_state_t st{};
    const std::string bad = "\xff";
    const std::string good = "abc";

    EXPECT_EQ(ngx_rooms_utf8_feed(&st, bytes(bad), 1), NGX_ROOMS_UTF8_INVALID);
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, bytes(good), 3),
              NGX_ROOMS_UTF8_INVALID);
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, nullptr, 0), NGX_ROOMS_UTF8_INVALID);
}

TEST(Utf8, EveryCodePoint) {
    for (uint32_t c = 0; c <= 0x10ffff; c++) {
        bool surrogate = c >= 0xd800 && c <= 0xdfff;
        std::string s = encode(c);
        ASSERT_EQ(valid(s), surrogate ? NGX_ROOMS_UTF8_INVALID
                                      : NGX_ROOMS_UTF8_OK)
            << std::hex << c;
    }
}

TEST(Utf8, ExhaustiveShortSequencesMatchReference) {
    // Every 1, 2 and 3 byte string.
    std::vector<uint8_t> s;
    for (unsigned a = 0; a < 256; a++) {
        s = {static_cast<uint8_t>(a)};
        ASSERT_EQ(ngx_rooms_utf8_valid(s.data(), 1) == NGX_ROOMS_UTF8_OK,
                  reference_valid(s));
        for (unsigned b = 0; b < 256; b++) {
            s = {static_cast<uint8_t>(a), static_cast<uint8_t>(b)};
            ASSERT_EQ(ngx_rooms_utf8_valid(s.data(), 2) == NGX_ROOMS_UTF8_OK,
                      reference_valid(s))
                << a << " " << b;
        }
    }

    s.resize(3);
    for (unsigned a = 0x80; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            for (unsigned c = 0; c < 256; c++) {
                s[0] = static_cast<uint8_t>(a);
                s[1] = static_cast<uint8_t>(b);
                s[2] = static_cast<uint8_t>(c);
                ASSERT_EQ(ngx_rooms_utf8_valid(s.data(), 3)
                              == NGX_ROOMS_UTF8_OK,
                          reference_valid(s))
                    << a << " " << b << " " << c;
            }
        }
    }

    // Four byte strings with interesting bytes at the edges of the ranges.
    const std::vector<uint8_t> edge = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f,
                                       0xa0, 0xbf, 0xc0, 0xff};
    s.resize(4);
    for (unsigned a = 0xe0; a < 256; a++) {
        for (uint8_t b : edge) {
            for (uint8_t c : edge) {
                for (uint8_t d : edge) {
                    s = {static_cast<uint8_t>(a), b, c, d};
                    ASSERT_EQ(ngx_rooms_utf8_valid(s.data(), 4)
                                  == NGX_ROOMS_UTF8_OK,
                              reference_valid(s))
                        << a << " " << int(b) << " " << int(c) << " "
                        << int(d);
                }
            }
        }
    }
}

TEST(Utf8, AsciiFastPathFindsBadByteAnywhere) {
    for (size_t len = 1; len < 40; len++) {
        for (size_t at = 0; at < len; at++) {
            std::string s(len, 'x');
            s[at] = '\x80';
            EXPECT_EQ(valid(s), NGX_ROOMS_UTF8_INVALID) << len << " " << at;
            s[at] = '\x7f';
            EXPECT_EQ(valid(s), NGX_ROOMS_UTF8_OK) << len << " " << at;
        }
    }
}

TEST(Utf8, EmptyInputMayBeNull) {
    ngx_rooms_utf8_state_t st{};
    EXPECT_EQ(ngx_rooms_utf8_feed(&st, nullptr, 0), NGX_ROOMS_UTF8_OK);
    EXPECT_EQ(ngx_rooms_utf8_valid(nullptr, 0), NGX_ROOMS_UTF8_OK);
    EXPECT_EQ(ngx_rooms_utf8_text_len(nullptr, 0), 0u);
}

TEST(Utf8, TextLen) {
    const size_t bad = static_cast<size_t>(-1);

    EXPECT_EQ(text_len(""), 0u);
    EXPECT_EQ(text_len("Alice"), 5u);
    EXPECT_EQ(text_len("Zo\xc3\xab"), 3u);
    EXPECT_EQ(text_len("\xe6\x97\xa5\xe6\x9c\xac"), 2u);
    EXPECT_EQ(text_len("\xf0\x9f\x98\x80!"), 2u);
    EXPECT_EQ(text_len("\xc2\xa0"), 1u);             // U+00A0, not C1
    EXPECT_EQ(text_len("\xf4\x8f\xbf\xbf"), 1u);

    EXPECT_EQ(text_len(std::string("a\0b", 3)), bad);
    EXPECT_EQ(text_len("a\tb"), bad);
    EXPECT_EQ(text_len("a\nb"), bad);
    EXPECT_EQ(text_len("\x1f"), bad);
    EXPECT_EQ(text_len("\x7f"), bad);                // DEL
    EXPECT_EQ(text_len("\xc2\x80"), bad);            // U+0080
    EXPECT_EQ(text_len("x\xc2\x9f"), bad);           // U+009F

    EXPECT_EQ(text_len("\xc3"), bad);                // truncated
    EXPECT_EQ(text_len("\xe2\x82"), bad);
    EXPECT_EQ(text_len("\xc0\x80"), bad);            // overlong
    EXPECT_EQ(text_len("\xed\xa0\x80"), bad);        // surrogate
    EXPECT_EQ(text_len("\xf4\x90\x80\x80"), bad);    // > U+10FFFF
    EXPECT_EQ(text_len("\x80"), bad);
}
