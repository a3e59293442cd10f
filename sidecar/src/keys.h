#pragma once

// Redis key and channel names (SPEC 4), in one place.  The room code is a
// cluster hash tag; a configurable prefix goes in front of every name.

#include <string>
#include <string_view>

namespace rooms {

// <prefix>room:{CODE}:pub
std::string room_channel(std::string_view prefix, std::string_view room);

// The room code of a channel named by room_channel(), or false when the
// channel is not a room channel under this prefix.
bool room_of_channel(std::string_view prefix, std::string_view channel,
                     std::string_view& room);

}  // namespace rooms
