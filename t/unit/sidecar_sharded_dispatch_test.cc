// What the replies on a sharded Pub/Sub connection mean
// (sharded_dispatch.h): replies made from RESP bytes by hiredis's own
// reader, in the orders Redis 7 sends them.

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "redis_reply_reader.h"
#include "sharded_dispatch.h"

using namespace rooms;

namespace {

using events = std::vector<std::string>;

std::string bulk(std::string_view s) {
    return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n";
}

std::string push(std::string_view kind, std::string_view channel,
                 std::string_view x) {
    return "*3\r\n" + bulk(kind) + bulk(channel) + bulk(x);
}

std::string confirm(std::string_view kind, std::string_view channel,
                    int count) {
    return "*3\r\n" + bulk(kind) + bulk(channel) + ":" +
           std::to_string(count) + "\r\n";
}

const std::string pong_subscribed = "*2\r\n$4\r\npong\r\n$0\r\n\r\n";
const std::string pong_plain = "+PONG\r\n";

// Every event as one line.
class recorder : public sharded_dispatch::sink {
public:
    events seen;

    void on_handshake_done() override { seen.push_back("ready"); }
    void on_refused(std::string_view e) override {
        seen.push_back("refused " + std::string(e));
    }
    void on_ssubscribed(std::string_view c) override {
        seen.push_back("ssubscribed " + std::string(c));
    }
    void on_ssubscribe_failed(std::string_view c,
                              std::string_view e) override {
        seen.push_back("failed " + std::string(c) + " " + std::string(e));
    }
    void on_smessage(std::string_view c, std::string_view p) override {
        seen.push_back("smessage " + std::string(c) + " " + std::string(p));
    }
    void on_sunsubscribed(std::string_view c) override {
        seen.push_back("sunsubscribed " + std::string(c));
    }
    void on_barrier(sharded_dispatch::barrier_fn cb, bool ok) override {
        cb(ok);
    }
};

class ShardedDispatch : public ::testing::Test {
protected:
    sharded_dispatch d;
    recorder r;

    // Feeds one reply; returns take()'s verdict.
    bool take(const std::string& resp) {
        rooms_test::reply_ptr reply = rooms_test::read_reply(resp);
        EXPECT_TRUE(reply) << resp;
        return reply && d.take(*reply, r);
    }

    // The events since the last call.
    events drain() {
        events e;
        e.swap(r.seen);
        return e;
    }

    sharded_dispatch::barrier_fn barrier_to(std::string name) {
        return [this, name](bool ok) {
            r.seen.push_back("barrier " + name + (ok ? " ok" : " failed"));
        };
    }

    // A connection past its handshake.
    void handshake() {
        d.hello_sent();
        ASSERT_TRUE(take(pong_plain));
        ASSERT_EQ(drain(), events{"ready"});
    }
};

}  // namespace

TEST_F(ShardedDispatch, HandshakeWithAuth) {
    d.auth_sent();
    d.hello_sent();
    EXPECT_EQ(d.pending(), 2u);
    EXPECT_TRUE(take("+OK\r\n"));
    EXPECT_EQ(drain(), events{});
    EXPECT_TRUE(take(pong_plain));
    EXPECT_EQ(drain(), events{"ready"});
    EXPECT_EQ(d.pending(), 0u);
}

TEST_F(ShardedDispatch, HandshakeRefused) {
    d.auth_sent();
    d.hello_sent();
    EXPECT_TRUE(take("-WRONGPASS invalid username-password pair\r\n"));
    EXPECT_EQ(drain(),
              events{"refused WRONGPASS invalid username-password pair"});

    sharded_dispatch fresh;
    fresh.hello_sent();
    rooms_test::reply_ptr e = rooms_test::read_reply(
        "-NOAUTH Authentication required.\r\n");
    EXPECT_TRUE(fresh.take(*e, r));
    EXPECT_EQ(drain(), events{"refused NOAUTH Authentication required."});
}

TEST_F(ShardedDispatch, PongInBothForms) {
    handshake();
    d.ping_sent();
    d.ping_sent();
    EXPECT_TRUE(take(pong_plain));
    EXPECT_TRUE(take(pong_subscribed));
    EXPECT_EQ(drain(), events{});  // a probe's pong reports nothing
    EXPECT_EQ(d.pending(), 0u);
    // one more pong than PINGs
    EXPECT_FALSE(take(pong_subscribed));
}

