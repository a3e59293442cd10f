// The presence scripts against a real redis-server (skipped when there is
// none in PATH), called with the keys the sidecar passes (keys.h):
// room counts and their versions, the room index's version rule, and
// the reaping rules of docs/redis.md "Presence" (reap_claim's watch and
// suspicion, the claim held by one reaper, reap_done).

#include <gtest/gtest.h>

#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "keys.h"
#include "redis_replies.h"
#include "redis_scripts.h"
#include "redis_test_server.h"

using namespace rooms;

namespace {

struct reply_deleter {
    void operator()(redisReply* r) const { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

constexpr const char* ttl = "1000";  // heartbeat TTL, ms
constexpr const char* late = "500";

class PresenceScripts : public ::testing::Test {
protected:
    void SetUp() override {
        if (!rooms_test::in_path("redis-server")) {
            GTEST_SKIP() << "redis-server not in PATH";
        }
        ASSERT_TRUE(redis_.start());
        c_ = redisConnect("127.0.0.1", redis_.port());
        ASSERT_TRUE(c_ != nullptr && c_->err == 0);
    }

    void TearDown() override {
        if (c_ != nullptr) {
            redisFree(c_);
        }
    }

    reply_ptr command(const std::vector<std::string>& argv) {
        std::vector<const char*> v;
        std::vector<size_t> len;
        for (const std::string& a : argv) {
            v.push_back(a.data());
            len.push_back(a.size());
        }
        return reply_ptr(static_cast<redisReply*>(redisCommandArgv(
            c_, static_cast<int>(v.size()), v.data(), len.data())));
    }

    reply_ptr eval(const lua_script& s, const std::vector<std::string>& keys,
                   const std::vector<std::string>& args) {
        std::vector<std::string> argv = {"EVAL", s.body,
                                         std::to_string(keys.size())};
        argv.insert(argv.end(), keys.begin(), keys.end());
        argv.insert(argv.end(), args.begin(), args.end());
        return command(argv);
    }

    // the first element of an array reply (a script's state)
    long long first(const reply_ptr& r) {
        EXPECT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                    r->element[0]->type == REDIS_REPLY_INTEGER);
        return r && r->type == REDIS_REPLY_ARRAY && r->elements > 0
                   ? r->element[0]->integer
                   : -99;
    }

    long long redis_ms() {
        reply_ptr t = command({"TIME"});
        std::optional<redis_time> rt = parse_time_reply(*t);
        return rt ? rt->sec * 1000 + rt->usec / 1000 : 0;
    }

    reply_ptr claim(const std::string& victim, const std::string& caller) {
        return eval(script_reap_claim(), server_keys("", victim),
                    {ttl, late, caller});
    }

    rooms_test::redis_server redis_;
    redisContext* c_ = nullptr;
};

TEST_F(PresenceScripts, CountsAndVersions) {
    std::vector<std::string> room = room_keys("", "R1");
    reply_ptr r = eval(script_sync(), room,
                       {room_channel("", "R1"), "R1", "s1", "ep1", "run1",
                        "60000", "rid1", "p1", "\"ann\"", "0", "p2",
                        "\"bob\"", "0"});
    std::optional<sync_reply> s = parse_sync_reply(*r);
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->registered);
    EXPECT_EQ(s->count.count, 2);
    EXPECT_EQ(s->count.version, 1);
    EXPECT_EQ(s->count.epoch, "ep1");

    // present already: no change, no new version
    r = eval(script_sync(), room,
             {room_channel("", "R1"), "R1", "s1", "ep2", "run1", "60000",
              "rid1", "p1", "\"ann\"", "0"});
    s = parse_sync_reply(*r);
    ASSERT_TRUE(s);
    EXPECT_FALSE(s->registered);
    EXPECT_EQ(s->count.version, 1);

    r = eval(script_leave(), room, {"p1", "1", "60000"});
    std::optional<presence_change> c = parse_presence_change(*r);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->removed, 1);
    EXPECT_EQ(c->count.count, 1);
    EXPECT_EQ(c->count.version, 2);
    // the epoch token, as `sync` gives it (the key holds token/replid/fence)
    EXPECT_EQ(c->count.epoch, "ep1");
    r = eval(script_leave(), room, {"p1", "1", "60000"});
    c = parse_presence_change(*r);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->removed, 0);
    EXPECT_EQ(c->count.version, 2);  // nothing changed

    // stale: run1's players stay, the others of s1 go
    eval(script_sync(), room,
         {room_channel("", "R1"), "R1", "s1", "ep3", "run0", "60000", "rid1",
          "p3", "\"cy\"", "0"});
    r = eval(script_reap_room(), room, {"s1", "stale", "run1", "60000"});
    c = parse_presence_change(*r);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->removed, 1);
    EXPECT_EQ(c->kept, 1);
    EXPECT_EQ(c->count.count, 1);
    EXPECT_EQ(c->count.version, 4);
    r = eval(script_reap_room(), room, {"s1", "dead", "", "60000"});
    c = parse_presence_change(*r);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->removed, 1);
    EXPECT_EQ(c->count.count, 0);
    EXPECT_EQ(c->count.version, 5);
    reply_ptr pttl = command({"PTTL", room_key("", "R1", "pv")});
    EXPECT_GT(pttl->integer, 0);  // the version expires with the room
}

