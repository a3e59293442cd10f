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
    json j = parsed(r.out + "}");
    EXPECT_EQ(j, json::parse(R"({"type":"chat",)"
                             R"("data":{"text":"Hello","from":"Alice"}})"));
    // type first: easy to read in logs and captures.
    EXPECT_EQ(r.out.rfind(R"({"type":"chat")", 0), 0u);
}

TEST(SidecarEnvelope, FromIsOverwritten) {
    auto r = process_client_envelope(
        R"({"type":"chat","data":{"text":"hi","from":"Mallory"}})", "Bob");
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(parsed(r.out + "}")["data"]["from"], "Bob");
}

TEST(SidecarEnvelope, AgreeIsExactlyUsername) {
    // SPEC 2.3: {"type":"agree","data":{"username":NAME}}.
    auto r = process_client_envelope(
        R"({"type":"agree","data":{"username":"Mallory","x":1}})", "Bob");
    ASSERT_EQ(r.status, envelope_status::ok);
    json j = parsed(r.out + "}");
    EXPECT_EQ(j, json::parse(R"({"type":"agree",)"
                             R"("data":{"username":"Bob"}})"));
}

TEST(SidecarEnvelope, OutIsOpenForTheScript) {
    auto r = process_client_envelope(R"({"type":"chat","data":{"text":""}})",
                                     "A");
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(r.out, R"({"type":"chat","data":{"text":"","from":"A"})");
    std::string done = rooms::close_envelope(r.out, 42, 1700000000123);
    json j = parsed(done);
    EXPECT_EQ(j["id"], 42);
    EXPECT_EQ(j["ts"], 1700000000123ll);
    EXPECT_EQ(rooms::envelope_tail_id(done), 42u);
}

TEST(SidecarEnvelope, TooLong) {
    std::string big = R"({"type":"chat","data":{"text":")" +
                      std::string(100, 'x') + "\"}}";
    auto r = process_client_envelope(big, "A", 64);
    EXPECT_EQ(r.status, envelope_status::bad_envelope);
    EXPECT_NE(r.message.find("too long"), std::string::npos);
    EXPECT_EQ(process_client_envelope(big, "A", big.size()).status,
              envelope_status::ok);
    EXPECT_EQ(process_client_envelope(big, "A", 0).status,
              envelope_status::ok);
}

// Within max_message_bytes, but numbers re-serialised longer (1E14 is
// 100000000000000.0): relayed, it would not fit the link's 16 MiB frame,
// so no BROADCAST could carry it and nobody, the sender included, would
// ever get it.  Refused instead: every message is answered.
TEST(SidecarEnvelope, RelayedTooLongForTheLink) {
    std::string numbers = R"({"type":"n","data":{"a":[)";
    while (numbers.size() < (5u << 20)) {
        numbers += "1E14,";
    }
    numbers += "1]}}";
    auto r = process_client_envelope(numbers, "A", 16u << 20);
    EXPECT_EQ(r.status, envelope_status::bad_envelope);
    EXPECT_NE(r.message.find("too long"), std::string::npos);
    EXPECT_TRUE(r.out.empty());

    // Just within: a relayed envelope at the bound.
    std::string text = R"({"type":"n","data":{"t":")";
    size_t fill = rooms::envelope_max_relayed - rooms::envelope_max_tail -
                  std::string(R"({"type":"n","data":{"t":"","from":"A"})")
                      .size();
    text += std::string(fill, 'x') + "\"}}";
    r = process_client_envelope(text, "A", 16u << 20);
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(r.out.size() + rooms::envelope_max_tail,
              rooms::envelope_max_relayed);
    text.insert(text.size() - 3, "x");
    EXPECT_EQ(process_client_envelope(text, "A", 16u << 20).status,
              envelope_status::bad_envelope);
}

