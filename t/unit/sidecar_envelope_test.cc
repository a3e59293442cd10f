// Envelope rules (SPEC 2.2, 2.3).

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "envelope.h"

using nlohmann::json;
using rooms::envelope_status;
using rooms::process_client_envelope;

namespace {

json parsed(const std::string& s) {
    json j = json::parse(s, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << s;
    return j;
}

envelope_status status_of(std::string_view payload) {
    return process_client_envelope(payload, "Alice").status;
}

}  // namespace

TEST(SidecarEnvelope, ChatGetsFrom) {
    auto r = process_client_envelope(
        R"({"type":"chat","data":{"text":"Hello"}})", "Alice");
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(r.type, "chat");
    json j = parsed(r.out);
    EXPECT_EQ(j, json::parse(R"({"type":"chat",)"
                             R"("data":{"text":"Hello","from":"Alice"}})"));
    // type first: easy to read in logs and captures.
    EXPECT_EQ(r.out.rfind(R"({"type":"chat")", 0), 0u);
}

TEST(SidecarEnvelope, FromIsOverwritten) {
    auto r = process_client_envelope(
        R"({"type":"chat","data":{"text":"hi","from":"Mallory"}})", "Bob");
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(parsed(r.out)["data"]["from"], "Bob");
}

TEST(SidecarEnvelope, AgreeGetsUsername) {
    auto r = process_client_envelope(
        R"({"type":"agree","data":{"username":"Mallory"}})", "Bob");
    ASSERT_EQ(r.status, envelope_status::ok);
    json j = parsed(r.out);
    EXPECT_EQ(j["type"], "agree");
    EXPECT_EQ(j["data"]["username"], "Bob");
    EXPECT_EQ(j["data"]["from"], "Bob");
}

TEST(SidecarEnvelope, OtherTopLevelFieldsDropped) {
    auto r = process_client_envelope(
        R"({"type":"typing","data":{},"id":5,"ts":1,"x":[1]})", "A");
    ASSERT_EQ(r.status, envelope_status::ok);
    json j = parsed(r.out);
    EXPECT_EQ(j.size(), 2u);
    EXPECT_FALSE(j.contains("id"));
    EXPECT_EQ(j["data"], json::parse(R"({"from":"A"})"));
}

TEST(SidecarEnvelope, DataKeptAsSent) {
    auto r = process_client_envelope(
        R"({"type":"vote","data":{"n":1.5,"list":[1,"two",null,true],)"
        R"("nested":{"k":"v"},"u":"\u00e9\ud83d\ude00"}})",
        "A");
    ASSERT_EQ(r.status, envelope_status::ok);
    json j = parsed(r.out);
    EXPECT_EQ(j["data"]["n"], 1.5);
    EXPECT_EQ(j["data"]["list"], json::parse(R"([1,"two",null,true])"));
    EXPECT_EQ(j["data"]["nested"]["k"], "v");
    EXPECT_EQ(j["data"]["u"], "\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(SidecarEnvelope, NameWithQuotesIsEscaped) {
    auto r = process_client_envelope(R"({"type":"chat","data":{}})",
                                     "A \"q\" \\ é");
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(parsed(r.out)["data"]["from"], "A \"q\" \\ é");
}

TEST(SidecarEnvelope, BadEnvelope) {
    EXPECT_EQ(status_of(""), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("not json"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("{"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":{}} x)"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of("[]"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("\"chat\""), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("42"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("null"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("{}"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"data":{}})"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":1,"data":{}})"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat"})"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":null})"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":"x"})"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":[]})"),
              envelope_status::bad_envelope);
}

TEST(SidecarEnvelope, BadEnvelopeHasMessage) {
    auto r = process_client_envelope("nope", "A");
    EXPECT_EQ(r.status, envelope_status::bad_envelope);
    EXPECT_FALSE(r.message.empty());
    EXPECT_TRUE(r.out.empty());
}

