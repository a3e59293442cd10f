#include "keys.h"

#include "cluster_map.h"

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

std::string room_key(std::string_view prefix, std::string_view room,
                     std::string_view what) {
    std::string s;
    s.reserve(prefix.size() + room_head.size() + room.size() + 2 +
              what.size());
    s.append(prefix);
    s.append(room_head);
    s.append(room);
    s.append("}:");
    s.append(what);
    return s;
}

std::vector<std::string> room_keys(std::string_view prefix,
                                   std::string_view room) {
    std::vector<std::string> keys;
    keys.reserve(7);
    for (std::string_view what : {"seq", "history", "trimmed", "senders",
                                  "presence", "epoch", "pv"}) {
        keys.push_back(room_key(prefix, room, what));
    }
    return keys;
}

std::string server_key(std::string_view prefix, std::string_view server_id,
                       std::string_view what) {
    std::string s(prefix);
    s.append("server:{");
    s.append(server_id);
    s.append("}:");
    s.append(what);
    return s;
}

std::vector<std::string> server_keys(std::string_view prefix,
                                     std::string_view server_id) {
    std::vector<std::string> keys;
    keys.reserve(5);
    for (std::string_view what :
         {"alive", "watch", "suspect", "reaping", "rooms"}) {
        keys.push_back(server_key(prefix, server_id, what));
    }
    return keys;
}

std::string servers_key(std::string_view prefix) {
    return std::string(prefix) + "servers";
}

unsigned room_bucket(std::string_view room) {
    return crc16_xmodem(room) % room_index_buckets;
}

std::string room_index_key(std::string_view prefix, unsigned bucket) {
    std::string s(prefix);
    s.append("rooms:{b");
    s.append(std::to_string(bucket));
    s.append("}");
    return s;
}

std::vector<std::string> room_index_keys(std::string_view prefix,
                                         std::string_view room) {
    std::string zset = room_index_key(prefix, room_bucket(room));
    std::string version = zset + ":v:";
    version.append(room);
    return {std::move(zset), std::move(version)};
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
