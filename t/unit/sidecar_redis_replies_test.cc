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
    std::string resp = "*5\r\n:12\r\n:3\r\n" + bulk("ep.1") + "*3\r\n" +
                       bulk("a") + ":5\r\n" + bulk("b") + ":1\r\n";
    reply_ptr r = parse(resp);
    std::optional<sync_reply> s = parse_sync_reply(*r);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->seq, 12u);
    EXPECT_EQ(s->trimmed, 3u);
    EXPECT_EQ(s->epoch, "ep.1");
    EXPECT_EQ(s->history, (std::vector<std::string_view>{"a", "b"}));
    EXPECT_TRUE(s->registered);
    EXPECT_EQ(s->fence, 0u);

    s = parse_sync_reply(*parse("*6\r\n:12\r\n:3\r\n" + bulk("ep.1") +
                                "*0\r\n:0\r\n:9\r\n"));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->fence, 9u);
    EXPECT_EQ(s->trimmed, 3u);
    EXPECT_FALSE(parse_sync_reply(*parse("*7\r\n:12\r\n:3\r\n" +
                                         bulk("ep.1") +
                                         "*0\r\n:0\r\n:9\r\n:1\r\n")));

    // negative or non-integer counters read as 0
    s = parse_sync_reply(
        *parse("*5\r\n:-4\r\n+x\r\n" + bulk("e") + "*0\r\n:0\r\n"));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->seq, 0u);
    EXPECT_EQ(s->trimmed, 0u);
    EXPECT_FALSE(s->registered);

    EXPECT_FALSE(parse_sync_reply(*parse("*4\r\n:1\r\n:1\r\n" + bulk("e") +
                                         "*0\r\n")));
    EXPECT_FALSE(parse_sync_reply(
        *parse("*5\r\n:1\r\n:1\r\n:1\r\n*0\r\n:0\r\n")));
    EXPECT_FALSE(parse_sync_reply(
        *parse("*5\r\n:1\r\n:1\r\n" + bulk("e") + bulk("h") + ":0\r\n")));
    EXPECT_FALSE(parse_sync_reply(*parse("-NOSCRIPT\r\n")));
}

TEST(RedisReplies, StateReapRooms) {
    EXPECT_EQ(state_players(*parse("*2\r\n:9\r\n:4\r\n")), 4u);
    EXPECT_EQ(state_players(*parse("*2\r\n:9\r\n:-4\r\n")), 0u);
    EXPECT_EQ(state_players(*parse("*1\r\n:9\r\n")), std::nullopt);

    // (views into a reply: it must outlive them)
    reply_ptr r = parse("*7\r\n" + bulk("s1") + ":3\r\n*2\r\n" + bulk("A") +
                        ":1\r\n" + ":1\r\n:2\r\n:3\r\n" + bulk("x"));
    auto reaped = parse_reap_reply(*r);
    ASSERT_TRUE(reaped);
    ASSERT_EQ(reaped->size(), 1u);  // the bad triple skipped, the rest too
    EXPECT_EQ((*reaped)[0].id, "s1");
    EXPECT_EQ((*reaped)[0].players, 3);
    EXPECT_EQ((*reaped)[0].rooms, std::vector<std::string_view>{"A"});
    EXPECT_FALSE(parse_reap_reply(*parse(":1\r\n")));

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