TEST(SidecarEnvelope, DeepNestingRejected) {
    std::string deep = R"({"type":"chat","data":{"x":)";
    for (int i = 0; i < 1000; i++) {
        deep += "[";
    }
    for (int i = 0; i < 1000; i++) {
        deep += "]";
    }
    deep += "}}";
    EXPECT_EQ(status_of(deep), envelope_status::bad_envelope);

    // Brackets inside strings do not count.
    std::string brackets(2000, '[');
    EXPECT_EQ(status_of(R"({"type":"chat","data":{"t":")" + brackets +
                        R"("}})"),
              envelope_status::ok);
    // A modest depth is fine.
    std::string ok = R"({"type":"chat","data":{"x":)";
    ok += std::string(30, '[') + std::string(30, ']') + "}}";
    EXPECT_EQ(status_of(ok), envelope_status::ok);
}

TEST(SidecarEnvelope, TypePattern) {
    for (const char* t : {"chat", "typing", "a", "vote.up", "x_y-z", "0",
                          "abcdefghijklmnopqrstuvwxyz012345"}) {
        EXPECT_TRUE(rooms::valid_envelope_type(t)) << t;
        std::string p = std::string(R"({"type":")") + t + R"(","data":{}})";
        EXPECT_EQ(status_of(p), envelope_status::ok) << t;
    }
    for (const char* t : {"", "Chat", "CHAT", "a b", "a/b", "é", "a\\u0000",
                          "abcdefghijklmnopqrstuvwxyz0123456", "a:b"}) {
        EXPECT_FALSE(rooms::valid_envelope_type(t)) << t;
        std::string p = std::string(R"({"type":")") + t + R"(","data":{}})";
        EXPECT_EQ(status_of(p), envelope_status::bad_type) << t;
    }
}

TEST(SidecarEnvelope, ReservedTypes) {
    for (const char* t : {"state", "error", "welcome", "reset"}) {
        EXPECT_TRUE(rooms::reserved_envelope_type(t));
        std::string p = std::string(R"({"type":")") + t + R"(","data":{}})";
        EXPECT_EQ(status_of(p), envelope_status::reserved_type) << t;
    }
    EXPECT_FALSE(rooms::reserved_envelope_type("chat"));
    EXPECT_FALSE(rooms::reserved_envelope_type("states"));
}

TEST(SidecarEnvelope, ErrorCodes) {
    EXPECT_STREQ(rooms::envelope_error_code(envelope_status::bad_envelope),
                 "bad_envelope");
    EXPECT_STREQ(rooms::envelope_error_code(envelope_status::bad_type),
                 "bad_type");
    EXPECT_STREQ(rooms::envelope_error_code(envelope_status::reserved_type),
                 "reserved_type");
}

TEST(SidecarEnvelope, Welcome) {
    json j = parsed(rooms::make_welcome("ABCD", "srv.123.7", "Alice", 0));
    EXPECT_EQ(j, json::parse(R"({"type":"welcome","data":{"room":"ABCD",)"
                             R"("you":{"id":"srv.123.7","name":"Alice"},)"
                             R"("last_id":0}})"));
    EXPECT_TRUE(j["data"]["last_id"].is_number_integer());
    j = parsed(rooms::make_welcome("R", "i", "N", 123));
    EXPECT_EQ(j["data"]["last_id"], 123);
}

TEST(SidecarEnvelope, Error) {
    json j = parsed(rooms::make_error("bad_envelope", "not \"JSON\""));
    EXPECT_EQ(j, json::parse(R"({"type":"error","data":{"code":"bad_envelope",)"
                             R"("message":"not \"JSON\""}})"));
}

TEST(SidecarEnvelope, InvalidUtf8NeverThrows) {
    // The module validates UTF-8, but the sidecar must not die if it
    // did not: the bad bytes are replaced.
    std::string bad_name = "A\xff";
    auto r = process_client_envelope(R"({"type":"chat","data":{}})", bad_name);
    EXPECT_EQ(r.status, envelope_status::ok);
    EXPECT_FALSE(json::parse(r.out, nullptr, false).is_discarded());
    EXPECT_EQ(status_of("{\"type\":\"chat\",\"data\":{\"t\":\"\xff\"}}"),
              envelope_status::bad_envelope);
    EXPECT_FALSE(rooms::make_welcome("R", "i", bad_name, 0).empty());
}