TEST_F(ShardedDispatch, Confirmations) {
    handshake();
    d.ssubscribe_sent("room:{A}:pub");
    d.ssubscribe_sent("room:{B}:pub");
    EXPECT_TRUE(take(confirm("ssubscribe", "room:{A}:pub", 1)));
    EXPECT_TRUE(take(confirm("ssubscribe", "room:{B}:pub", 2)));
    EXPECT_EQ(drain(), (events{"ssubscribed room:{A}:pub",
                               "ssubscribed room:{B}:pub"}));
    EXPECT_EQ(d.pending(), 0u);

    // a requested SUNSUBSCRIBE reports nothing; its PING ends it
    d.sunsubscribe_sent("room:{A}:pub");
    EXPECT_EQ(d.pending(), 2u);
    EXPECT_TRUE(take(confirm("sunsubscribe", "room:{A}:pub", 1)));
    EXPECT_EQ(d.pending(), 2u);
    EXPECT_TRUE(take(pong_subscribed));
    EXPECT_EQ(drain(), events{});
    EXPECT_EQ(d.pending(), 0u);

    // the last one: Redis leaves subscribed mode, PING answers +PONG
    d.sunsubscribe_sent("room:{B}:pub");
    EXPECT_TRUE(take(confirm("sunsubscribe", "room:{B}:pub", 0)));
    EXPECT_TRUE(take(pong_plain));
    EXPECT_EQ(drain(), events{});
    EXPECT_EQ(d.pending(), 0u);
}

TEST_F(ShardedDispatch, ConfirmationOutOfOrderIsAFault) {
    handshake();
    d.ssubscribe_sent("a");
    d.ssubscribe_sent("b");
    EXPECT_FALSE(take(confirm("ssubscribe", "b", 1)));
    EXPECT_EQ(drain(), events{});
    EXPECT_EQ(d.pending(), 2u);

    // nothing sent at all
    sharded_dispatch idle;
    rooms_test::reply_ptr c = rooms_test::read_reply(
        confirm("ssubscribe", "a", 1));
    EXPECT_FALSE(idle.take(*c, r));
    rooms_test::reply_ptr e = rooms_test::read_reply("-ERR x\r\n");
    EXPECT_FALSE(idle.take(*e, r));
    rooms_test::reply_ptr ok = rooms_test::read_reply("+OK\r\n");
    EXPECT_FALSE(idle.take(*ok, r));
    EXPECT_EQ(drain(), events{});
}

TEST_F(ShardedDispatch, ErrorsAnswerTheOldestRequest) {
    handshake();
    d.ssubscribe_sent("a");
    d.ssubscribe_sent("b");
    d.barrier_sent("c", barrier_to("c"));
    d.ssubscribe_sent("d");
    EXPECT_TRUE(take("-MOVED 15495 127.0.0.1:7001\r\n"));
    EXPECT_TRUE(take(confirm("ssubscribe", "b", 1)));
    EXPECT_TRUE(take("-MOVED 7365 127.0.0.1:7002\r\n"));
    EXPECT_TRUE(take("-ERR something else\r\n"));
    EXPECT_EQ(drain(), (events{"failed a MOVED 15495 127.0.0.1:7001",
                               "ssubscribed b", "barrier c failed",
                               "failed d ERR something else"}));
    EXPECT_EQ(d.pending(), 0u);
}

TEST_F(ShardedDispatch, MessagesConsumeNothing) {
    handshake();
    d.ssubscribe_sent("a");
    // a message of another channel, already subscribed, before the
    // confirmation
    EXPECT_TRUE(take(push("smessage", "b", "early")));
    EXPECT_EQ(d.pending(), 1u);
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 2)));
    EXPECT_TRUE(take(push("smessage", "a", "hello")));
    EXPECT_TRUE(take(push("smessage", "a", "")));
    EXPECT_EQ(drain(), (events{"smessage b early", "ssubscribed a",
                               "smessage a hello", "smessage a "}));
    EXPECT_EQ(d.pending(), 0u);

    // a message with no string payload is not one
    EXPECT_FALSE(take(confirm("smessage", "a", 1)));
    // nor a push of a kind never asked for
    EXPECT_FALSE(take(push("message", "a", "x")));
}

