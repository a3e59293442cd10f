#pragma once

// What a joiner, or a room whose members missed messages, is sent from a
// Redis snapshot (SPEC 2.4, docs/redis.md "Joining").  Pure logic: no
// libuv, no Redis; payloads are views into the caller's buffers.
//
// A snapshot is taken by one script, atomically: the room's newest id
// (seq), the newest id ever trimmed off the history, and the history
// itself (oldest first).  Live messages that arrive on the subscription
// while the snapshot is in flight are buffered by the caller; those with
// an id above seq go out after the backfill.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace rooms {

struct history_entry {
    uint64_t id = 0;           // from the payload's tail; 0 if unknown
    std::string_view payload;
};

struct room_snapshot {
    uint64_t seq = 0;          // newest id assigned in the room
    uint64_t trimmed = 0;      // newest id trimmed off the history
    std::vector<history_entry> history;  // oldest first
};

struct backfill_plan {
    bool reset = false;        // send {"type":"reset",...} first
    std::vector<std::string_view> messages;  // then these, in order
};

// Backfill for a joiner: without since, the last `keep` kept messages;
// with since, exactly the kept messages with id > since, unless since is
// above seq (the ids restarted) or kept messages after it were trimmed
// (trimmed > since), or `restarted` (the room's keys were lost since the
// caller last looked): then reset and the last `keep`.
backfill_plan plan_backfill(const room_snapshot& snap,
                            std::optional<uint64_t> since, size_t keep,
                            bool restarted = false);

// A message's fingerprint for history_continues(): never 0 (0 stands for
// "unknown").
uint64_t message_hash(std::string_view payload);

// Whether members whose view of the room ends with message `last_id`,
// fingerprint `last_hash` (message_hash), can go on from this snapshot:
// nothing delivered yet, or the history holds that very message.  After
// a failover the new master has every write up to one it holds
// (replication keeps their order), so such a view lost nothing; one
// whose last message is missing or different (not replicated, or the id
// reused for another message) was built on writes the new master lacks.
bool history_continues(const room_snapshot& snap, uint64_t last_id,
                       uint64_t last_hash);

// Gap fill for members that were attached until `last_id` and missed
// what followed (Redis outage): the plan for since = last_id, merged with
// the buffered live messages newer than last_id (or, after a reset, newer
// than seq), ordered by id, each id once.  Buffered messages of unknown
// id go last, in arrival order.
backfill_plan plan_gap_fill(const room_snapshot& snap, uint64_t last_id,
                            const std::vector<history_entry>& buffered,
                            size_t keep, bool restarted);

}  // namespace rooms
