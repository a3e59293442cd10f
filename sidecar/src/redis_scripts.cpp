#include "redis_scripts.h"

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

local function count_room(pres_key, rooms_key, code)
    local n = redis.call('HLEN', pres_key)
    if n > 0 then
        redis.call('ZADD', rooms_key, n, code)
    else
        redis.call('ZREM', rooms_key, code)
    end
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
// KEYS: seq history trimmed senders presence epoch
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

// KEYS: seq history trimmed presence rooms server_rooms epoch senders
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
// -> { seq, trimmed, epoch token, { history... }, changed (1/0), fence }
// A player already present (resumed after a sidecar restart: its id is
// its connection's) keeps its entry; only its server and run change, so
// nobody sees it leave and join.
const lua_script& script_sync() {
    static const lua_script s = make("sync", R"lua(
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local trimmed = tonumber(redis.call('GET', KEYS[3]) or '0')
local replid = ARGV[7]
local epoch, seen, fence = ARGV[4], replid, 0
local cur = redis.call('GET', KEYS[7])
if cur then
    local t, r, f = string.match(cur, '^([^/]*)/?([^/]*)/?(%d*)$')
    epoch, seen, fence = t or cur, r or '', tonumber(f) or 0
    if replid ~= '' and seen ~= '' and seen ~= replid then
        fence = seq
    end
end
if not cur or (replid ~= '' and seen ~= replid) then
    redis.call('SET', KEYS[7], epoch .. '/' .. replid .. '/' ..
        string.format('%d', fence))
end
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local changed = 0
local server = cjson.encode(ARGV[3])
local run = cjson.encode(ARGV[5])
for i = 8, #ARGV - 2, 3 do
    local v = redis.call('HGET', KEYS[4], ARGV[i])
    local p = v and decode(v)
    if not p then
        redis.call('HSET', KEYS[4], ARGV[i], '{"name":' .. ARGV[i + 1] ..
            ',"ready":' .. (ARGV[i + 2] == '1' and 'true' or 'false') ..
            ',"server":' .. server .. ',"run":' .. run ..
            ',"j":' .. string.format('%d', seq) .. '}')
        changed = 1
    elseif p.server ~= ARGV[3] or p.run ~= ARGV[5] then
        p.server = ARGV[3]
        p.run = ARGV[5]
        redis.call('HSET', KEYS[4], ARGV[i], cjson.encode(p))
    end
end
if #ARGV >= 10 then
    redis.call('SADD', KEYS[6], ARGV[2])
    count_room(KEYS[4], KEYS[5], ARGV[2])
end
touch(tonumber(ARGV[6]), KEYS, 1, 4)
touch(tonumber(ARGV[6]), KEYS, 7, 8)
return { seq, trimmed, epoch, hist, changed, fence }
)lua");
    return s;
}

// KEYS: presence rooms server_rooms senders
// ARGV: code player_id last_local closed
// The player's senders entry goes only when it closed itself: a player
// whose worker link was lost may be resumed on a new link and send its
// unanswered messages again, which must not be published twice.
// -> 1 if the player was there
const lua_script& script_leave() {
    static const lua_script s = make("leave", R"lua(
local removed = redis.call('HDEL', KEYS[1], ARGV[2])
if ARGV[4] == '1' then
    redis.call('HDEL', KEYS[4], ARGV[2])
end
if ARGV[3] == '1' then
    redis.call('SREM', KEYS[3], ARGV[1])
end
count_room(KEYS[1], KEYS[2], ARGV[1])
return removed
)lua");
    return s;
}

// KEYS: seq presence
// ARGV: channel code ttl_ms
// -> { id, players }: the room's state, built from the presence hash and
//    published with the room's next id (app_state.cpp decides when)
const lua_script& script_state() {
    static const lua_script s = make("state", R"lua(
local id, n = publish_state(KEYS[2], KEYS[1], ARGV[1], ARGV[2])
touch(tonumber(ARGV[3]), KEYS, 1, 2)
return { id, n }
)lua");
    return s;
}

