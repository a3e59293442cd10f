#pragma once

// Redis key and channel names (SPEC 4), in one place.  The room code is a
// cluster hash tag; a configurable prefix goes in front of every name.

#include <string>
#include <string_view>
#include <vector>

namespace rooms {

// <prefix>room:{CODE}:pub
std::string room_channel(std::string_view prefix, std::string_view room);

// <prefix>room:{CODE}:<what>  (what: history, seq, presence, trimmed,
// epoch)
std::string room_key(std::string_view prefix, std::string_view room,
                     std::string_view what);

// The keys of everything a room keeps, in this order: seq history
// trimmed senders presence epoch pv.  Every room script takes this
// list as its KEYS (`publish`, `touch`, `sync`, `leave`, `state`,
// `reap_room`): one room's keys, one hash slot.
std::vector<std::string> room_keys(std::string_view prefix,
                                   std::string_view room);

// <prefix>server:{ID}:<what>  (what: alive, watch, suspect, reaping,
// rooms, barrier)
std::string server_key(std::string_view prefix, std::string_view server_id,
                       std::string_view what);

// A server's keys, in this order: alive watch suspect reaping rooms; the
// KEYS of `heartbeat`, `reap_claim` and `reap_done` (one slot: the
// server's).
std::vector<std::string> server_keys(std::string_view prefix,
                                     std::string_view server_id);

// <prefix>servers: set of the server ids with a heartbeat
std::string servers_key(std::string_view prefix);

// The room index of GET /rooms is sharded over this many buckets, each
// in its own slot: a room's bucket is CRC16(code) mod the count.
constexpr unsigned room_index_buckets = 16;
unsigned room_bucket(std::string_view room);

// <prefix>rooms:{bN}: sorted set, room code -> global player count
std::string room_index_key(std::string_view prefix, unsigned bucket);

// The KEYS of the `index` script for a room: its bucket's sorted set and
// <prefix>rooms:{bN}:v:CODE, the version of the count stored there.
std::vector<std::string> room_index_keys(std::string_view prefix,
                                         std::string_view room);

// The room code of a channel named by room_channel(), or false when the
// channel is not a room channel under this prefix.
bool room_of_channel(std::string_view prefix, std::string_view channel,
                     std::string_view& room);

}  // namespace rooms
