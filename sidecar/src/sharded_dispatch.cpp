#include "sharded_dispatch.h"

#include <hiredis/hiredis.h>

#include <optional>
#include <utility>

#include "redis_replies.h"

namespace rooms {

void sharded_dispatch::push(request what, std::string_view channel,
                            barrier_fn cb) {
    pending_.push_back(entry{what, std::string(channel), std::move(cb)});
}

void sharded_dispatch::ssubscribe_sent(std::string_view channel) {
    push(request::ssubscribe, channel);
    in_flight_[std::string(channel)]++;
}

void sharded_dispatch::sunsubscribe_sent(std::string_view channel) {
    push(request::sunsubscribe, channel);
    push(request::ping);
    in_flight_[std::string(channel)]++;
}

void sharded_dispatch::barrier_sent(std::string_view channel,
                                    barrier_fn cb) {
    push(request::barrier, channel, std::move(cb));
}

std::vector<sharded_dispatch::barrier_fn> sharded_dispatch::clear() {
    std::vector<barrier_fn> barriers;
    for (entry& e : pending_) {
        if (e.what == request::barrier) {
            barriers.push_back(std::move(e.cb));
        }
    }
    pending_.clear();
    in_flight_.clear();
    return barriers;
}

bool sharded_dispatch::settled(const std::string& channel) {
    auto it = in_flight_.find(channel);
    if (it == in_flight_.end()) {
        return true;
    }
    if (--it->second > 0) {
        return false;
    }
    in_flight_.erase(it);
    return true;
}

bool sharded_dispatch::take(const redisReply& r, sink& s) {
    if (r.type == REDIS_REPLY_ERROR) {
        return answer_error(reply_text(r), s);
    }
    if (is_pong_reply(r)) {
        return answer_pong(s);
    }
    if (r.type == REDIS_REPLY_STATUS) {
        if (reply_text(r) != "OK" || pending_.empty() ||
            pending_.front().what != request::auth) {
            return false;
        }
        pending_.pop_front();
        return true;
    }
    std::optional<pubsub_push> push = parse_pubsub_push(r);
    if (!push) {
        return false;
    }
    if (push->kind == "smessage") {
        if (!push->payload) {
            return false;
        }
        s.on_smessage(push->channel, *push->payload);
        return true;
    }
    if (push->kind == "ssubscribe") {
        return answer_ssubscribe(push->channel, s);
    }
    if (push->kind == "sunsubscribe") {
        return answer_sunsubscribe(push->channel, s);
    }
    return false;
}

// The oldest request was refused.  A SUNSUBSCRIBE's error comes before
// its PING's pong, whether or not a sunsubscribe push came first.
bool sharded_dispatch::answer_error(std::string_view error, sink& s) {
    if (pending_.empty()) {
        return false;
    }
    entry e = std::move(pending_.front());
    pending_.pop_front();
    switch (e.what) {
    case request::auth:
    case request::hello:
    case request::ping:
        s.on_refused(error);
        return true;
    case request::ssubscribe:
        if (settled(e.channel)) {
            s.on_ssubscribe_failed(e.channel, error);
        }
        return true;
    case request::sunsubscribe:
        settled(e.channel);
        return true;
    case request::barrier:
        s.on_barrier(std::move(e.cb), false);
        return true;
    }
    return false;
}

// A SUNSUBSCRIBE at the front was answered by a push (or refused) before
// its PING: the pong ends it and answers that PING.
bool sharded_dispatch::answer_pong(sink& s) {
    if (!pending_.empty() &&
        pending_.front().what == request::sunsubscribe) {
        if (!pending_.front().pushed) {
            return false;
        }
        settled(pending_.front().channel);
        pending_.pop_front();
    }
    if (pending_.empty()) {
        return false;
    }
    request what = pending_.front().what;
    if (what != request::hello && what != request::ping) {
        return false;
    }
    pending_.pop_front();
    if (what == request::hello) {
        s.on_handshake_done();
    }
    return true;
}

bool sharded_dispatch::answer_ssubscribe(std::string_view channel,
                                         sink& s) {
    if (pending_.empty() || pending_.front().channel != channel ||
        (pending_.front().what != request::ssubscribe &&
         pending_.front().what != request::barrier)) {
        return false;
    }
    entry e = std::move(pending_.front());
    pending_.pop_front();
    if (e.what == request::barrier) {
        s.on_barrier(std::move(e.cb), true);
    } else if (settled(e.channel)) {
        s.on_ssubscribed(e.channel);
    }
    return true;
}

// Ours when the oldest request is a SUNSUBSCRIBE of the channel (one
// Redis sent on its own just before is taken for it too: the channel is
// left either way); otherwise Redis dropped the subscription.
bool sharded_dispatch::answer_sunsubscribe(std::string_view channel,
                                           sink& s) {
    if (!pending_.empty() &&
        pending_.front().what == request::sunsubscribe &&
        pending_.front().channel == channel) {
        pending_.front().pushed = true;
        return true;
    }
    s.on_sunsubscribed(channel);
    return true;
}

}  // namespace rooms
