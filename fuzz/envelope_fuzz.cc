// libFuzzer target for the envelope rules (sidecar/src/envelope.cpp,
// docs/envelopes.md): a client's text message in, either the envelope to
// relay or one error out, never both, never neither.
//
// Input: one control byte (bit 0: a player id; bits 1-2: which name;
// bits 3-4: which max_message_bytes), then the client's message.
//
// Relayed: completed as the publish script completes it, it parses as a
// JSON object of exactly type, data, (ref,) id, ts; type and ref are the
// client's, data is the client's data with from/from_id set by the
// server (agree: exactly {"username":NAME}); the tail gives back its id;
// the message was within max_message_bytes and the envelope fits one
// BROADCAST frame.  Refused: a documented code, a message, and the error
// envelope carries the ref read (if any).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "envelope.h"
#include "ngx_http_rooms_ipc.h"

namespace {

using json = nlohmann::ordered_json;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

// Names as the module normalises them: ASCII, multibyte, JSON escapes,
// the longest (32 code points, 128 bytes).
constexpr std::string_view names[] = {
    "n", "Alice \xe2\x9c\x93", "a\"b\\c/d",
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"
    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80"};

constexpr size_t limits[] = {0, 16384, 64, 1};

constexpr std::string_view player = "0a1b2c3d4e5f.4242.17";

// The room code is at most 32 bytes (SPEC 2.1).
constexpr size_t broadcast_overhead = NGX_ROOMS_IPC_HEADER_LEN + 1 + 32 + 8;

bool documented_code(std::string_view code) {
    return code == "bad_envelope" || code == "bad_type" ||
           code == "reserved_type";
}

void check_relayed(const rooms::envelope_result& r, std::string_view payload,
                   std::string_view name, bool with_id, size_t max_bytes) {
    check(r.message.empty());
    check(max_bytes == 0 || payload.size() <= max_bytes);
    check(rooms::valid_envelope_type(r.type) &&
          !rooms::reserved_envelope_type(r.type));

    constexpr uint64_t id = 9007199254740993ull;
    std::string relayed = rooms::close_envelope(r.out, id, 1700000000123ull);
    check(rooms::envelope_tail_id(relayed) == id);
    check(relayed.size() + broadcast_overhead <= NGX_ROOMS_IPC_MAX_FRAME);

    json out = json::parse(relayed, nullptr, false);
    check(!out.is_discarded() && out.is_object());

    // exactly these keys, in this order
    auto it = out.begin();
    check(it != out.end() && it.key() == "type" && it->is_string() &&
          it->get<std::string>() == r.type);
    ++it;
    check(it != out.end() && it.key() == "data" && it->is_object());
    const json& data = *it;
    ++it;
    if (!r.ref.empty()) {
        check(rooms::valid_ref(r.ref));
        check(it != out.end() && it.key() == "ref" && it->is_string() &&
              it->get<std::string>() == r.ref);
        ++it;
    }
    check(it != out.end() && it.key() == "id" && it->is_number_unsigned() &&
          it->get<uint64_t>() == id);
    ++it;
    check(it != out.end() && it.key() == "ts");
    ++it;
    check(it == out.end());

    // What the client sent: the type, ref and data the relayed one has.
    json in = json::parse(payload, nullptr, false);
    check(!in.is_discarded() && in.is_object());
    check(in.at("type").get<std::string>() == r.type);
    auto in_ref = in.find("ref");
    check(in_ref == in.end() ? r.ref.empty()
                             : in_ref->get<std::string>() == r.ref);

    if (r.type == "agree") {
        json want = json::object();
        want["username"] = name;
        check(data == want);
        return;
    }
    check(data.size() >= 1 && data.contains("from") &&
          data["from"] == json(name));
    if (with_id) {
        check(data.contains("from_id") && data["from_id"] == json(player));
    } else {
        check(!data.contains("from_id") ||
              data["from_id"] == in.at("data")["from_id"]);
    }
    json client = in.at("data");
    json server = data;
    client.erase("from");
    server.erase("from");
    if (with_id) {
        client.erase("from_id");
        server.erase("from_id");
    }
    check(client == server);
}

void check_refused(const rooms::envelope_result& r) {
    check(r.out.empty());
    check(!r.message.empty());
    check(r.ref.empty() || rooms::valid_ref(r.ref));

    std::string code = rooms::envelope_error_code(r.status);
    check(documented_code(code));

    json err = json::parse(rooms::make_error(code, r.message, r.ref),
                           nullptr, false);
    check(!err.is_discarded() && err.is_object() && err.size() == 2);
    check(err["type"] == "error");
    const json& data = err["data"];
    check(data.is_object() && data["code"] == json(code) &&
          data["message"] == json(r.message));
    check(data.size() == (r.ref.empty() ? 2u : 3u));
    if (!r.ref.empty()) {
        check(data["ref"] == json(r.ref));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) {
        return 0;
    }
    unsigned control = data[0];
    bool with_id = control & 1;
    std::string_view name = names[(control >> 1) & 3];
    size_t max_bytes = limits[(control >> 3) & 3];
    std::string_view payload(reinterpret_cast<const char*>(data) + 1,
                             size - 1);

    rooms::envelope_result r = rooms::process_client_envelope(
        payload, name, max_bytes, with_id ? player : std::string_view());

    if (r.status == rooms::envelope_status::ok) {
        check(!r.out.empty());
        check_relayed(r, payload, name, with_id, max_bytes);
    } else {
        check_refused(r);
    }
    return 0;
}