TEST(SidecarEnvelope, TailId) {
    using rooms::envelope_tail_id;
    EXPECT_EQ(envelope_tail_id(R"({"type":"x","data":{},"id":7,"ts":1})"),
              7u);
    EXPECT_EQ(envelope_tail_id(R"({"a":{"id":3},"id":9223372036854775807,)"
                               R"("ts":1700000000000})"),
              9223372036854775807ull);
    // A client cannot fake a tail: its data is inside "data", and the
    // script appends the real one after it.
    EXPECT_EQ(envelope_tail_id(
                  R"({"type":"chat","data":{"t":","id":9,"ts":1}"},)"
                  R"("id":10,"ts":5})"),
              10u);
    EXPECT_EQ(envelope_tail_id(""), 0u);
    EXPECT_EQ(envelope_tail_id("}"), 0u);
    EXPECT_EQ(envelope_tail_id(R"({"type":"x","data":{}})"), 0u);
    EXPECT_EQ(envelope_tail_id(R"({"id":,"ts":1})"), 0u);
    EXPECT_EQ(envelope_tail_id(R"({"id":1,"ts":})"), 0u);
    EXPECT_EQ(envelope_tail_id(R"({"id":1,"ts":2)"), 0u);
    EXPECT_EQ(envelope_tail_id(R"("id":1,"ts":2})"), 0u);
    EXPECT_EQ(envelope_tail_id(R"(,"id":1,"ts":2})"), 1u);
}

TEST(SidecarEnvelope, Reset) {
    EXPECT_EQ(parsed(rooms::make_reset(12)),
              json::parse(R"({"type":"reset","data":{"last_id":12}})"));
}

TEST(SidecarEnvelope, OtherTopLevelFieldsDropped) {
    auto r = process_client_envelope(
        R"({"type":"typing","data":{},"id":5,"ts":1,"x":[1]})", "A");
    ASSERT_EQ(r.status, envelope_status::ok);
    json j = parsed(r.out + "}");
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
    json j = parsed(r.out + "}");
    EXPECT_EQ(j["data"]["n"], 1.5);
    EXPECT_EQ(j["data"]["list"], json::parse(R"([1,"two",null,true])"));
    EXPECT_EQ(j["data"]["nested"]["k"], "v");
    EXPECT_EQ(j["data"]["u"], "\xc3\xa9\xf0\x9f\x98\x80");
}

TEST(SidecarEnvelope, NameWithQuotesIsEscaped) {
    auto r = process_client_envelope(R"({"type":"chat","data":{"text":""}})",
                                     "A \"q\" \\ é");
    ASSERT_EQ(r.status, envelope_status::ok);
    EXPECT_EQ(parsed(r.out + "}")["data"]["from"], "A \"q\" \\ é");
}

TEST(SidecarEnvelope, BadEnvelope) {
    EXPECT_EQ(status_of(""), envelope_status::bad_envelope);
    // SPEC 2.2: a chat's data.text must be a string
    EXPECT_EQ(status_of(R"({"type":"chat","data":{}})"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":{"text":5}})"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":{"text":null}})"),
              envelope_status::bad_envelope);
    EXPECT_EQ(status_of("not json"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of("{"), envelope_status::bad_envelope);
    EXPECT_EQ(status_of(R"({"type":"chat","data":{"text":""}} x)"),
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
    EXPECT_EQ(status_of(R"({"type":"chat","data":{"text":")" + brackets +
                        R"("}})"),
              envelope_status::ok);
    // A modest depth is fine.
    std::string ok = R"({"type":"chat","data":{"text":"","x":)";
    ok += std::string(30, '[') + std::string(30, ']') + "}}";
    EXPECT_EQ(status_of(ok), envelope_status::ok);
}

TEST(SidecarEnvelope, TypePattern) {
    for (const char* t : {"chat", "typing", "a", "vote.up", "x_y-z", "0",
                          "abcdefghijklmnopqrstuvwxyz012345"}) {
        EXPECT_TRUE(rooms::valid_envelope_type(t)) << t;
        std::string p = std::string(R"({"type":")") + t +
                        R"(","data":{"text":""}})";
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
    auto r = process_client_envelope(R"({"type":"typing","data":{}})",
                                     bad_name);
    EXPECT_EQ(r.status, envelope_status::ok);
    EXPECT_FALSE(json::parse(r.out + "}", nullptr, false).is_discarded());
    EXPECT_EQ(status_of("{\"type\":\"chat\",\"data\":{\"t\":\"\xff\"}}"),
              envelope_status::bad_envelope);
    EXPECT_FALSE(rooms::make_welcome("R", "i", bad_name, 0).empty());
}

