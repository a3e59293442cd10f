#pragma once

// The Lua scripts the sidecar runs in Redis, in one place.  Every change
// to a room (a message, a join, a leave, a ready change, a dead server's
// members) is one script, so it is atomic and takes its id from the
// room's one sequence.  Keys, arguments and replies: docs/redis.md.

#include <string>

namespace rooms {

struct lua_script {
    const char* name;
    std::string body;
};

// publish: a batch of one room's messages (an agree among them marks its
// player ready): admit each, next ids, complete the envelopes, history +
// trim (kept types), one PUBLISH.
const lua_script& script_publish();

// Every script's KEYS share one hash tag (one slot), and every key a
// script touches is in its KEYS (keys.h builds the lists; the unit tests
// check the slots).

// sync: snapshot (seq, trimmed, epoch, history), register missing
// players, tell whether presence changed and the room's count.
const lua_script& script_sync();

// leave: remove one player; the room's count.
const lua_script& script_leave();

// state: publish the room's state from its presence hash.  The scripts
// that change presence do not publish it: app_state.cpp coalesces.
const lua_script& script_state();

// touch: keep a quiet room's keys from expiring while it has members.
const lua_script& script_touch();

// heartbeat: refresh this server's alive key; is a reaper at work on it?
const lua_script& script_heartbeat();

// reap_claim: on another server's keys: is it dead (its heartbeat
// expired while Redis was running)?  Claims it for the caller.
const lua_script& script_reap_claim();

// reap_room: remove a dead server's players from one room (or this
// server's players of earlier runs).
const lua_script& script_reap_room();

// reap_done: drop a reaped server's keys, release the claim.
const lua_script& script_reap_done();

// index: one room's count in its bucket of the room index (GET /rooms),
// if its version is newer.
const lua_script& script_index();

// settle: the fate of a message whose answer was lost: published, or
// refused for good.
const lua_script& script_settle();

// Every script, to load them when a connection comes up.
const lua_script* const* all_scripts();

// The same script for Redis Cluster: every PUBLISH is an SPUBLISH (sharded
// Pub/Sub: the message reaches the subscribers of the node that owns the
// channel's slot, which is the room's slot; docs/redis.md "Sharded
// Pub/Sub").  Made once per script, on first use; the reference stays
// valid.
const lua_script& sharded_script(const lua_script& script);

}  // namespace rooms
