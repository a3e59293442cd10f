// libFuzzer target for the sidecar's reading of Redis replies
// (sidecar/src/redis_replies.h) and what it builds from them: arbitrary
// bytes through hiredis's reply reader, in feeds of any size, and every
// reply tree it makes handed to each parser, as if it were the answer to
// each script or a push on the subscriber connection.
//
// Input: two control bytes (feed size; since and keep of the backfill),
// then the bytes Redis sent.
//
// Checked, beyond no crash and no read out of bounds: the parsers agree
// with the reply's shape (a refused shape gives nullopt, every view lies
// within the reply); a sync snapshot gives backfill and gap-fill plans
// that hold their promises (SPEC 2.4: oldest first, only messages of the
// history or the buffer, each id once, at most `keep` after a reset,
// exactly the ids above `since` otherwise); a pushed message is framed
// as the BROADCAST the app sends and decodes back to the same room,
// payload and id; a CLUSTER SLOTS map serves each slot once, from a
// reachable address, and a redirection names a valid slot and endpoint.

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "backfill.h"
#include "cluster_map.h"
#include "envelope.h"
#include "keys.h"
#include "ngx_http_rooms_ipc.h"
#include "redis_replies.h"

namespace {

using namespace rooms;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

// hiredis 0.14 allocates an array's element pointers up front from the
// count Redis announces: "*2000000000\r\n" is a 16 GB calloc.  Redis is
// trusted, and the sidecar lives with that; the fuzzer refuses such
// counts (the reader reports out of memory) so that it finds our bugs.
constexpr int max_elements = 1 << 16;

redisReplyObjectFunctions bounded;
void* (*hiredis_create_array)(const redisReadTask*, int) = nullptr;

void* create_array(const redisReadTask* task, int elements) {
    if (elements > max_elements) {
        return nullptr;
    }
    return hiredis_create_array(task, elements);
}

redisReader* make_reader() {
    redisReader* r = redisReaderCreate();
    if (r == nullptr) {
        return nullptr;
    }
    if (hiredis_create_array == nullptr) {
        bounded = *r->fn;
        hiredis_create_array = bounded.createArray;
        bounded.createArray = create_array;
    }
    r->fn = &bounded;
    return r;
}

// The bytes of one input, to tell that a view points into the reply.
struct extent {
    std::set<const redisReply*> nodes;

    void collect(const redisReply* r) {
        nodes.insert(r);
        if (r->type == REDIS_REPLY_ARRAY) {
            for (size_t i = 0; i < r->elements; i++) {
                check(r->element[i] != nullptr);
                collect(r->element[i]);
            }
        }
    }

