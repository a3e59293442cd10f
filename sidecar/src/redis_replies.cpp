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
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 5 || r.elements > 6 ||
        !is_string(*r.element[2]) ||
        r.element[3]->type != REDIS_REPLY_ARRAY) {
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
    if (r.elements == 6) {
        s.fence = reply_u64(*r.element[5]);
    }
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

std::optional<std::vector<reaped_server>> parse_reap_reply(
    const redisReply& r) {
    if (r.type != REDIS_REPLY_ARRAY) {
        return std::nullopt;
    }
    std::vector<reaped_server> out;
    for (size_t i = 0; i + 2 < r.elements; i += 3) {
        const redisReply& id = *r.element[i];
        const redisReply& n = *r.element[i + 1];
        const redisReply& codes = *r.element[i + 2];
        if (!is_string(id) || n.type != REDIS_REPLY_INTEGER ||
            codes.type != REDIS_REPLY_ARRAY) {
            continue;
        }
        reaped_server s;
        s.id = str(id);
        s.players = n.integer;
        for (size_t j = 0; j < codes.elements; j++) {
            if (is_string(*codes.element[j])) {
                s.rooms.push_back(str(*codes.element[j]));
            }
        }
        out.push_back(std::move(s));
    }
    return out;
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

}  // namespace rooms
