#pragma once

// What the replies on a sharded Pub/Sub connection mean
// (cluster_subscriber.h, docs/redis.md "Sharded Pub/Sub").  Pure logic
// (no libuv, no socket): the connection tells it every request it
// writes, hands it every reply hiredis's reader makes of the input, in
// order, and it tells a sink what each one meant.
//
// Redis answers the requests of one connection in the order they were
// sent, and in RESP2 subscribed mode every reply is one of:
//   ["ssubscribe", channel, n]    answers the oldest request: an
//                                 SSUBSCRIBE (or a barrier) of channel
//   ["sunsubscribe", channel, n]  answers a SUNSUBSCRIBE of channel, or,
//                                 not asked for, says that Redis dropped
//                                 the subscription (its slot moved away)
//   ["smessage", channel, text]   a message: answers nothing
//   ["pong", ""] or +PONG         answers a PING (subscribed or not)
//   +OK                           answers AUTH
//   -MOVED ..., -ERR ...          the oldest request refused
//
// A sunsubscribe that Redis sends on its own may come just before the
// answer to our SUNSUBSCRIBE of the same channel, and that answer may
// then be a MOVED error (the slot moved away in between).  So every
// SUNSUBSCRIBE is followed by a PING: until its pong, the sunsubscribe
// pushes of that channel and an error belong to the SUNSUBSCRIBE.

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct redisReply;

namespace rooms {

class sharded_dispatch {
public:
    // A barrier's outcome: true once its confirmation came (everything
    // Redis sent before it went to the sink first), false when it was
    // refused or the connection was lost first.
    using barrier_fn = std::function<void(bool ok)>;

    // What the replies say.  take() calls at most one of these, as the
    // last thing it does: the sink may send requests, or clear() and
    // destroy the dispatch, from them.
    class sink {
    public:
        // The handshake's PING was answered (AUTH before it too).
        virtual void on_handshake_done() = 0;
        // AUTH or a PING got an error: the connection is of no use.
        virtual void on_refused(std::string_view error) = 0;
        // The latest SSUBSCRIBE or SUNSUBSCRIBE of the channel sent was
        // an SSUBSCRIBE, and Redis confirmed it (or refused it).
        virtual void on_ssubscribed(std::string_view channel) = 0;
        virtual void on_ssubscribe_failed(std::string_view channel,
                                          std::string_view error) = 0;
        virtual void on_smessage(std::string_view channel,
                                 std::string_view payload) = 0;
        // Redis dropped the subscription without being asked.
        virtual void on_sunsubscribed(std::string_view channel) = 0;
        virtual void on_barrier(barrier_fn cb, bool ok) = 0;

    protected:
        ~sink() = default;
    };

    // The requests written, in the order they were written.  hello is
    // the handshake's PING (after AUTH, if any), ping a later one.  The
    // connection writes `SUNSUBSCRIBE channel` and then `PING` for
    // sunsubscribe_sent(); a barrier is an SSUBSCRIBE of the channel.
    void auth_sent() { push(request::auth); }
    void hello_sent() { push(request::hello); }
    void ping_sent() { push(request::ping); }
    void ssubscribe_sent(std::string_view channel);
    void sunsubscribe_sent(std::string_view channel);
    void barrier_sent(std::string_view channel, barrier_fn cb);

    // One reply, in the order they came.  False when it answers nothing
    // that was sent (a protocol fault: drop the connection); nothing is
    // reported then.
    bool take(const redisReply& r, sink& s);

    // Requests written and not answered yet (the PING after a
    // SUNSUBSCRIBE counts as one).
    size_t pending() const { return pending_.size(); }

    // A new connection: everything is forgotten.  Returns the barriers
    // that were waiting, in order (the caller fails them).
    std::vector<barrier_fn> clear();

private:
    enum class request { auth, hello, ping, ssubscribe, sunsubscribe,
                         barrier };

    struct entry {
        request what;
        std::string channel;  // ssubscribe, sunsubscribe, barrier
        barrier_fn cb;        // barrier
        bool pushed = false;  // sunsubscribe: a sunsubscribe came
    };

    void push(request what, std::string_view channel = {},
              barrier_fn cb = {});
    // The last request in flight on the channel is answered.
    bool settled(const std::string& channel);

    bool answer_error(std::string_view error, sink& s);
    bool answer_pong(sink& s);
    bool answer_ssubscribe(std::string_view channel, sink& s);
    bool answer_sunsubscribe(std::string_view channel, sink& s);

    std::deque<entry> pending_;
    // SSUBSCRIBEs and SUNSUBSCRIBEs in flight, by channel: a room left
    // and joined again quickly has SSUBSCRIBE, SUNSUBSCRIBE, SSUBSCRIBE
    // in flight, and only the last answer says where it stands.
    std::unordered_map<std::string, unsigned> in_flight_;
};

}  // namespace rooms