    bool holds(std::string_view v) const {
        for (const redisReply* n : nodes) {
            if (n->str != nullptr && v.data() >= n->str &&
                v.data() + v.size() <= n->str + n->len) {
                return true;
            }
        }
        return v.empty();
    }
};

void check_plan(const backfill_plan& plan, const room_snapshot& snap,
                std::optional<uint64_t> since, size_t keep,
                bool restarted) {
    bool reset = restarted ||
                 (since && (*since > snap.seq || snap.trimmed > *since));
    check(plan.reset == reset);
    if (!since || reset) {
        // the last `keep` of the history, oldest first
        size_t n = std::min(keep, snap.history.size());
        check(plan.messages.size() == n);
        for (size_t i = 0; i < n; i++) {
            check(plan.messages[i].data() ==
                  snap.history[snap.history.size() - n + i].payload.data());
        }
        return;
    }
    // exactly the history entries above since, in history order
    size_t k = 0;
    for (const history_entry& e : snap.history) {
        if (e.id > *since) {
            check(k < plan.messages.size() &&
                  plan.messages[k].data() == e.payload.data());
            k++;
        }
    }
    check(k == plan.messages.size());
}

// buffered: copies of payloads, so that where each message of the plan
// came from shows in its address.
void check_gap_fill(const backfill_plan& plan, const room_snapshot& snap,
                    uint64_t last_id,
                    const std::vector<history_entry>& buffered,
                    size_t keep, bool restarted) {
    bool reset = restarted || last_id > snap.seq || snap.trimmed > last_id;
    check(plan.reset == reset);
    uint64_t floor = reset ? snap.seq : last_id;

    auto from = [](const std::vector<history_entry>& v, const char* p) {
        return std::any_of(v.begin(), v.end(), [p](const history_entry& e) {
            return e.payload.data() == p;
        });
    };

    // Known ids ascending, each once; the buffered ones of unknown id
    // last.
    uint64_t prev = 0;
    bool unknown_buffered = false;
    size_t history_taken = 0;
    for (std::string_view m : plan.messages) {
        bool in_history = from(snap.history, m.data());
        bool in_buffer = from(buffered, m.data());
        check(in_history != in_buffer);
        uint64_t id = envelope_tail_id(m);
        if (in_history) {
            history_taken++;
            check(reset || id > last_id);
        } else if (id == 0) {
            unknown_buffered = true;
            continue;
        } else {
            check(id > floor);
        }
        if (id != 0) {
            check(!unknown_buffered && id > prev);
            prev = id;
        }
    }
    if (reset) {
        check(history_taken <= keep);
    }
}

void check_sync(const redisReply& r, const extent& ext, unsigned control) {
    std::optional<sync_reply> s = parse_sync_reply(r);
    bool shape = r.type == REDIS_REPLY_ARRAY && r.elements == 8 &&
                 r.element[2]->type == REDIS_REPLY_STRING &&
                 r.element[3]->type == REDIS_REPLY_ARRAY &&
                 r.element[6]->type == REDIS_REPLY_INTEGER &&
                 r.element[7]->type == REDIS_REPLY_INTEGER;
    check(s.has_value() == shape);
    if (!s) {
        return;
    }
    check(ext.holds(s->epoch));
    check(s->history.size() <= r.element[3]->elements);

    room_snapshot snap;
    snap.seq = s->seq;
    snap.trimmed = s->trimmed;
    for (std::string_view h : s->history) {
        check(ext.holds(h));
        snap.history.push_back(history_entry{envelope_tail_id(h), h});
    }

    size_t keep = (control >> 4) * 4;  // 0 .. 60
    bool restarted = control & 8;
    std::optional<uint64_t> since;
    switch (control & 7) {
    case 0:
        break;
    case 1:
        since = 0;
        break;
    case 2:
        since = snap.seq;
        break;
    case 3:
        since = snap.seq / 2;
        break;
    case 4:
        since = snap.trimmed;
        break;
    case 5:
        since = snap.seq + 1;
        break;
    default:
        since = snap.history.empty() ? 1 : snap.history.front().id;
        break;
    }
    check_plan(plan_backfill(snap, since, keep, restarted), snap, since,
               keep, restarted);

    // The history again, as live messages buffered meanwhile: the same
    // ids, some twice.
    std::vector<std::string> copies(s->history.begin(), s->history.end());
    std::vector<history_entry> buffered;
    for (const std::string& c : copies) {
        buffered.push_back(history_entry{envelope_tail_id(c), c});
    }
    uint64_t last_id = since.value_or(0);
    backfill_plan gap =
        plan_gap_fill(snap, last_id, buffered, keep, restarted);
    check_gap_fill(gap, snap, last_id, buffered, keep, restarted);

    // What a joiner gets first
    std::string w = make_welcome("ROOM", "tok.1.2", "n", snap.seq);
    check(nlohmann::json::accept(w));
    check(nlohmann::json::accept(make_reset(snap.seq)));
}

void check_push(const redisReply& r, const extent& ext) {
    std::optional<pubsub_push> p = parse_pubsub_push(r);
    bool shape = r.type == REDIS_REPLY_ARRAY && r.elements >= 3 &&
                 r.element[0]->type == REDIS_REPLY_STRING &&
                 r.element[1]->type == REDIS_REPLY_STRING;
    check(p.has_value() == shape);
    if (!p) {
        return;
    }
    check(ext.holds(p->kind) && ext.holds(p->channel));
    check(p->payload.has_value() ==
          (r.element[2]->type == REDIS_REPLY_STRING));
    if (p->kind != "message" || !p->payload) {
        return;
    }
    check(ext.holds(*p->payload));

    // app::on_message and app::broadcast_frame
    std::string_view room;
    if (!room_of_channel("rooms:", p->channel, room)) {
        return;
    }
    check(room.size() < p->channel.size());
    uint64_t id = envelope_tail_id(*p->payload);

    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_BROADCAST;
    m.room = {room.size(), reinterpret_cast<const uint8_t*>(room.data())};
    m.last_id = id;
    m.payload = {p->payload->size(),
                 reinterpret_cast<const uint8_t*>(p->payload->data())};
    size_t size = ngx_rooms_ipc_size(&m);
    if (size == 0) {
        check(room.size() > NGX_ROOMS_IPC_STR8_MAX);
        return;
    }
    std::vector<uint8_t> frame(size);
    check(ngx_rooms_ipc_encode(frame.data(), &m) == frame.data() + size);
    ngx_rooms_ipc_msg_t back;
    check(ngx_rooms_ipc_decode(frame.data(), size, &back) ==
          static_cast<long>(size));
    check(back.type == NGX_ROOMS_IPC_BROADCAST && back.last_id == id);
    check(std::string_view(reinterpret_cast<const char*>(back.room.data),
                           back.room.len) == room);
    check(std::string_view(reinterpret_cast<const char*>(back.payload.data),
                           back.payload.len) == *p->payload);
}

// Redis Cluster routing (cluster_map.h): a reply read as CLUSTER SLOTS,
// and a string or error read as a redirection and as a key.
void check_cluster(const redisReply& r) {
    if (std::optional<cluster_map> m =
            cluster_map::from_slots_reply(r, "10.0.0.1")) {
        check(r.type == REDIS_REPLY_ARRAY);
        size_t served = 0;
        for (unsigned slot = 0; slot < cluster_slot_count; slot++) {
            const cluster_node* n = m->master_of(static_cast<uint16_t>(slot));
            if (n != nullptr) {
                check(!n->host.empty() && n->port >= 1 && n->port <= 65535);
                served++;
            }
        }
        check(served + m->unserved_slots() == cluster_slot_count);
        std::vector<const cluster_node*> masters = m->masters();
        check(masters.size() <= served);
        for (size_t i = 0; i < masters.size(); i++) {
            for (size_t j = i + 1; j < masters.size(); j++) {
                check(!masters[i]->same_address(*masters[j]));
            }
        }
    }
    if (r.type != REDIS_REPLY_STRING && r.type != REDIS_REPLY_ERROR) {
        return;
    }
    std::string_view s(r.str, r.len);
    std::string_view tag = key_hash_part(s);
    check(tag.data() >= s.data() &&
          tag.data() + tag.size() <= s.data() + s.size());
    check(key_slot(s) < cluster_slot_count);

    std::optional<cluster_redirect> to = parse_redirect(s, "10.0.0.1");
    if (to) {
        check(to->slot < cluster_slot_count && !to->host.empty() &&
              to->port >= 1 && to->port <= 65535);
    }
    cluster_limits limits;
    cluster_action a = cluster_on_error(s, "10.0.0.1", {}, limits);
    check((a.step == cluster_step::redirect) == to.has_value());
    check(a.step != cluster_step::retry ||
          (a.delay_ms > 0 && a.delay_ms <= limits.retry_delay_max_ms));
}

void check_reply(const redisReply& r, unsigned control) {
    extent ext;
    ext.collect(&r);

    publish_outcome o = publish_outcome_of(r);
    check((o == publish_outcome::published) ==
          (r.type == REDIS_REPLY_INTEGER && r.integer > 0));
    check((o == publish_outcome::duplicate) ==
          (r.type == REDIS_REPLY_INTEGER && r.integer == 0));
    check((o == publish_outcome::failed) == (r.type == REDIS_REPLY_ERROR));

    std::optional<bool> settled = settle_outcome_of(r);
    check(settled.has_value() == (r.type == REDIS_REPLY_INTEGER));

    check_sync(r, ext, control);

    if (std::optional<size_t> n = state_players(r)) {
        check(r.type == REDIS_REPLY_ARRAY && r.elements == 2);
        check(*n <= static_cast<size_t>(INT64_MAX));
    }

    if (auto c = parse_presence_change(r)) {
        check(r.type == REDIS_REPLY_ARRAY && r.elements == 5);
        check(ext.holds(c->count.epoch));
    }

    if (auto h = parse_heartbeat_reply(r)) {
        check(r.type == REDIS_REPLY_ARRAY && r.elements == 2);
    }

    if (auto members = parse_members(r)) {
        check(members->size() <= r.elements);
        for (std::string_view m : *members) {
            check(ext.holds(m));
        }
    } else {
        check(r.type != REDIS_REPLY_ARRAY);
    }

    if (auto codes = parse_claim_reply(r)) {
        check(r.type == REDIS_REPLY_ARRAY && r.elements == 2);
        for (std::string_view code : *codes) {
            check(ext.holds(code));
        }
    }

    if (auto rooms = parse_rooms_index(r)) {
        check(rooms->size() <= r.elements / 2);
        // app::reply_rooms: the ROOMS_REPLY body
        auto list = nlohmann::ordered_json::array();
        for (const room_total& t : *rooms) {
            check(t.count > 0 && ext.holds(t.code));
            nlohmann::ordered_json item = nlohmann::ordered_json::object();
            item["code"] = t.code;
            item["count"] = t.count;
            list.push_back(std::move(item));
        }
        std::string body = list.dump(
            -1, ' ', false,
            nlohmann::ordered_json::error_handler_t::replace);
        check(nlohmann::json::accept(body));
    } else {
        check(r.type != REDIS_REPLY_ARRAY);
    }

    if (parse_time_reply(r)) {
        check(r.type == REDIS_REPLY_ARRAY && r.elements == 2);
    }

    check_push(r, ext);
    check_cluster(r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) {
        return 0;
    }
    size_t feed = data[0] == 0 ? size : data[0];
    unsigned control = data[1];
    const char* in = reinterpret_cast<const char*>(data) + 2;
    size_t n = size - 2;

    redisReader* reader = make_reader();
    if (reader == nullptr) {
        return 0;
    }
    size_t off = 0;
    bool failed = false;
    while (!failed) {
        if (off < n) {
            size_t len = std::min(feed, n - off);
            if (redisReaderFeed(reader, in + off, len) != REDIS_OK) {
                break;
            }
            off += len;
        }
        for (;;) {
            void* reply = nullptr;
            if (redisReaderGetReply(reader, &reply) != REDIS_OK) {
                failed = true;  // a protocol error: the connection drops
                break;
            }
            if (reply == nullptr) {
                break;  // needs more bytes
            }
            check_reply(*static_cast<redisReply*>(reply), control);
            freeReplyObject(reply);
        }
        if (off >= n) {
            break;
        }
    }
    redisReaderFree(reader);
    return 0;
}
