#include "keys.h"

namespace rooms {

namespace {

constexpr std::string_view room_head = "room:{";
constexpr std::string_view pub_tail = "}:pub";

}  // namespace

std::string room_channel(std::string_view prefix, std::string_view room) {
    std::string s;
    s.reserve(prefix.size() + room_head.size() + room.size() +
              pub_tail.size());
    s.append(prefix);
    s.append(room_head);
    s.append(room);
    s.append(pub_tail);
    return s;
}

bool room_of_channel(std::string_view prefix, std::string_view channel,
                     std::string_view& room) {
    size_t fixed = prefix.size() + room_head.size() + pub_tail.size();
    if (channel.size() <= fixed ||
        channel.substr(0, prefix.size()) != prefix ||
        channel.substr(prefix.size(), room_head.size()) != room_head ||
        channel.substr(channel.size() - pub_tail.size()) != pub_tail) {
        return false;
    }
    room = channel.substr(prefix.size() + room_head.size(),
                          channel.size() - fixed);
    return true;
}

}  // namespace rooms
