// Redis replies read into plain values (redis_replies.h), from RESP
// bytes through hiredis's own reader.

#include <gtest/gtest.h>

#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis_replies.h"
#include "redis_reply_reader.h"

using namespace rooms;

namespace {

using rooms_test::reply_ptr;

reply_ptr parse(std::string_view resp) {
    return rooms_test::read_reply(resp);
}

std::string bulk(std::string_view s) {
    return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n";
}

}  // namespace

TEST(RedisReplies, PublishAndSettle) {
    EXPECT_EQ(publish_outcome_of(*parse(":7\r\n")),
              publish_outcome::published);
    EXPECT_EQ(publish_outcome_of(*parse(":0\r\n")),
              publish_outcome::duplicate);
    EXPECT_EQ(publish_outcome_of(*parse("-ERR oom\r\n")),
              publish_outcome::failed);
    EXPECT_EQ(publish_outcome_of(*parse(":-1\r\n")),
              publish_outcome::refused);
    EXPECT_EQ(publish_outcome_of(*parse("$-1\r\n")),
              publish_outcome::refused);

    EXPECT_EQ(settle_outcome_of(*parse(":1\r\n")), true);
    EXPECT_EQ(settle_outcome_of(*parse(":0\r\n")), false);
    EXPECT_EQ(settle_outcome_of(*parse("+OK\r\n")), std::nullopt);
}

TEST(RedisReplies, Sync) {
    std::string resp = "*8\r\n:12\r\n:3\r\n" + bulk("ep.1") + "*3\r\n" +
                       bulk("a") + ":5\r\n" + bulk("b") + ":1\r\n" +
                       ":0\r\n:4\r\n:9\r\n";
    reply_ptr r = parse(resp);
    std::optional<sync_reply> s = parse_sync_reply(*r);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->seq, 12u);
    EXPECT_EQ(s->trimmed, 3u);
    EXPECT_EQ(s->epoch, "ep.1");
    EXPECT_EQ(s->history, (std::vector<std::string_view>{"a", "b"}));
    EXPECT_TRUE(s->registered);
    EXPECT_EQ(s->fence, 0u);
    EXPECT_EQ(s->count.count, 4);
    EXPECT_EQ(s->count.version, 9);
    EXPECT_EQ(s->count.epoch, "ep.1");

    s = parse_sync_reply(*parse("*8\r\n:12\r\n:3\r\n" + bulk("ep.1") +
                                "*0\r\n:0\r\n:9\r\n:1\r\n:2\r\n"));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->fence, 9u);
    EXPECT_EQ(s->trimmed, 3u);

    // negative or non-integer counters read as 0
    s = parse_sync_reply(*parse("*8\r\n:-4\r\n+x\r\n" + bulk("e") +
                                "*0\r\n:0\r\n+f\r\n:0\r\n:0\r\n"));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->seq, 0u);
    EXPECT_EQ(s->trimmed, 0u);
    EXPECT_EQ(s->fence, 0u);
    EXPECT_FALSE(s->registered);

    // the fence and the count are required
    for (std::string bad :
         {"*5\r\n:1\r\n:1\r\n" + bulk("e") + "*0\r\n:0\r\n",
          "*6\r\n:1\r\n:1\r\n" + bulk("e") + "*0\r\n:0\r\n:0\r\n",
          "*8\r\n:1\r\n:1\r\n" + bulk("e") +
              "*0\r\n:0\r\n:0\r\n+1\r\n:1\r\n",
          std::string("*8\r\n:1\r\n:1\r\n:1\r\n*0\r\n:0\r\n:0\r\n:1\r\n:1\r\n"),
          "*8\r\n:1\r\n:1\r\n" + bulk("e") + bulk("h") +
              ":0\r\n:0\r\n:1\r\n:1\r\n",
          std::string("-NOSCRIPT\r\n")}) {
        EXPECT_FALSE(parse_sync_reply(*parse(bad))) << bad;
    }
}

TEST(RedisReplies, PresenceChangeAndHeartbeat) {
    reply_ptr r = parse("*5\r\n:2\r\n:1\r\n:3\r\n:17\r\n" + bulk("ep"));
    std::optional<presence_change> c = parse_presence_change(*r);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->removed, 2);
    EXPECT_EQ(c->kept, 1);
    EXPECT_EQ(c->count.count, 3);
    EXPECT_EQ(c->count.version, 17);
    EXPECT_EQ(c->count.epoch, "ep");
    // an empty epoch (the room's keys expired) is an epoch too
    EXPECT_TRUE(parse_presence_change(
        *parse("*5\r\n:0\r\n:0\r\n:0\r\n:0\r\n$0\r\n\r\n")));
    EXPECT_FALSE(parse_presence_change(*parse(":1\r\n")));
    EXPECT_FALSE(parse_presence_change(
        *parse("*5\r\n:0\r\n:0\r\n:0\r\n:0\r\n:0\r\n")));

    auto h = parse_heartbeat_reply(*parse("*2\r\n:0\r\n:1\r\n"));
    ASSERT_TRUE(h);
    EXPECT_EQ(h->beat, 0);
    EXPECT_TRUE(h->reaping);
    h = parse_heartbeat_reply(*parse("*2\r\n:2\r\n:0\r\n"));
    ASSERT_TRUE(h);
    EXPECT_EQ(h->beat, 2);
    EXPECT_FALSE(h->reaping);
    EXPECT_FALSE(parse_heartbeat_reply(*parse(":1\r\n")));
    EXPECT_FALSE(parse_heartbeat_reply(*parse("*2\r\n:1\r\n+x\r\n")));
}