TEST(SidecarEnvelopeRef, KeptInRelayAndEchoedInErrors) {
    auto r = rooms::process_client_envelope(
        R"({"type":"chat","data":{"text":"hi","from_id":"x"},"ref":"m-1"})",
        "Alice", 0, "tok.1.2");
    ASSERT_EQ(r.status, rooms::envelope_status::ok);
    EXPECT_EQ(r.ref, "m-1");
    EXPECT_EQ(r.out, R"({"type":"chat","data":{"text":"hi","from_id":"tok.1.2",)"
                     R"("from":"Alice"},"ref":"m-1")");

    auto a = rooms::process_client_envelope(
        R"({"type":"agree","data":{},"ref":"r"})", "Bob", 0, "tok.1.3");
    ASSERT_EQ(a.status, rooms::envelope_status::ok);
    EXPECT_EQ(a.out, R"({"type":"agree","data":{"username":"Bob"},"ref":"r")");

    auto bad = rooms::process_client_envelope(
        R"({"type":"state","data":{},"ref":"q"})", "A");
    EXPECT_EQ(bad.status, rooms::envelope_status::reserved_type);
    EXPECT_EQ(bad.ref, "q");
    auto e = nlohmann::json::parse(rooms::make_error("reserved_type", "no",
                                                     bad.ref));
    EXPECT_EQ(e["data"]["ref"], "q");
    EXPECT_FALSE(nlohmann::json::parse(rooms::make_error("x", "y"))["data"]
                     .contains("ref"));
}

TEST(SidecarEnvelopeRef, InvalidRefIsABadEnvelope) {
    for (const char* p :
         {R"({"type":"chat","data":{},"ref":""})",
          R"({"type":"chat","data":{},"ref":7})",
          R"({"type":"chat","data":{},"ref":"tab	here"})",
          R"({"type":"chat","data":{},"ref":"é"})"}) {
        auto r = rooms::process_client_envelope(p, "A");
        EXPECT_EQ(r.status, rooms::envelope_status::bad_envelope) << p;
        EXPECT_EQ(r.ref, "");
    }
    std::string ok64 = "{\"type\":\"chat\",\"data\":{\"text\":\"\"},\"ref\":\"" +
                       std::string(64, 'z') + "\"}";
    EXPECT_EQ(rooms::process_client_envelope(ok64, "A").status,
              rooms::envelope_status::ok);
    std::string bad65 = "{\"type\":\"chat\",\"data\":{},\"ref\":\"" +
                        std::string(65, 'z') + "\"}";
    EXPECT_EQ(rooms::process_client_envelope(bad65, "A").status,
              rooms::envelope_status::bad_envelope);
}

TEST(SidecarOpenRules, RoomCodes) {
    EXPECT_TRUE(rooms::valid_room_code("ABCD"));
    EXPECT_TRUE(rooms::valid_room_code("A-_9"));
    EXPECT_TRUE(rooms::valid_room_code(std::string(32, 'Z')));
    EXPECT_FALSE(rooms::valid_room_code(""));
    EXPECT_FALSE(rooms::valid_room_code(std::string(33, 'Z')));
    EXPECT_FALSE(rooms::valid_room_code("abcd"));
    EXPECT_FALSE(rooms::valid_room_code("A B"));
    EXPECT_FALSE(rooms::valid_room_code("A{B}"));
}

TEST(SidecarOpenRules, PlayerNames) {
    EXPECT_TRUE(rooms::valid_player_name("Alice"));
    EXPECT_TRUE(rooms::valid_player_name("Zo\xc3\xab \xf0\x9f\x98\x80"));
    std::string e32;
    for (int i = 0; i < 32; i++) {
        e32 += "\xc3\xa9";
    }
    EXPECT_TRUE(rooms::valid_player_name(e32));
    EXPECT_FALSE(rooms::valid_player_name(e32 + "x"));
    EXPECT_FALSE(rooms::valid_player_name(""));
    EXPECT_FALSE(rooms::valid_player_name("a\tb"));
    EXPECT_FALSE(rooms::valid_player_name("a\x7f"));
    EXPECT_FALSE(rooms::valid_player_name("\xc3"));
}
