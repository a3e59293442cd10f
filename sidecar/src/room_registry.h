#pragma once

// The rooms this sidecar has local members in.  Pure logic (no libuv, no
// Redis): the caller does the I/O the results ask for.
//
// A member is one client connection, keyed by (link id, conn id).  A room
// exists while it has members.  Its Redis subscription is `subscribing`
// until Redis confirms it, then `subscribed`; members that join meanwhile
// are pending and get welcomed and attached once it is confirmed.  For
// fan-out, a room knows which links have attached members, and how many.
//
// A member knows its place in its room's lists, so that a leave costs
// O(1) plus the room's links (one entry per worker link).  Closing a link
// (a worker gone: rare) is linear in all members.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rate_limit.h"
#include "string_map.h"

namespace rooms {

struct member_key {
    uint64_t link = 0;
    uint64_t conn = 0;

    bool operator==(const member_key&) const = default;
};

struct member_key_hash {
    size_t operator()(const member_key& k) const noexcept {
        return std::hash<uint64_t>()(k.link * 0x9e3779b97f4a7c15ull ^ k.conn);
    }
};

// A member is kept compact (80 bytes; with its key and its places in its
// room's lists, one 128-byte allocation): what several members share is
// stored once.  Its room code is the room's own (the registry's key), and
// its player id, "<token>.<pid>.<conn>" as the worker mints it, is its
// worker's interned "<token>.<pid>." and the conn number of its key,
// formatted when asked for (an id of any other shape is interned whole).
struct member {
    const std::string& room() const { return *room_; }
    // conn: the conn of the member's key (the id's tail)
    std::string id(uint64_t conn) const;

    std::string name;
    uint64_t since = 0;   // OPEN since, if flags has SINCE
    rate_limiter limiter;
    unsigned flags = 0;   // OPEN flags (RESUME, SINCE)
    bool attached = false;
    bool ready = false;   // sent agree (kept to register it again)
    bool kicked = false;  // KICK sent: ignore its messages

private:
    friend class room_registry;

    bool id_whole_ = false;                // id_head_ is the whole id
    const std::string* room_ = nullptr;    // the room's code
    const std::string* id_head_ = nullptr; // interned id, or its head
};

// A live message that arrived while a room had a snapshot in flight.
struct buffered_message {
    uint64_t id = 0;      // from the payload's tail; 0 if unknown
    std::string payload;
};

// What a room needs for gap-free joins and gap fills (docs/redis.md).
struct room_sync {
    uint64_t incarnation = 0;  // tells a re-created room from the old one
    uint64_t last_id = 0;      // newest id delivered to attached members
    std::string epoch;         // the room's epoch in Redis, once known
    // The fingerprint (message_hash) of the message last_id is (0:
    // unknown, e.g. a type not kept), and the replication id of the Redis
    // the view was built on: after a failover the view goes on only if
    // the new master has that message.
    uint64_t last_hash = 0;
    std::string replid;
    unsigned inflight = 0;     // snapshots in flight
    bool resync = false;       // attached members missed messages: hold
                               // live traffic until the gap is filled
    // Links whose members were resumed (the worker came back to a
    // restarted sidecar) and where their copy of the room stopped: the
    // gap fill starts there for them, at last_id for the others.
    std::vector<std::pair<uint64_t, uint64_t>> resume_from;
    size_t buffer_base = 0;    // absolute index of buffer[0]
    std::vector<buffered_message> buffer;
    size_t buffer_bytes = 0;   // payloads and entries, against the cap
    // The buffer went over its cap (config sync_buffer_bytes) and was
    // given up: the snapshots in flight then (an older buffer_gen) are
    // void, nothing is buffered until the next snapshot is asked for.
    bool overflowed = false;
    uint64_t buffer_gen = 0;
};

struct link_members {
    uint64_t link = 0;
    size_t attached = 0;  // attached members of the room on this link
};

struct room_count {
    std::string code;
    size_t count = 0;
};

class room_registry {
public:
    enum class join_result {
        subscribe,  // first member: subscribe the room, member is pending
        wait,       // subscription not confirmed yet, member is pending
        ready,      // subscribed: welcome and attach the member now
        resync,     // a resumed member of a subscribed room: sync it now
        duplicate,  // the key is already a member; nothing changed
    };