// A room with members here but nobody joining or writing: its keys are
// kept alive (app_presence.cpp, every room_ttl / 4).
// KEYS: seq history trimmed senders presence epoch
// ARGV: ttl_ms
const lua_script& script_touch() {
    static const lua_script s = make("touch", R"lua(
touch(tonumber(ARGV[1]), KEYS, 1, 6)
return 1
)lua");
    return s;
}

// KEYS: alive servers stall
// ARGV: server_id ttl_ms seen late_ms
//   seen: 1 once this process had a beat answered
// -> 1: the alive key still existed, refreshed in time
//    0: it was gone (first beat, or it expired, or Redis lost it: the
//       caller registers its players again)
//    2: it existed, but the previous beat was more than late_ms ago
// With seen, 0 and 2 mean that Redis (or this server) stalled: other
// servers' keys may have expired only because they could not beat
// either.  The stall key then stops this server's `reap dead` for one
// TTL, in Redis, so that also the reaps this server queued before it
// noticed (executed when Redis resumes, right after this beat) spare
// them (docs/redis.md "Presence and state").
const lua_script& script_heartbeat() {
    static const lua_script s = make("heartbeat", R"lua(
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ttl)
redis.call('SADD', KEYS[2], ARGV[1])
local result = 1
if left == -2 then
    result = 0
elseif left >= 0 and ttl - left > tonumber(ARGV[4]) then
    result = 2
end
if result ~= 1 and ARGV[3] == '1' then
    redis.call('SET', KEYS[3], '1', 'PX', ttl)
end
return result
)lua");
    return s;
}

// KEYS: servers rooms stall (the caller's)
// ARGV: prefix mode server_id run
//   mode "dead":   every server of the set whose alive key is gone
//                  (server_id: the caller, never reaped); nothing while
//                  the caller's stall key exists (`heartbeat`)
//   mode "stale":  the caller's players of other runs than `run`: what a
//                  previous run left and no worker resumed (a restarted
//                  sidecar runs it once the workers had time to come back)
// Key names are derived from the prefix inside the script, so this one
// script is not Redis Cluster safe (docs/redis.md).
// -> { server_id, players_removed, { room codes changed } } for each
//    server reaped (the sidecar publishes their states: `state`)
const lua_script& script_reap() {
    static const lua_script s = make("reap", R"lua(
local prefix, mode, me, run = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local victims = {}
if mode == 'dead' and redis.call('EXISTS', KEYS[3]) == 1 then
    return {}
end
if mode == 'stale' then
    victims[1] = me
else
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
        if id ~= me and
            redis.call('EXISTS', prefix .. 'server:{' .. id .. '}:alive') == 0
        then
            victims[#victims + 1] = id
        end
    end
end
local out = {}
for _, id in ipairs(victims) do
    local rooms_key = prefix .. 'server:{' .. id .. '}:rooms'
    local removed = 0
    local changed = {}
    for _, code in ipairs(redis.call('SMEMBERS', rooms_key)) do
        local pres = prefix .. 'room:{' .. code .. '}:presence'
        local all = redis.call('HGETALL', pres)
        local n, kept = 0, 0
        for i = 1, #all, 2 do
            local p = decode(all[i + 1])
            if p and p.server == id then
                if mode == 'stale' and p.run == run then
                    kept = kept + 1
                else
                    redis.call('HDEL', pres, all[i])
                    n = n + 1
                end
            end
        end
        count_room(pres, KEYS[2], code)
        if kept == 0 and mode == 'stale' then
            redis.call('SREM', rooms_key, code)
        end
        if n > 0 then
            changed[#changed + 1] = code
            removed = removed + n
        end
    end
    if mode ~= 'stale' then
        redis.call('DEL', rooms_key)
        redis.call('SREM', KEYS[1], id)
    end
    out[#out + 1] = id
    out[#out + 1] = removed
    out[#out + 1] = changed
end
return out
)lua");
    return s;
}

const lua_script* const* all_scripts() {
    static const lua_script* const list[] = {
        &script_publish(), &script_sync(),   &script_leave(),
        &script_state(),   &script_touch(),  &script_heartbeat(),
        &script_reap(),    &script_settle(), nullptr,
    };
    return list;
}

}  // namespace rooms
