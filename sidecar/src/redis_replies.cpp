#include "redis_replies.h"

#include <hiredis/hiredis.h>

#include <charconv>

namespace rooms {

namespace {

std::string_view str(const redisReply& r) {
    return std::string_view(r.str, r.len);
}

bool is_string(const redisReply& r) {
    return r.type == REDIS_REPLY_STRING;
}

bool is_int(const redisReply& r) {
    return r.type == REDIS_REPLY_INTEGER;
}

uint64_t reply_u64(const redisReply& r) {
    if (r.type == REDIS_REPLY_INTEGER) {
        return r.integer > 0 ? static_cast<uint64_t>(r.integer) : 0;
    }
    return 0;
}

}  // namespace

publish_outcome publish_outcome_of(const redisReply& r) {
    if (r.type == REDIS_REPLY_INTEGER && r.integer > 0) {
        return publish_outcome::published;
    }
    if (r.type == REDIS_REPLY_INTEGER && r.integer == 0) {
        return publish_outcome::duplicate;
    }
    if (r.type == REDIS_REPLY_ERROR) {
        return publish_outcome::failed;
    }
    return publish_outcome::refused;
}

std::optional<bool> settle_outcome_of(const redisReply& r) {
    if (r.type != REDIS_REPLY_INTEGER) {
        return std::nullopt;
    }
    return r.integer == 1;
}

std::optional<sync_reply> parse_sync_reply(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 8 ||
        !is_string(*r.element[2]) ||
        r.element[3]->type != REDIS_REPLY_ARRAY ||
        !is_int(*r.element[6]) || !is_int(*r.element[7])) {
        return std::nullopt;
    }
    sync_reply s;
    s.seq = reply_u64(*r.element[0]);
    s.trimmed = reply_u64(*r.element[1]);
    s.epoch = str(*r.element[2]);
    const redisReply& hist = *r.element[3];
    s.history.reserve(hist.elements);
    for (size_t i = 0; i < hist.elements; i++) {
        if (is_string(*hist.element[i])) {
            s.history.push_back(str(*hist.element[i]));
        }
    }
    s.registered = reply_u64(*r.element[4]) != 0;
    s.fence = reply_u64(*r.element[5]);
    s.count = index_count{r.element[6]->integer, r.element[7]->integer,
                          s.epoch};
    return s;
}

std::optional<size_t> state_players(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 ||
        r.element[1]->type != REDIS_REPLY_INTEGER) {
        return std::nullopt;
    }
    long long n = r.element[1]->integer;
    return n > 0 ? static_cast<size_t>(n) : 0;
}

std::optional<presence_change> parse_presence_change(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 5 ||
        !is_int(*r.element[0]) || !is_int(*r.element[1]) ||
        !is_int(*r.element[2]) || !is_int(*r.element[3]) ||
        !is_string(*r.element[4])) {
        return std::nullopt;
    }
    presence_change c;
    c.removed = r.element[0]->integer;
    c.kept = r.element[1]->integer;
    c.count = index_count{r.element[2]->integer, r.element[3]->integer,
                         str(*r.element[4])};
    return c;
}

std::optional<heartbeat_reply> parse_heartbeat_reply(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 ||
        !is_int(*r.element[0]) || !is_int(*r.element[1])) {
        return std::nullopt;
    }
    return heartbeat_reply{r.element[0]->integer, r.element[1]->integer != 0};
}

std::optional<std::vector<std::string_view>> parse_members(
    const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY) {
        return std::nullopt;
    }
    std::vector<std::string_view> out;
    out.reserve(r.elements);
    for (size_t i = 0; i < r.elements; i++) {
        if (is_string(*r.element[i])) {
            out.push_back(str(*r.element[i]));
        }
    }
    return out;
}

std::optional<std::vector<std::string_view>> parse_claim_reply(
    const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 ||
        !is_int(*r.element[0]) || r.element[0]->integer != 3) {
        return std::nullopt;
    }
    return parse_members(*r.element[1]);
}

std::optional<std::vector<room_total>> parse_rooms_index(
    const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY) {
        return std::nullopt;
    }
    std::vector<room_total> out;
    for (size_t i = 0; i + 1 < r.elements; i += 2) {
        const redisReply& code = *r.element[i];
        const redisReply& score = *r.element[i + 1];
        if (!is_string(code) || !is_string(score)) {
            continue;
        }
        long long count = 0;
        std::from_chars(score.str, score.str + score.len, count);
        if (count <= 0) {
            continue;
        }
        out.push_back(room_total{str(code), count});
    }
    return out;
}

std::optional<redis_time> parse_time_reply(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 ||
        !is_string(*r.element[0]) || !is_string(*r.element[1])) {
        return std::nullopt;
    }
    redis_time t;
    const redisReply& s = *r.element[0];
    const redisReply& u = *r.element[1];
    if (std::from_chars(s.str, s.str + s.len, t.sec).ec != std::errc() ||
        std::from_chars(u.str, u.str + u.len, t.usec).ec != std::errc()) {
        return std::nullopt;
    }
    return t;
}

std::optional<pubsub_push> parse_pubsub_push(const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 3 ||
        !is_string(*r.element[0]) || !is_string(*r.element[1])) {
        return std::nullopt;
    }
    pubsub_push p;
    p.kind = str(*r.element[0]);
    p.channel = str(*r.element[1]);
    if (is_string(*r.element[2])) {
        p.payload = str(*r.element[2]);
    }
    return p;
}

bool is_pong_reply(const redisReply& r) {
    if (r.type == REDIS_REPLY_STATUS) {
        return str(r) == "PONG";
    }
    return r.type == REDIS_REPLY_ARRAY && r.elements == 2 &&
           is_string(*r.element[0]) && str(*r.element[0]) == "pong";
}

std::string_view reply_text(const redisReply& r) {
    return str(r);
}

}  // namespace rooms