    struct leave_result {
        bool found = false;
        bool room_empty = false;  // last member left: unsubscribe
        std::string room;
        std::string player_id;
    };

    // OPEN.  A member with RESUME (and SINCE) was attached on its worker
    // before: it is attached at once, and the room is marked for a gap
    // fill from `since` on its link (room_sync::resume_from).
    join_result join(const member_key& key, std::string_view room,
                     std::string_view name, std::string_view player_id,
                     unsigned flags, uint64_t since);

    // The member is now attached (its ATTACH was sent).
    void attach(const member_key& key);

    // CLOSE.
    leave_result leave(const member_key& key);

    // The link is gone: removes its members; returns the rooms left empty.
    std::vector<std::string> leave_link(uint64_t link);

    // The same, returning every member that left.
    std::vector<leave_result> leave_link_members(uint64_t link);

    // The room has pending members.
    bool has_pending(std::string_view room) const;

    // Pending members of a subscribed room (to sync them), in join order.
    std::vector<member_key> take_pending(std::string_view room);

    // Appends a member that join() answered `ready` for to the pending
    // list (to sync it with the others).
    void push_pending(std::string_view room, const member_key& key);

    // Members whose sync failed go back to the front of the pending list
    // (those that left meanwhile are skipped).
    void requeue(std::string_view room, const std::vector<member_key>& keys);

    // Every member of the room, attached or not.
    std::vector<member_key> members_of(std::string_view room) const;

    member* find_mutable(const member_key& key);

    // The sync state of a room, or nullptr if the room is unknown.
    room_sync* sync_of(std::string_view room);

    // Redis confirmed the room's subscription.  Returns the pending
    // members to welcome and attach, in join order (empty if the room is
    // unknown, e.g. it emptied while the subscription was in flight).
    std::vector<member_key> subscribed(std::string_view room);

    // The subscription connection was lost: every room is back to
    // `subscribing` (attached members stay attached); rooms with attached
    // members are marked for a gap fill (room_sync::resync).
    void unsubscribe_all();
    // The same for one room; its sync state, or nullptr if it is unknown.
    room_sync* unsubscribe(std::string_view room);

    const member* find(const member_key& key) const;

    // Links with attached members in the room, or nullptr if none.
    const std::vector<link_members>* attached_links(
        std::string_view room) const;

    bool is_subscribed(std::string_view room) const;

    // Codes of every room (to resubscribe them).
    std::vector<std::string> room_codes() const;

    // Local members of the room (0 if unknown).
    size_t members_in(std::string_view room) const;

    // Rooms and their local member counts, largest first.
    std::vector<room_count> counts() const;

    size_t member_count() const { return members_.size(); }
    size_t interned_ids() const { return id_heads_.size(); }
    size_t room_count_total() const { return rooms_.size(); }

private:
    using pending_list = std::list<member_key>;

    struct room {
        size_t members = 0;
        bool subscribed = false;
        pending_list pending;          // in join order
        std::vector<member_key> all;   // any order
        std::vector<link_members> links;
        room_sync sync;
    };

    // A member and its places in its room's lists.
    struct entry {
        member m;
        uint32_t slot = 0;             // index in room::all
        bool pending = false;          // in room::pending, at `at`
        pending_list::iterator at;
    };

    using room_map = string_map<room>;

    // Interned strings (player id heads), counted by their members.
    using string_refs = string_map<size_t>;

    void detach(room& r, const member_key& key);
    std::vector<member_key> take_all_pending(room& r);
    const std::string* intern_id(member& m, uint64_t conn,
                                 std::string_view id);
    void release_id(const member& m);

    std::unordered_map<member_key, entry, member_key_hash> members_;
    room_map rooms_;
    string_refs id_heads_;
    uint64_t next_incarnation_ = 1;
};

}  // namespace rooms
