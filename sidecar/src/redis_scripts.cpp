#include "redis_scripts.h"

#include <memory>
#include <string_view>
#include <unordered_map>

namespace rooms {

namespace {

// Shared by the scripts that publish.  An envelope body is the JSON of
// the envelope without its closing brace; publish() completes it with
// the room's next id and Redis's clock, so that every server sees the
// same bytes.
constexpr const char* prelude = R"lua(
local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The envelope's closing tail: its id and Redis's clock.
local function complete(body, id, ts)
    return body .. ',"id":' .. string.format('%d', id) .. ',"ts":' ..
        ts .. '}'
end

local function publish(seq_key, channel, body)
    local id = redis.call('INCR', seq_key)
    local msg = complete(body, id, string.format('%.0f', now_ms()))
    redis.call('PUBLISH', channel, msg)
    return id, msg
end

-- Appends msgs (a list) to the history and trims it to the last n,
-- recording the newest id trimmed off.  A history (or trimmed key) this
-- creates gets the room's TTL (ttl > 0).
local function keep(hist_key, trimmed_key, msgs, n, ttl)
    if n <= 0 or #msgs == 0 then
        return
    end
    local len = redis.call('RPUSH', hist_key, unpack(msgs))
    if len == #msgs and ttl > 0 then
        redis.call('PEXPIRE', hist_key, ttl)
    end
    if len > n then
        local cut = redis.call('LINDEX', hist_key, len - n - 1)
        redis.call('LTRIM', hist_key, -n, -1)
        local id = string.match(cut, ',"id":(%d+),"ts":%d+}$')
        if id and ttl > 0 then
            redis.call('SET', trimmed_key, id, 'PX', ttl)
        elseif id then
            redis.call('SET', trimmed_key, id)
        end
    end
end

-- A room's keys live ttl ms (0: for ever) after its last join or
-- message (SPEC 4); keys that do not exist are skipped by Redis.
local function touch(ttl, keys, first, last)
    if ttl <= 0 then
        return
    end
    for i = first, last do
        redis.call('PEXPIRE', keys[i], ttl)
    end
end

-- Exactly-once publishing (docs/redis.md "Answers"): a room's senders
-- hash keeps, per player, the seq of its newest message that reached
-- Redis, and the seqs it refused since (after "|": past their deadline,
-- or settled as never published), so that a message sent again (its
-- sidecar died before it could answer) is not published twice, and its
-- fate can be told later: a seq not above the newest was published
-- unless it is in the refused list.  The list keeps the last 1000
-- refusals.
local function parse_sender(v)
    if not v then
        return 0, ''
    end
    local last, refused = string.match(v, '^(%d+)|?(.*)$')
    return tonumber(last) or 0, refused or ''
end

local function sender_state(senders_key, player)
    return parse_sender(redis.call('HGET', senders_key, player))
end

local function sender_value(last, refused)
    return refused == '' and string.format('%d', last) or
        string.format('%d|%s', last, refused)
end

local function was_refused(refused, seq)
    return string.find(',' .. refused .. ',', ',' .. seq .. ',', 1, true)
        ~= nil
end

local function set_sender(senders_key, player, last, refused)
    redis.call('HSET', senders_key, player, sender_value(last, refused))
end

-- The refused list with seq added (the last 1000 kept).
local function add_refused(refused, seq)
    local n = string.format('%d', seq)
    local list = refused == '' and n or refused .. ',' .. n
    local _, commas = string.gsub(list, ',', '')
    if commas >= 1000 then
        list = string.match(list, '^[^,]*,(.*)$')
    end
    return list
end

-- Marks seq (above the newest) refused for good.
local function refuse(senders_key, player, seq, refused)
    set_sender(senders_key, player, seq, add_refused(refused, seq))
end

local function decode(v)
    local ok, p = pcall(cjson.decode, v)
    if ok and type(p) == 'table' then
        return p
    end
    return nil
end

-- The players of a room, in join order, as one state envelope.
-- -> id, player count
local function publish_state(pres_key, seq_key, channel, code)
    local all = redis.call('HGETALL', pres_key)
    local ps = {}
    for i = 1, #all, 2 do
        local p = decode(all[i + 1])
        if p then
            ps[#ps + 1] = { id = all[i], p = p }
        end
    end
    table.sort(ps, function(a, b)
        local ja, jb = tonumber(a.p.j) or 0, tonumber(b.p.j) or 0
        if ja ~= jb then
            return ja < jb
        end
        return a.id < b.id
    end)
    local parts = {}
    for i, e in ipairs(ps) do
        parts[i] = '{"id":' .. cjson.encode(e.id) .. ',"name":' ..
            cjson.encode(tostring(e.p.name)) .. ',"alive":true,"ready":' ..
            (e.p.ready == true and 'true' or 'false') .. '}'
    end
    local id = publish(seq_key, channel,
        '{"type":"state","data":{"room":' .. cjson.encode(code) ..
        ',"players":[' .. table.concat(parts, ',') .. ']}')
    return id, #ps
end

-- The room's players changed (registered or removed): its presence
-- version goes up, so that the room index (`index`) can tell a newer
-- count from an older one.  It lives as long as the room's other keys.
local function presence_changed(pv_key, ttl)
    redis.call('INCR', pv_key)
    if ttl > 0 then
        redis.call('PEXPIRE', pv_key, ttl)
    end
end

-- The room index needs the count, its version and the room's epoch
-- token (a new one: the room's keys were lost, its versions start
-- again; the epoch key holds `token/replid/fence`, see `sync`).
local function room_count(pres_key, pv_key, epoch_key)
    local e = redis.call('GET', epoch_key) or ''
    return redis.call('HLEN', pres_key),
        tonumber(redis.call('GET', pv_key) or '0'),
        string.match(e, '^[^/]*')
end
)lua";

lua_script make(const char* name, const char* body) {
    return lua_script{name, std::string(prelude) + body};
}

}  // namespace

// Several messages of one room, in arrival order, in one call (a batch:
// app_publish.cpp).  Each is admitted as it would be alone; those
// admitted get consecutive ids (one INCRBY) and one `ts`, go to the
// history (kept ones, one RPUSH) and are published in one PUBLISH,
// joined by newlines; the senders hash is read and written once.  Keys
// this call creates get the room's TTL; existing ones are renewed by
// `touch` (the sidecar keeps rooms with members alive), so a busy room
// pays no PEXPIRE per message.
// KEYS: seq history trimmed senders presence epoch pv (room_keys())
// ARGV: channel keep_n ttl_ms, then for each message
//       body kept(1/0) player_id seq deadline_ms(0: none) agree(1/0)
// -> one answer per message: its id (> 0); 0 published before (sent
//    again); -1 past its deadline (refused now); -2 refused before
const lua_script& script_publish() {
    static const lua_script s = make("publish", R"lua(
local keep_n, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
-- the senders of the batch, read at once
local players, seen = {}, {}
for i = 4, #ARGV - 5, 6 do
    local player = ARGV[i + 2]
    if tonumber(ARGV[i + 3]) > 0 and not seen[player] then
        seen[player] = true
        players[#players + 1] = player
    end
end
local senders = {}
if #players > 0 then
    local vs = redis.call('HMGET', KEYS[4], unpack(players))
    for j, player in ipairs(players) do
        local last, refused = parse_sender(vs[j])
        senders[player] = { last = last, refused = refused, dirty = false,
                            new = not vs[j] }
    end
end
-- admit each message in order
local out, admitted = {}, 0
for i = 4, #ARGV - 5, 6 do
    local s, deadline = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
    local st = senders[ARGV[i + 2]]
    local ok = 1
    if s > 0 and s <= st.last then
        ok = was_refused(st.refused, s) and -2 or 0
    elseif deadline > 0 and now > deadline then
        ok = -1
        if s > 0 then
            st.last, st.refused = s, add_refused(st.refused, s)
            st.dirty = true
        end
    elseif s > 0 then
        st.last, st.dirty = s, true
    end
    out[#out + 1] = ok
    if ok == 1 then
        admitted = admitted + 1
    end
end
local fields, created = {}, false
for _, player in ipairs(players) do
    local st = senders[player]
    if st.dirty then
        fields[#fields + 1] = player
        fields[#fields + 1] = sender_value(st.last, st.refused)
        created = created or st.new
    end
end
if #fields > 0 then
    redis.call('HSET', KEYS[4], unpack(fields))
    if created and ttl > 0 then
        redis.call('PEXPIRE', KEYS[4], ttl)
    end
end
if admitted == 0 then
    return out
end
-- ids, envelopes, history, ready, one PUBLISH
local last = redis.call('INCRBY', KEYS[1], admitted)
if last == admitted and ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
end
local id = last - admitted
local ts = string.format('%.0f', now)
local msgs, kept = {}, {}
for j, i in ipairs(out) do
    if i == 1 then
        local a = 4 + (j - 1) * 6
        id = id + 1
        out[j] = id
        local msg = complete(ARGV[a], id, ts)
        msgs[#msgs + 1] = msg
        if ARGV[a + 1] == '1' then
            kept[#kept + 1] = msg
        end
        if ARGV[a + 5] == '1' then
            local v = redis.call('HGET', KEYS[5], ARGV[a + 2])
            local p = v and decode(v)
            if p and p.ready ~= true then
                p.ready = true
                redis.call('HSET', KEYS[5], ARGV[a + 2], cjson.encode(p))
            end
        end
    end
end
keep(KEYS[2], KEYS[3], kept, keep_n, ttl)
redis.call('PUBLISH', ARGV[1], table.concat(msgs, '\n'))
return out
)lua");
    return s;
}

// The fate of a message whose answer was lost (its sidecar or its Redis
// connection went away while it was in flight): published, or refused for
// good, so that it cannot be published late.
// KEYS: senders
// ARGV: player_id seq
// -> 1 it was published, 0 it was not (and never will be)
const lua_script& script_settle() {
    static const lua_script s = make("settle", R"lua(
local seq = tonumber(ARGV[2])
local last, refused = sender_state(KEYS[1], ARGV[1])
if seq <= last then
    return was_refused(refused, seq) and 0 or 1
end
refuse(KEYS[1], ARGV[1], seq, refused)
return 0
)lua");
    return s;
}

// KEYS: seq history trimmed senders presence epoch pv (room_keys())
// ARGV: channel code server_id epoch_candidate run ttl_ms replid
//       then (player_id name_json ready) for each player to register
// The epoch key holds `token/replid/fence`: the token (new only when the
// room's keys were lost), the replication id of the Redis the room was
// last synced on (the caller's, from INFO), and the fence: the room's seq
// at its first sync under that replication id.  A new replication id (a
// failover, a restarted master) means writes acknowledged before may be
// missing here; each server checks its own members' view against the
// history (app_sync.cpp), and a `since=` resume at or below the fence
// gets a reset, as if those ids were trimmed (docs/redis.md "Sentinel").
// A player already present (resumed after a sidecar restart: its id is
// its connection's) keeps its entry; only its server and run change, so
// nobody sees it leave and join.  The room's count goes to the index
// from the reply (`index`); the sidecar adds the room to its server's
// room set before (docs/redis.md "Presence").
// -> { seq, trimmed, epoch token, { history... }, changed (1/0), fence,
//      count, pv }
const lua_script& script_sync() {
    static const lua_script s = make("sync", R"lua(
local ttl = tonumber(ARGV[6])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local trimmed = tonumber(redis.call('GET', KEYS[3]) or '0')
local replid = ARGV[7]
local epoch, seen, fence = ARGV[4], replid, 0
local cur = redis.call('GET', KEYS[6])
if cur then
    local t, r, f = string.match(cur, '^([^/]*)/?([^/]*)/?(%d*)$')
    epoch, seen, fence = t or cur, r or '', tonumber(f) or 0
    if replid ~= '' and seen ~= '' and seen ~= replid then
        fence = seq
    end
end
if not cur or (replid ~= '' and seen ~= replid) then
    redis.call('SET', KEYS[6], epoch .. '/' .. replid .. '/' ..
        string.format('%d', fence))
end
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local changed = 0
local server = cjson.encode(ARGV[3])
local run = cjson.encode(ARGV[5])
for i = 8, #ARGV - 2, 3 do
    local v = redis.call('HGET', KEYS[5], ARGV[i])
    local p = v and decode(v)
    if not p then
        redis.call('HSET', KEYS[5], ARGV[i], '{"name":' .. ARGV[i + 1] ..
            ',"ready":' .. (ARGV[i + 2] == '1' and 'true' or 'false') ..
            ',"server":' .. server .. ',"run":' .. run ..
            ',"j":' .. string.format('%d', seq) .. '}')
        changed = 1
    elseif p.server ~= ARGV[3] or p.run ~= ARGV[5] then
        p.server = ARGV[3]
        p.run = ARGV[5]
        redis.call('HSET', KEYS[5], ARGV[i], cjson.encode(p))
    end
end
if changed == 1 then
    presence_changed(KEYS[7], ttl)
end
touch(ttl, KEYS, 1, 7)
local count, pv = room_count(KEYS[5], KEYS[7], KEYS[6])
return { seq, trimmed, epoch, hist, changed, fence, count, pv }
)lua");
    return s;
}

// The reply of `leave` and `reap_room`, a presence change:
// { removed, kept, count, pv, epoch }: players removed, players of this
// server's current run kept (`reap_room` stale), and what the room index
// needs.

// KEYS: room_keys()
// ARGV: player_id closed ttl_ms
// The player's senders entry goes only when it closed itself: a player
// whose worker link was lost may be resumed on a new link and send its
// unanswered messages again, which must not be published twice.
// -> a presence change (kept 0)
const lua_script& script_leave() {
    static const lua_script s = make("leave", R"lua(
local removed = redis.call('HDEL', KEYS[5], ARGV[1])
if ARGV[2] == '1' then
    redis.call('HDEL', KEYS[4], ARGV[1])
end
if removed == 1 then
    presence_changed(KEYS[7], tonumber(ARGV[3]))
end
local count, pv, epoch = room_count(KEYS[5], KEYS[7], KEYS[6])
return { removed, 0, count, pv, epoch }
)lua");
    return s;
}

// KEYS: room_keys()
// ARGV: channel code ttl_ms
// -> { id, players }: the room's state, built from the presence hash and
//    published with the room's next id (app_state.cpp decides when)
const lua_script& script_state() {
    static const lua_script s = make("state", R"lua(
local id, n = publish_state(KEYS[5], KEYS[1], ARGV[1], ARGV[2])
touch(tonumber(ARGV[3]), KEYS, 1, 7)
return { id, n }
)lua");
    return s;
}

// A room with members here but nobody joining or writing: its keys are
// kept alive (app_presence.cpp, every room_ttl / 4).
// KEYS: room_keys()
// ARGV: ttl_ms
const lua_script& script_touch() {
    static const lua_script s = make("touch", R"lua(
touch(tonumber(ARGV[1]), KEYS, 1, 7)
return 1
)lua");
    return s;
}

// KEYS: server_keys() of this server: alive watch suspect reaping rooms
// ARGV: ttl_ms late_ms
// -> { beat, reaping }
//    beat 1: the alive key still existed, refreshed in time
//         0: it was gone (first beat, or it expired, or Redis lost it:
//            the caller registers its players again)
//         2: it existed, but the previous beat was more than late_ms ago
//            (Redis or this server stalled)
//    reaping 1: a reaper holds this server's claim (`reap_claim`): its
//            removals may still run after this server's registrations;
//            the caller registers its players again once it is released
// A beat clears a suspicion (`reap_claim`).  The server's id goes to
// the server set in a command of its own (another slot).
const lua_script& script_heartbeat() {
    static const lua_script s = make("heartbeat", R"lua(
local ttl = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ttl)
redis.call('DEL', KEYS[3])
local beat = 1
if left == -2 then
    beat = 0
elseif left >= 0 and ttl - left > tonumber(ARGV[2]) then
    beat = 2
end
return { beat, redis.call('EXISTS', KEYS[4]) }
)lua");
    return s;
}

// Is this server dead?  Run by every other server at each of its beats,
// on the victim's keys only (its slot), so it also serves a cluster where
// the caller's keys are on another node.  Every run records when it
// looked (`watch`): a gap of more than late_ms since the previous look
// means that this node (or every reaper) stalled, and that the victim
// may have missed its beats for that reason only.  An expired alive key
// is then only a suspicion (`suspect`, Redis's time), confirmed if it
// still holds ttl_ms later, when the victim has had a whole TTL of
// running Redis to beat (its beat clears the suspicion).  Without a gap,
// the alive key expired while Redis ran and was watched: the victim is
// claimed at once, as fast as a single `reap` script used to.  One
// reaper at a time (`reaping`, SET NX PX ttl_ms; `reap_done` releases it).
// KEYS: server_keys() of the victim: alive watch suspect reaping rooms
// ARGV: ttl_ms late_ms caller_id
// -> { 0 } alive; { 1 } suspected; { 2 } another reaper holds it;
//    { 3, { room codes } } claimed: the caller reaps these rooms
const lua_script& script_reap_claim() {
    static const lua_script s = make("reap_claim", R"lua(
local ttl, late = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local prev = tonumber(redis.call('GET', KEYS[2]) or '')
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', 2 * ttl)
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('DEL', KEYS[3])
    return { 0 }
end
if not prev or now - prev > late then
    redis.call('SET', KEYS[3], string.format('%.0f', now), 'PX', 2 * ttl)
    return { 1 }
end
local since = tonumber(redis.call('GET', KEYS[3]) or '')
if since and now - since < ttl then
    return { 1 }
end
if not redis.call('SET', KEYS[4], ARGV[3], 'NX', 'PX', ttl) then
    return { 2 }
end
return { 3, redis.call('SMEMBERS', KEYS[5]) }
)lua");
    return s;
}

// One room of a claimed server: its players leave.  Mode "dead": the
// players of server_id; mode "stale": those of server_id (the caller)
// whose run is not `run` (a previous run's, not resumed: a restarted
// sidecar runs it once the workers had time to come back).
// KEYS: room_keys()
// ARGV: server_id mode run ttl_ms
// -> a presence change (see `leave`)
const lua_script& script_reap_room() {
    static const lua_script s = make("reap_room", R"lua(
local server, stale, run = ARGV[1], ARGV[2] == 'stale', ARGV[3]
local all = redis.call('HGETALL', KEYS[5])
local removed, kept = 0, 0
for i = 1, #all, 2 do
    local p = decode(all[i + 1])
    if p and p.server == server then
        if stale and p.run == run then
            kept = kept + 1
        else
            redis.call('HDEL', KEYS[5], all[i])
            removed = removed + 1
        end
    end
end
if removed > 0 then
    presence_changed(KEYS[7], tonumber(ARGV[4]))
end
local count, pv, epoch = room_count(KEYS[5], KEYS[7], KEYS[6])
return { removed, kept, count, pv, epoch }
)lua");
    return s;
}

// After the `reap_room`s of a claim (pipelined before it): the dead
// server's keys go, unless it beat meanwhile; the claim is released.
// KEYS: server_keys() of the victim
// ARGV: caller_id
// -> 1 the server is gone (the caller drops it from the server set), 0 it
//    is alive again
const lua_script& script_reap_done() {
    static const lua_script s = make("reap_done", R"lua(
local gone = redis.call('EXISTS', KEYS[1]) == 0
if gone then
    redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
end
if redis.call('GET', KEYS[4]) == ARGV[1] then
    redis.call('DEL', KEYS[4])
end
return gone and 1 or 0
)lua");
    return s;
}

// The room index (GET /rooms): one room's count in its bucket, applied
// only if its version is not older than the one stored: two servers that
// change a room at once may reach the bucket in either order.  A version
// of another epoch wins (the room's keys were lost and its versions
// started again).  The version stays after the room's count went to 0
// (a tombstone against an older count still on its way) and expires
// ttl_ms after the room's last update (app::update_index()).
// KEYS: room_index_keys(): the bucket's sorted set, the room's version
// ARGV: code count pv epoch ttl_ms
// -> 1 applied, 0 older than the stored one
const lua_script& script_index() {
    static const lua_script s = make("index", R"lua(
local pv, ttl = tonumber(ARGV[3]), tonumber(ARGV[5])
local old = redis.call('GET', KEYS[2])
if old then
    local opv, oepoch = string.match(old, '^(%d+):(.*)$')
    if oepoch == ARGV[4] and tonumber(opv) > pv then
        return 0
    end
end
local v = string.format('%d', pv) .. ':' .. ARGV[4]
if ttl > 0 then
    redis.call('SET', KEYS[2], v, 'PX', ttl)
else
    redis.call('SET', KEYS[2], v)
end
if tonumber(ARGV[2]) > 0 then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
else
    redis.call('ZREM', KEYS[1], ARGV[1])
end
return 1
)lua");
    return s;
}

const lua_script* const* all_scripts() {
    static const lua_script* const list[] = {
        &script_publish(),   &script_sync(),      &script_leave(),
        &script_state(),     &script_touch(),     &script_heartbeat(),
        &script_reap_claim(), &script_reap_room(), &script_reap_done(),
        &script_index(),     &script_settle(),    nullptr,
    };
    return list;
}

const lua_script& sharded_script(const lua_script& script) {
    static std::unordered_map<const lua_script*, std::unique_ptr<lua_script>>
        variants;
    std::unique_ptr<lua_script>& v = variants[&script];
    if (!v) {
        v = std::make_unique<lua_script>(script);
        std::string& body = v->body;
        static constexpr std::string_view from = "'PUBLISH'";
        for (size_t at = body.find(from); at != std::string::npos;
             at = body.find(from, at)) {
            body.replace(at, from.size(), "'SPUBLISH'");
            at += from.size() + 1;
        }
    }
    return *v;
}

}  // namespace rooms
