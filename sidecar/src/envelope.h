#pragma once

// Envelope rules (SPEC 2.2, 2.3): what a client may send, what the server
// relays, and the envelopes the server makes itself.  Pure logic: no
// libuv, no Redis; never throws.

#include <cstdint>
#include <string>
#include <string_view>

namespace rooms {

enum class envelope_status { ok, bad_envelope, bad_type, reserved_type };

// The `code` of the error envelope for a status ("bad_envelope", ...).
const char* envelope_error_code(envelope_status status);

// Deepest nesting of arrays and objects a client envelope may have.
constexpr unsigned envelope_max_depth = 64;

struct envelope_result {
    envelope_status status = envelope_status::bad_envelope;
    std::string message;  // why not ok, for the error envelope
    std::string type;     // ok: the envelope type
    std::string out;      // ok: the JSON to relay to the room
};

// Validates a client text message and builds the envelope to relay:
// {"type":T,"data":{...,"from":NAME}} (plus "username":NAME for agree).
// Anything else the client put at the top level is dropped.
envelope_result process_client_envelope(std::string_view payload,
                                        std::string_view name);

// True for 1-32 chars of [a-z0-9_.-].
bool valid_envelope_type(std::string_view type);

// state, error, welcome, reset.
bool reserved_envelope_type(std::string_view type);

// {"type":"welcome","data":{"room":R,"you":{"id":ID,"name":N},
//  "last_id":L}}
std::string make_welcome(std::string_view room, std::string_view player_id,
                         std::string_view name, uint64_t last_id);

// {"type":"error","data":{"code":C,"message":M}}
std::string make_error(std::string_view code, std::string_view message);

}  // namespace rooms
