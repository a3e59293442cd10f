#pragma once

// What the sidecar reads out of Redis replies (docs/redis.md): the
// scripts' answers and the subscriber connection's pushes.  Pure logic:
// each function takes a reply tree as hiredis built it, of any shape (a
// reply that is not what the script returns is refused, never trusted),
// and returns plain values; views point into the reply.
// fuzz/redis_fuzz.cc feeds them whatever hiredis's reader makes of
// arbitrary bytes.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

struct redisReply;

namespace rooms {

// publish and agree: N > 0, the id the message got; 0, published before
// (sent again); an error; anything else, refused (past its deadline).
enum class publish_outcome { published, duplicate, failed, refused };
publish_outcome publish_outcome_of(const redisReply& r);

// settle: true if the message was published, false if it never will be;
// nullopt if the reply is not an answer.
std::optional<bool> settle_outcome_of(const redisReply& r);

// A room's player count as the room index (`index` script) takes it: the
// count, its presence version and the room's epoch.
struct index_count {
    long long count = 0;
    long long version = 0;
    std::string_view epoch;
};

// sync: [seq, trimmed, epoch, history, registered, fence, count, pv].
struct sync_reply {
    uint64_t seq = 0;
    uint64_t trimmed = 0;
    std::string_view epoch;
    std::vector<std::string_view> history;  // oldest first
    bool registered = false;  // players were registered again
    // The room's seq at its first sync under the current replication id
    // (0 before it ever changed).
    uint64_t fence = 0;
    index_count count;  // its epoch is the snapshot's
};
std::optional<sync_reply> parse_sync_reply(const redisReply& r);

// state: [seq, players]: the room's player count.
std::optional<size_t> state_players(const redisReply& r);

// leave and reap_room: [removed, kept, count, pv, epoch].
struct presence_change {
    long long removed = 0;  // players removed
    long long kept = 0;     // reap_room stale: this run's players left
    index_count count;
};
std::optional<presence_change> parse_presence_change(const redisReply& r);

// heartbeat: [beat, reaping]; beat 1 in time, 0 the key was gone, 2 late.
struct heartbeat_reply {
    long long beat = 1;
    bool reaping = false;  // a reaper holds this server's claim
};
std::optional<heartbeat_reply> parse_heartbeat_reply(const redisReply& r);

// SMEMBERS: the strings of an array (anything else in it skipped).
std::optional<std::vector<std::string_view>> parse_members(
    const redisReply& r);

// reap_claim: [state] or [3, [room...]]: the rooms of a server claimed
// by the caller; nullopt when it was not claimed (alive, suspected,
// another reaper's) or the reply is not an answer.
std::optional<std::vector<std::string_view>> parse_claim_reply(
    const redisReply& r);

// ZREVRANGE rooms:{bN} 0 -1 WITHSCORES (a bucket of the room index):
// [code, count]... flattened; rooms without a positive count are skipped.
struct room_total {
    std::string_view code;
    long long count = 0;
};
std::optional<std::vector<room_total>> parse_rooms_index(
    const redisReply& r);

// TIME: [seconds, microseconds].
struct redis_time {
    int64_t sec = 0;
    int64_t usec = 0;
};
std::optional<redis_time> parse_time_reply(const redisReply& r);

// A push on the subscriber connection: [kind, channel, x], kind
// "message" (x the payload), "subscribe", "unsubscribe" (x a count).
struct pubsub_push {
    std::string_view kind;
    std::string_view channel;
    std::optional<std::string_view> payload;  // x if it is a string
};
std::optional<pubsub_push> parse_pubsub_push(const redisReply& r);

// A PING's answer: +PONG, or ["pong", ""] on a subscribed connection.
bool is_pong_reply(const redisReply& r);

// The text of a string, status or error reply.
std::string_view reply_text(const redisReply& r);

}  // namespace rooms