TEST_F(PresenceScripts, IndexAppliesNewerVersionsOnly) {
    std::vector<std::string> k = room_index_keys("", "AB");
    auto index = [&](const char* count, const char* pv, const char* epoch) {
        reply_ptr r =
            eval(script_index(), k, {"AB", count, pv, epoch, "60000"});
        return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    };
    auto score = [&] {
        reply_ptr r = command({"ZSCORE", k[0], "AB"});
        return r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len)
                                             : std::string("none");
    };
    EXPECT_EQ(index("2", "5", "e"), 1);
    EXPECT_EQ(score(), "2");
    EXPECT_EQ(index("9", "4", "e"), 0);  // older: a late update
    EXPECT_EQ(score(), "2");
    EXPECT_EQ(index("2", "5", "e"), 1);  // the same again: idempotent
    EXPECT_EQ(index("0", "6", "e"), 1);  // emptied
    EXPECT_EQ(score(), "none");
    EXPECT_EQ(index("1", "5", "e"), 0);  // the tombstone stops it
    EXPECT_EQ(score(), "none");
    EXPECT_EQ(index("3", "1", "f"), 1);  // a new epoch: the keys were lost
    EXPECT_EQ(score(), "3");
    reply_ptr pttl = command({"PTTL", k[1]});
    EXPECT_GT(pttl->integer, 0);
}

TEST_F(PresenceScripts, ClaimWhileWatchedIsImmediate) {
    std::vector<std::string> v = server_keys("", "v");
    command({"SET", v[0], "1", "PX", "60000"});
    command({"SADD", v[4], "R1", "R2"});
    EXPECT_EQ(first(claim("v", "me")), 0);  // alive: watched from now on
    command({"DEL", v[0]});                 // its key expired
    reply_ptr r = claim("v", "me");
    std::optional<std::vector<std::string_view>> rooms = parse_claim_reply(*r);
    ASSERT_TRUE(rooms);
    EXPECT_EQ(rooms->size(), 2u);
    EXPECT_EQ(first(claim("v", "other")), 2);  // one reaper at a time

    // it beats during the reaping: told so, and its keys stay
    r = eval(script_heartbeat(), v, {ttl, late});
    std::optional<heartbeat_reply> h = parse_heartbeat_reply(*r);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->beat, 0);
    EXPECT_TRUE(h->reaping);
    r = eval(script_reap_done(), v, {"me"});
    EXPECT_EQ(r->integer, 0);
    EXPECT_EQ(command({"SCARD", v[4]})->integer, 2);
    EXPECT_EQ(command({"EXISTS", v[3]})->integer, 0);  // released
    h = parse_heartbeat_reply(*eval(script_heartbeat(), v, {ttl, late}));
    ASSERT_TRUE(h);
    EXPECT_EQ(h->beat, 1);
    EXPECT_FALSE(h->reaping);

    // dead for good: its keys go, the claim is released
    command({"DEL", v[0]});
    ASSERT_TRUE(parse_claim_reply(*claim("v", "me")));
    r = eval(script_reap_done(), v, {"me"});
    EXPECT_EQ(r->integer, 1);
    EXPECT_EQ(command({"EXISTS", v[1], v[2], v[3], v[4]})->integer, 0);
}

TEST_F(PresenceScripts, ClaimAfterAGapWaitsOneTtl) {
    std::vector<std::string> w = server_keys("", "w");
    command({"SADD", w[4], "R1"});
    // never watched (or not for longer than `late`): only suspected
    EXPECT_EQ(first(claim("w", "me")), 1);
    EXPECT_EQ(first(claim("w", "me")), 1);  // still within the TTL
    // a TTL later, watched all along: claimed
    std::string old = std::to_string(redis_ms() - 1001);
    command({"SET", w[2], old});
    EXPECT_TRUE(parse_claim_reply(*claim("w", "me")));
    eval(script_reap_done(), w, {"me"});

    // a gap in the watching (a stall) restarts the suspicion, whatever
    // its age
    command({"SADD", w[4], "R1"});
    command({"SET", w[1], std::to_string(redis_ms() - 600)});
    command({"SET", w[2], old});
    EXPECT_EQ(first(claim("w", "me")), 1);
    // and its beat clears it
    eval(script_heartbeat(), w, {ttl, late});
    EXPECT_EQ(command({"EXISTS", w[2]})->integer, 0);
    EXPECT_EQ(first(claim("w", "me")), 0);
}

}  // namespace