TEST_F(ShardedDispatch, UnrequestedSunsubscribe) {
    handshake();
    d.ssubscribe_sent("a");
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 1)));
    EXPECT_EQ(drain(), events{"ssubscribed a"});

    // nothing pending: the slot moved away
    EXPECT_TRUE(take(confirm("sunsubscribe", "a", 0)));
    EXPECT_EQ(drain(), events{"sunsubscribed a"});

    // pending requests of other kinds or channels are not answered
    d.ssubscribe_sent("b");
    d.sunsubscribe_sent("c");
    EXPECT_TRUE(take(confirm("sunsubscribe", "b", 0)));
    EXPECT_EQ(d.pending(), 3u);
    EXPECT_TRUE(take(confirm("ssubscribe", "b", 1)));
    EXPECT_TRUE(take(confirm("sunsubscribe", "d", 1)));
    EXPECT_EQ(d.pending(), 2u);
    EXPECT_TRUE(take(confirm("sunsubscribe", "c", 1)));
    EXPECT_TRUE(take(pong_subscribed));
    EXPECT_EQ(drain(), (events{"sunsubscribed b", "ssubscribed b",
                               "sunsubscribed d"}));
    EXPECT_EQ(d.pending(), 0u);
}

// The slot moves while our SUNSUBSCRIBE is in flight: Redis's own
// sunsubscribe comes first, then its answer to ours: a confirmation, or
// MOVED.  Neither is taken for the requests behind it.
TEST_F(ShardedDispatch, SunsubscribeRacingASlotMove) {
    handshake();
    d.sunsubscribe_sent("a");
    d.ssubscribe_sent("a");
    EXPECT_TRUE(take(confirm("sunsubscribe", "a", 0)));  // dropped
    EXPECT_TRUE(take("-MOVED 15495 127.0.0.1:7001\r\n"));  // ours
    EXPECT_TRUE(take(pong_plain));
    EXPECT_EQ(drain(), events{});
    EXPECT_TRUE(take("-MOVED 15495 127.0.0.1:7001\r\n"));  // the SSUBSCRIBE
    EXPECT_EQ(drain(), events{"failed a MOVED 15495 127.0.0.1:7001"});
    EXPECT_EQ(d.pending(), 0u);

    // dropped, then our SUNSUBSCRIBE confirmed anyway
    d.ssubscribe_sent("b");
    EXPECT_TRUE(take(confirm("ssubscribe", "b", 1)));
    d.sunsubscribe_sent("b");
    d.barrier_sent("x", barrier_to("x"));
    EXPECT_TRUE(take(confirm("sunsubscribe", "b", 0)));
    EXPECT_TRUE(take(confirm("sunsubscribe", "b", 0)));
    EXPECT_TRUE(take(pong_plain));
    EXPECT_TRUE(take(confirm("ssubscribe", "x", 1)));
    EXPECT_EQ(drain(), (events{"ssubscribed b", "barrier x ok"}));
    EXPECT_EQ(d.pending(), 0u);

    // a pong before any answer to the SUNSUBSCRIBE is a fault
    d.sunsubscribe_sent("c");
    EXPECT_FALSE(take(pong_plain));
}

TEST_F(ShardedDispatch, RepeatedSubscribeCounting) {
    handshake();
    // joined, left and joined again before any answer
    d.ssubscribe_sent("a");
    d.sunsubscribe_sent("a");
    d.ssubscribe_sent("a");
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 1)));
    EXPECT_EQ(drain(), events{});  // not the last one
    EXPECT_TRUE(take(confirm("sunsubscribe", "a", 0)));
    EXPECT_TRUE(take(pong_plain));
    EXPECT_EQ(drain(), events{});
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 1)));
    EXPECT_EQ(drain(), events{"ssubscribed a"});

    // subscribed then left: the SSUBSCRIBE's answer says nothing
    d.ssubscribe_sent("b");
    d.sunsubscribe_sent("b");
    EXPECT_TRUE(take(confirm("ssubscribe", "b", 2)));
    EXPECT_TRUE(take(confirm("sunsubscribe", "b", 1)));
    EXPECT_TRUE(take(pong_subscribed));
    EXPECT_EQ(drain(), events{});

    // only the last SSUBSCRIBE's failure is reported
    d.ssubscribe_sent("c");
    d.ssubscribe_sent("c");
    EXPECT_TRUE(take("-MOVED 1 127.0.0.1:7001\r\n"));
    EXPECT_EQ(drain(), events{});
    EXPECT_TRUE(take("-MOVED 1 127.0.0.1:7001\r\n"));
    EXPECT_EQ(drain(), events{"failed c MOVED 1 127.0.0.1:7001"});

    // an earlier one failed, the last one confirmed
    d.ssubscribe_sent("d");
    d.ssubscribe_sent("d");
    EXPECT_TRUE(take("-TRYAGAIN\r\n"));
    EXPECT_TRUE(take(confirm("ssubscribe", "d", 2)));
    EXPECT_EQ(drain(), events{"ssubscribed d"});
    EXPECT_EQ(d.pending(), 0u);
}