TEST(RedisReplies, StateClaimRooms) {
    EXPECT_EQ(state_players(*parse("*2\r\n:9\r\n:4\r\n")), 4u);
    EXPECT_EQ(state_players(*parse("*2\r\n:9\r\n:-4\r\n")), 0u);
    EXPECT_EQ(state_players(*parse("*1\r\n:9\r\n")), std::nullopt);

    // (views into a reply: it must outlive them)
    reply_ptr r = parse("*2\r\n:3\r\n*3\r\n" + bulk("A") + ":1\r\n" +
                        bulk("B"));
    auto claimed = parse_claim_reply(*r);
    ASSERT_TRUE(claimed);
    EXPECT_EQ(*claimed, (std::vector<std::string_view>{"A", "B"}));
    r = parse("*2\r\n:3\r\n*0\r\n");
    claimed = parse_claim_reply(*r);
    ASSERT_TRUE(claimed);
    EXPECT_TRUE(claimed->empty());
    for (const char* not_claimed : {"*1\r\n:0\r\n", "*1\r\n:1\r\n",
                                    "*1\r\n:2\r\n", "*2\r\n:2\r\n*0\r\n",
                                    "*2\r\n:3\r\n:1\r\n", "-ERR x\r\n"}) {
        EXPECT_FALSE(parse_claim_reply(*parse(not_claimed))) << not_claimed;
    }
    r = parse("*2\r\n" + bulk("s1") + bulk("s2"));
    auto ids = parse_members(*r);
    ASSERT_TRUE(ids);
    EXPECT_EQ(*ids, (std::vector<std::string_view>{"s1", "s2"}));
    EXPECT_FALSE(parse_members(*parse("$-1\r\n")));

    r = parse("*7\r\n" + bulk("A") + bulk("3") + bulk("B") + bulk("0") +
              bulk("C") + bulk("x") + bulk("D"));
    auto rooms = parse_rooms_index(*r);
    ASSERT_TRUE(rooms);
    ASSERT_EQ(rooms->size(), 1u);
    EXPECT_EQ((*rooms)[0].code, "A");
    EXPECT_EQ((*rooms)[0].count, 3);
    EXPECT_FALSE(parse_rooms_index(*parse("$-1\r\n")));
}

TEST(RedisReplies, TimeAndPushes) {
    auto t = parse_time_reply(
        *parse("*2\r\n" + bulk("1700000000") + bulk("123456")));
    ASSERT_TRUE(t);
    EXPECT_EQ(t->sec, 1700000000);
    EXPECT_EQ(t->usec, 123456);
    EXPECT_FALSE(parse_time_reply(*parse("*2\r\n" + bulk("x") + bulk("1"))));
    EXPECT_FALSE(parse_time_reply(*parse("*2\r\n:1\r\n:2\r\n")));

    reply_ptr r = parse("*3\r\n" + bulk("message") + bulk("ch") + bulk("{}"));
    auto p = parse_pubsub_push(*r);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->kind, "message");
    EXPECT_EQ(p->channel, "ch");
    EXPECT_EQ(p->payload, "{}");

    r = parse("*3\r\n" + bulk("subscribe") + bulk("ch") + ":1\r\n");
    p = parse_pubsub_push(*r);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->kind, "subscribe");
    EXPECT_FALSE(p->payload);

    EXPECT_FALSE(parse_pubsub_push(*parse("*2\r\n" + bulk("message") +
                                          bulk("ch"))));
    EXPECT_FALSE(parse_pubsub_push(*parse("*3\r\n:1\r\n" + bulk("ch") +
                                          bulk("x"))));
}

TEST(RedisReplies, Pong) {
    EXPECT_TRUE(is_pong_reply(*parse("+PONG\r\n")));
    EXPECT_TRUE(is_pong_reply(*parse("*2\r\n$4\r\npong\r\n$0\r\n\r\n")));
    EXPECT_FALSE(is_pong_reply(*parse("+OK\r\n")));
    EXPECT_FALSE(is_pong_reply(*parse("$4\r\nPONG\r\n")));
    EXPECT_FALSE(is_pong_reply(*parse("*2\r\n:1\r\n$0\r\n\r\n")));
    EXPECT_FALSE(is_pong_reply(
        *parse("*3\r\n$4\r\npong\r\n$0\r\n\r\n$0\r\n\r\n")));
    EXPECT_EQ(reply_text(*parse("-MOVED 1 127.0.0.1:7001\r\n")),
              "MOVED 1 127.0.0.1:7001");
}
