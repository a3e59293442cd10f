// The module's "ref" finder (ngx_http_rooms_json.c): SPEC 2.2 refs.

#include <gtest/gtest.h>

#include <string>

#include "ngx_http_rooms_json.h"

namespace {

// The ref found in text, or "<none>".
std::string ref_of(const std::string& text) {
    uint8_t buf[NGX_ROOMS_REF_MAX];
    size_t len = 0;
    if (!ngx_rooms_json_ref(reinterpret_cast<const uint8_t*>(text.data()),
                            text.size(), buf, &len)) {
        return "<none>";
    }
    return std::string(reinterpret_cast<char*>(buf), len);
}

TEST(JsonRef, FindsTopLevelRef) {
    EXPECT_EQ(ref_of(R"({"type":"chat","data":{"text":"hi"},"ref":"m1"})"),
              "m1");
    EXPECT_EQ(ref_of(R"({"ref":"a b","type":"chat"})"), "a b");
    EXPECT_EQ(ref_of(" {\n\"ref\" :\t\"x\" } "), "x");
}

TEST(JsonRef, IgnoresNestedRefs) {
    EXPECT_EQ(ref_of(R"({"data":{"ref":"inner"},"type":"chat"})"), "<none>");
    EXPECT_EQ(ref_of(R"({"data":[{"ref":"inner"}],"ref":"outer"})"),
              "outer");
    EXPECT_EQ(ref_of(R"({"data":"{\"ref\":\"s\"}"})"), "<none>");
}

TEST(JsonRef, DecodesEscapes) {
    EXPECT_EQ(ref_of(R"({"ref":"a\"b\\c\/d"})"), "a\"b\\c/d");
    EXPECT_EQ(ref_of(R"({"r\u0065f":"\u0041"})"), "A");
}

TEST(JsonRef, RefusesInvalidRefs) {
    EXPECT_EQ(ref_of(R"({"ref":""})"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref":5})"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref":null})"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref":"tab\there"})"), "<none>");
    EXPECT_EQ(ref_of("{\"ref\":\"caf\xc3\xa9\"}"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref":"\u00e9"})"), "<none>");
    EXPECT_EQ(ref_of("{\"ref\":\"" + std::string(64, 'a') + "\"}"),
              std::string(64, 'a'));
    EXPECT_EQ(ref_of("{\"ref\":\"" + std::string(65, 'a') + "\"}"),
              "<none>");
}

TEST(JsonRef, LastDuplicateWins) {
    EXPECT_EQ(ref_of(R"({"ref":"a","ref":"b"})"), "b");
    EXPECT_EQ(ref_of(R"({"ref":"a","ref":7})"), "<none>");
}

TEST(JsonRef, NotAnObject) {
    EXPECT_EQ(ref_of(""), "<none>");
    EXPECT_EQ(ref_of("[]"), "<none>");
    EXPECT_EQ(ref_of(R"("ref")"), "<none>");
    EXPECT_EQ(ref_of("{}"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref":"a")"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref":"a",)"), "<none>");
    EXPECT_EQ(ref_of(R"({"ref" "a"})"), "<none>");
}

TEST(JsonRef, DeepNestingIsBounded) {
    std::string deep = "{\"data\":" + std::string(100, '[') +
                       std::string(100, ']') + ",\"ref\":\"a\"}";
    EXPECT_EQ(ref_of(deep), "<none>");
    std::string ok = "{\"data\":" + std::string(60, '[') +
                     std::string(60, ']') + ",\"ref\":\"a\"}";
    EXPECT_EQ(ref_of(ok), "a");
}

TEST(JsonRef, EscapeAscii) {
    const std::string in = "a\"b\\c";
    uint8_t out[16];
    uint8_t* end = ngx_rooms_json_escape_ascii(
        out, reinterpret_cast<const uint8_t*>(in.data()), in.size());
    EXPECT_EQ(std::string(reinterpret_cast<char*>(out),
                          static_cast<size_t>(end - out)),
              "a\\\"b\\\\c");
}

}  // namespace