TEST_F(ShardedDispatch, BarriersInOrder) {
    handshake();
    d.ssubscribe_sent("a");
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 1)));
    drain();

    d.barrier_sent("a", barrier_to("1"));
    d.ssubscribe_sent("b");
    d.barrier_sent("a", barrier_to("2"));
    d.barrier_sent("b", barrier_to("3"));
    EXPECT_TRUE(take(push("smessage", "a", "m1")));
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 1)));
    EXPECT_TRUE(take(push("smessage", "a", "m2")));
    EXPECT_TRUE(take(confirm("ssubscribe", "b", 2)));
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 2)));
    EXPECT_TRUE(take("-MOVED 3300 127.0.0.1:7002\r\n"));
    // a barrier's confirmation does not count as the channel's
    // SSUBSCRIBE, nor is it reported as one
    EXPECT_EQ(drain(), (events{"smessage a m1", "barrier 1 ok",
                               "smessage a m2", "ssubscribed b",
                               "barrier 2 ok", "barrier 3 failed"}));
    EXPECT_EQ(d.pending(), 0u);
}

TEST_F(ShardedDispatch, ClearReturnsTheWaitingBarriers) {
    handshake();
    d.barrier_sent("a", barrier_to("1"));
    d.ssubscribe_sent("b");
    d.barrier_sent("b", barrier_to("2"));
    std::vector<sharded_dispatch::barrier_fn> left = d.clear();
    EXPECT_EQ(d.pending(), 0u);
    ASSERT_EQ(left.size(), 2u);
    for (sharded_dispatch::barrier_fn& cb : left) {
        cb(false);
    }
    EXPECT_EQ(drain(), (events{"barrier 1 failed", "barrier 2 failed"}));

    // the channel counts are forgotten too
    d.hello_sent();
    EXPECT_TRUE(take(pong_plain));
    d.ssubscribe_sent("b");
    EXPECT_TRUE(take(confirm("ssubscribe", "b", 1)));
    EXPECT_EQ(drain(), (events{"ready", "ssubscribed b"}));
}

// The sink may send more from a callback (resubscribe on ready, a
// barrier after a confirmation).
TEST_F(ShardedDispatch, SendingFromACallback) {
    struct resubscriber : recorder {
        sharded_dispatch* d = nullptr;
        void on_handshake_done() override {
            recorder::on_handshake_done();
            d->ssubscribe_sent("a");
            d->ssubscribe_sent("b");
        }
    } rs;
    rs.d = &d;
    d.hello_sent();
    rooms_test::reply_ptr p = rooms_test::read_reply(pong_plain);
    EXPECT_TRUE(d.take(*p, rs));
    EXPECT_EQ(d.pending(), 2u);
    rooms_test::reply_ptr c = rooms_test::read_reply(
        confirm("ssubscribe", "a", 1));
    EXPECT_TRUE(d.take(*c, rs));
    EXPECT_EQ(rs.seen, (events{"ready", "ssubscribed a"}));
    EXPECT_EQ(d.pending(), 1u);
}

// Replies of shapes no request gets are faults, and change nothing.
TEST_F(ShardedDispatch, Malformed) {
    handshake();
    d.ssubscribe_sent("a");
    EXPECT_FALSE(take(":1\r\n"));
    EXPECT_FALSE(take("$-1\r\n"));
    EXPECT_FALSE(take("*0\r\n"));
    EXPECT_FALSE(take("+QUEUED\r\n"));
    EXPECT_FALSE(take("*3\r\n:1\r\n$1\r\na\r\n:1\r\n"));
    EXPECT_FALSE(take(pong_subscribed));  // no PING pending
    EXPECT_EQ(d.pending(), 1u);
    EXPECT_TRUE(take(confirm("ssubscribe", "a", 1)));
    EXPECT_EQ(drain(), events{"ssubscribed a"});
}
