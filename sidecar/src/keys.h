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
// trimmed senders presence epoch (the `publish` and `touch` scripts').
std::vector<std::string> room_keys(std::string_view prefix,
                                   std::string_view room);

// <prefix>server:{ID}:<what>  (what: alive, rooms, barrier, stall)
std::string server_key(std::string_view prefix, std::string_view server_id,
                       std::string_view what);

// <prefix>rooms: sorted set, room code -> global member count
std::string rooms_index_key(std::string_view prefix);

// <prefix>servers: set of the server ids with a heartbeat
std::string servers_key(std::string_view prefix);

// The room code of a channel named by room_channel(), or false when the
// channel is not a room channel under this prefix.
bool room_of_channel(std::string_view prefix, std::string_view channel,
                     std::string_view& room);

}  // namespace rooms
