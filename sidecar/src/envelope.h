#pragma once

// Envelope rules (SPEC 2.2, 2.3): what a client may send, what the server
// relays, and the envelopes the server makes itself.  Pure logic: no
// libuv, no Redis; never throws.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ngx_http_rooms_ipc.h"

namespace rooms {

enum class envelope_status { ok, bad_envelope, bad_type, reserved_type };

// The `code` of the error envelope for a status ("bad_envelope", ...).
const char* envelope_error_code(envelope_status status);

// Deepest nesting of arrays and objects a client envelope may have.
constexpr unsigned envelope_max_depth = 64;

// The longest relayed envelope, its tail included: what one BROADCAST
// frame carries with the longest room code (docs/protocol.md: length
// 1 + room str8 + last_id + payload).  The client's message may be within
// max_message_bytes and its envelope longer: numbers come back in their
// shortest form (1E14 as 100000000000000.0).
constexpr size_t envelope_max_relayed = NGX_ROOMS_IPC_MAX_FRAME - 1 - 33 - 8;

// The longest tail the publish script appends: ,"id":N,"ts":T} with two
// 20-digit numbers.
constexpr size_t envelope_max_tail = 53;

struct envelope_result {
    envelope_status status = envelope_status::bad_envelope;
    std::string message;  // why not ok, for the error envelope
    std::string type;     // ok: the envelope type
    // The client's "ref" (SPEC 2.2), empty if none; set also when the
    // envelope is refused for another reason, so the error can echo it.
    std::string ref;
    // ok: the envelope to relay, WITHOUT its closing brace: the publish
    // script appends `,"id":N,"ts":T}` (docs/envelopes.md).
    std::string out;
};

// Validates a client text message and builds the envelope to relay:
// {"type":T,"data":{...,"from":NAME,"from_id":ID},"ref":R}; for agree
// exactly {"type":"agree","data":{"username":NAME},"ref":R}.  "ref" only
// if the client gave one (a string of 1-64 printable ASCII characters;
// anything else is a bad_envelope); "from_id" only if player_id is not
// empty.  Anything else the client put at the top level is dropped.  A
// payload longer than max_bytes (0: no limit) is a bad_envelope.
envelope_result process_client_envelope(std::string_view payload,
                                        std::string_view name,
                                        size_t max_bytes = 0,
                                        std::string_view player_id = {});

// True for a valid ref: 1-64 characters, each printable ASCII.
bool valid_ref(std::string_view ref);

// SPEC 2.1, as the module normalises them: a room code of 1-32 chars of
// [A-Z0-9_-]; a name of 1-32 code points (at most 128 bytes) of UTF-8
// text without control characters.  The sidecar checks OPEN with them:
// a worker that sends anything else is broken.
bool valid_room_code(std::string_view room);
bool valid_player_name(std::string_view name);

// The id of an envelope completed by a Redis script: the N of its tail
// `,"id":N,"ts":T}`; 0 when the payload does not end that way.  Looks at
// the last few dozen bytes only (no JSON parsing on the delivery path).
uint64_t envelope_tail_id(std::string_view payload);

// Appends the tail the publish script would append (for tests and for
// envelopes the sidecar completes itself).
std::string close_envelope(std::string_view open, uint64_t id, uint64_t ts);

// True for 1-32 chars of [a-z0-9_.-].
bool valid_envelope_type(std::string_view type);

// state, error, welcome, reset.
bool reserved_envelope_type(std::string_view type);

// {"type":"welcome","data":{"room":R,"you":{"id":ID,"name":N},
//  "last_id":L}}
std::string make_welcome(std::string_view room, std::string_view player_id,
                         std::string_view name, uint64_t last_id);

// {"type":"reset","data":{"last_id":L}}
std::string make_reset(uint64_t last_id);

// {"type":"error","data":{"code":C,"message":M,"ref":R}}, without "ref"
// when ref is empty.
std::string make_error(std::string_view code, std::string_view message,
                       std::string_view ref = {});

}  // namespace rooms
