// Redis Cluster routing (cluster_map.h): key slots, the slot map read
// from CLUSTER SLOTS reply trees built here by hand, redirections, and
// the retry and refresh rules.  t/49_cluster_harness.t checks key_slot()
// against a real cluster's CLUSTER KEYSLOT.

#include <gtest/gtest.h>

#include <hiredis/hiredis.h>

#include <deque>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "cluster_map.h"
#include "keys.h"

using namespace rooms;

namespace {

// Owns reply trees shaped as hiredis builds them.
class reply_arena {
public:
    redisReply* str(std::string_view s) {
        strings_.emplace_back(s);
        redisReply* r = make(REDIS_REPLY_STRING);
        r->str = strings_.back().data();
        r->len = strings_.back().size();
        return r;
    }
    redisReply* err(std::string_view s) {
        redisReply* r = str(s);
        r->type = REDIS_REPLY_ERROR;
        return r;
    }
    redisReply* nil() { return make(REDIS_REPLY_NIL); }
    redisReply* num(long long v) {
        redisReply* r = make(REDIS_REPLY_INTEGER);
        r->integer = v;
        return r;
    }
    redisReply* arr(std::initializer_list<redisReply*> xs) {
        arrays_.emplace_back(xs);
        redisReply* r = make(REDIS_REPLY_ARRAY);
        r->element = arrays_.back().data();
        r->elements = arrays_.back().size();
        return r;
    }
    // A Redis 7 node entry: [host, port, id, {}] (the metadata map reads
    // as an array in RESP2).
    redisReply* node(std::string_view host, long long port,
                     std::string_view id) {
        return arr({str(host), num(port), str(id), arr({})});
    }

private:
    redisReply* make(int type) {
        replies_.emplace_back();
        redisReply* r = &replies_.back();
        r->type = type;
        return r;
    }

    std::deque<redisReply> replies_;
    std::deque<std::string> strings_;
    std::deque<std::vector<redisReply*>> arrays_;
};

// Three masters with one replica each, as `redis-cli --cluster create`
// splits the slots.
redisReply* three_masters(reply_arena& a) {
    return a.arr({
        a.arr({a.num(0), a.num(5460), a.node("127.0.0.1", 7001, "m1"),
               a.node("127.0.0.1", 7004, "r1")}),
        a.arr({a.num(5461), a.num(10922), a.node("127.0.0.1", 7002, "m2"),
               a.node("127.0.0.1", 7005, "r2")}),
        a.arr({a.num(10923), a.num(16383), a.node("127.0.0.1", 7003, "m3"),
               a.node("127.0.0.1", 7006, "r3")}),
    });
}

}  // namespace

TEST(ClusterSlot, Crc16Xmodem) {
    EXPECT_EQ(crc16_xmodem(""), 0);
    EXPECT_EQ(crc16_xmodem("123456789"), 0x31C3);  // the check value
}

TEST(ClusterSlot, TagsShareSlots) {
    EXPECT_EQ(key_slot("foo"), key_slot("{foo}"));
    EXPECT_EQ(key_slot("{user1000}.following"),
              key_slot("{user1000}.followers"));
}

// CLUSTER KEYSLOT of Redis 7.0; t/49_cluster_harness.t asks a real
// cluster for the same table.
TEST(ClusterSlot, SlotsAsRedisComputesThem) {
    struct {
        const char* key;
        uint16_t slot;
    } table[] = {{"somekey", 11058},         {"foo", 12182},
                 {"room:{ABCD}:pub", 15162}, {"foo{}{bar}", 8363},
                 {"foo{{bar}}zap", 4015},    {"a}b{c}", 7365},
                 {"{a}}", 15495},            {"foo}bar{", 11073},
                 {"", 0},                    {"room:{X}:pub", 7165},
                 {"server:{host-1}:alive", 9686}};
    for (const auto& t : table) {
        EXPECT_EQ(key_slot(t.key), t.slot) << t.key;
    }
}

TEST(ClusterSlot, HashTagRule) {
    // the first `{`, then a non-empty run up to the first `}` after it
    EXPECT_EQ(key_hash_part("room:{ABCD}:pub"), "ABCD");
    EXPECT_EQ(key_hash_part("foo{bar}{zap}"), "bar");
    EXPECT_EQ(key_hash_part("foo{{bar}}zap"), "{bar");
    EXPECT_EQ(key_hash_part("a}b{c}"), "c");
    EXPECT_EQ(key_hash_part("{a}}"), "a");
    // empty tag or no `}` after the first `{`: the whole key
    EXPECT_EQ(key_hash_part("foo{}{bar}"), "foo{}{bar}");
    EXPECT_EQ(key_hash_part("{}"), "{}");
    EXPECT_EQ(key_hash_part("foo{bar"), "foo{bar");
    EXPECT_EQ(key_hash_part("foo}bar{"), "foo}bar{");
    EXPECT_EQ(key_hash_part("plain"), "plain");
    EXPECT_EQ(key_hash_part(""), "");
    EXPECT_EQ(key_slot("foo{}{bar}"), crc16_xmodem("foo{}{bar}") % 16384);
}

TEST(ClusterSlot, RoomAndServerKeysShareTheirTagsSlot) {
    for (std::string_view prefix : {"", "app:", "a{b}:"}) {
        uint16_t s = key_slot(room_channel(prefix, "ABCD"));
        if (prefix == "a{b}:") {
            // a prefix with a tag of its own puts every key in one slot
            EXPECT_EQ(s, key_slot("b"));
            continue;
        }
        EXPECT_EQ(s, key_slot("ABCD"));
        for (std::string_view what :
             {"seq", "history", "trimmed", "presence", "senders", "epoch"}) {
            EXPECT_EQ(key_slot(room_key(prefix, "ABCD", what)), s) << what;
        }
        uint16_t srv = key_slot(server_key(prefix, "host-1", "alive"));
        EXPECT_EQ(srv, key_slot("host-1"));
        EXPECT_EQ(key_slot(server_key(prefix, "host-1", "rooms")), srv);
        EXPECT_EQ(key_slot(server_key(prefix, "host-1", "stall")), srv);
    }
}

TEST(ClusterMap, ThreeMastersWithReplicas) {
    reply_arena a;
    std::optional<cluster_map> m =
        cluster_map::from_slots_reply(*three_masters(a), "127.0.0.1");
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->covers_all());
    EXPECT_EQ(m->unserved_slots(), 0u);

    struct {
        uint16_t slot;
        int port;
        const char* id;
    } cases[] = {{0, 7001, "m1"},     {5460, 7001, "m1"},
                 {5461, 7002, "m2"},  {10922, 7002, "m2"},
                 {10923, 7003, "m3"}, {16383, 7003, "m3"}};
    for (const auto& c : cases) {
        const cluster_node* n = m->master_of(c.slot);
        ASSERT_NE(n, nullptr) << c.slot;
        EXPECT_EQ(n->host, "127.0.0.1");
        EXPECT_EQ(n->port, c.port) << c.slot;
        EXPECT_EQ(n->id, c.id) << c.slot;
    }
    EXPECT_EQ(m->master_of(16384), nullptr);

    // foo: 12182
    ASSERT_NE(m->master_of_key("foo"), nullptr);
    EXPECT_EQ(m->master_of_key("foo")->port, 7003);

    std::vector<const cluster_node*> ms = m->masters();
    ASSERT_EQ(ms.size(), 3u);
    EXPECT_EQ(ms[0]->id, "m1");
    EXPECT_EQ(ms[2]->id, "m3");
}

TEST(ClusterMap, HostForms) {
    reply_arena a;
    // nil (unknown-endpoint) and "" mean the address the reply came
    // from; "?" is a node without a usable endpoint; a metadata map with
    // a hostname is read past; a reply without ids is read too.
    redisReply* r = a.arr({
        a.arr({a.num(0), a.num(99),
               a.arr({a.nil(), a.num(7001), a.str("m1"), a.arr({})})}),
        a.arr({a.num(100), a.num(199), a.node("", 7002, "m2")}),
        a.arr({a.num(200), a.num(299),
               a.arr({a.str("?"), a.num(7003), a.str("m3"),
                      a.arr({a.str("hostname"), a.str("")})})}),
        a.arr({a.num(300), a.num(399),
               a.arr({a.str("redis-4.example"), a.num(7004), a.str("m4"),
                      a.arr({a.str("ip"), a.str("10.0.0.4")})})}),
        a.arr({a.num(400), a.num(499), a.arr({a.str("::1"), a.num(7005)})}),
    });
    std::optional<cluster_map> m = cluster_map::from_slots_reply(*r, "10.1.1.1");
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->covers_all());
    EXPECT_EQ(m->unserved_slots(), 16384u - 400u);
    EXPECT_EQ(m->master_of(0)->host, "10.1.1.1");
    EXPECT_EQ(m->master_of(0)->port, 7001);
    EXPECT_EQ(m->master_of(150)->host, "10.1.1.1");
    EXPECT_EQ(m->master_of(150)->id, "m2");
    EXPECT_EQ(m->master_of(250), nullptr);
    EXPECT_EQ(m->master_of(300)->host, "redis-4.example");
    EXPECT_EQ(m->master_of(499)->host, "::1");
    EXPECT_EQ(m->master_of(499)->id, "");
    EXPECT_EQ(m->master_of(500), nullptr);
    EXPECT_EQ(m->masters().size(), 4u);
}

TEST(ClusterMap, SeveralRangesOneMaster) {
    // after a resharding a master often serves several ranges
    reply_arena a;
    redisReply* r = a.arr({
        a.arr({a.num(0), a.num(10), a.node("127.0.0.1", 7001, "m1")}),
        a.arr({a.num(11), a.num(11), a.node("127.0.0.1", 7002, "m2")}),
        a.arr({a.num(12), a.num(16383), a.node("127.0.0.1", 7001, "m1")}),
    });
    std::optional<cluster_map> m =
        cluster_map::from_slots_reply(*r, "127.0.0.1");
    ASSERT_TRUE(m);
    EXPECT_TRUE(m->covers_all());
    EXPECT_EQ(m->masters().size(), 2u);
    EXPECT_EQ(m->master_of(11)->port, 7002);
    EXPECT_EQ(m->master_of(12)->port, 7001);
}

TEST(ClusterMap, EmptyClusterHasNoMasters) {
    reply_arena a;
    std::optional<cluster_map> m =
        cluster_map::from_slots_reply(*a.arr({}), "127.0.0.1");
    ASSERT_TRUE(m);
    EXPECT_FALSE(m->covers_all());
    EXPECT_EQ(m->unserved_slots(), 16384u);
    EXPECT_TRUE(m->masters().empty());
    EXPECT_EQ(m->master_of(0), nullptr);
}

TEST(ClusterMap, MalformedRepliesAreRefused) {
    reply_arena a;
    auto refused = [](const redisReply* r) {
        return !cluster_map::from_slots_reply(*r, "127.0.0.1");
    };
    auto range = [&a](long long first, long long last, redisReply* node) {
        return a.arr({a.arr({a.num(first), a.num(last), node})});
    };
    EXPECT_TRUE(refused(a.err("ERR This instance has cluster support "
                              "disabled")));
    EXPECT_TRUE(refused(a.str("x")));
    EXPECT_TRUE(refused(a.arr({a.num(1)})));
    EXPECT_TRUE(refused(a.arr({a.arr({a.num(0), a.num(1)})})));
    EXPECT_TRUE(refused(range(5, 4, a.node("h", 1, "i"))));
    EXPECT_TRUE(refused(range(0, 16384, a.node("h", 1, "i"))));
    EXPECT_TRUE(refused(range(-1, 3, a.node("h", 1, "i"))));
    EXPECT_TRUE(refused(range(0, 3, a.node("h", 0, "i"))));
    EXPECT_TRUE(refused(range(0, 3, a.node("h", 65536, "i"))));
    EXPECT_TRUE(refused(range(0, 3, a.arr({a.num(1), a.num(1)}))));
    EXPECT_TRUE(refused(range(0, 3, a.arr({a.str("h")}))));
    EXPECT_TRUE(refused(range(0, 3, a.arr({a.str("h"), a.str("1")}))));
    EXPECT_TRUE(refused(range(0, 3, a.arr({a.str("h"), a.num(1), a.num(2)}))));
    EXPECT_TRUE(refused(range(0, 3, a.str("h:1"))));
    // a malformed replica spoils the reply too
    EXPECT_TRUE(refused(a.arr({a.arr({a.num(0), a.num(3),
                                      a.node("h", 1, "i"), a.num(7)})})));
}

TEST(ClusterMap, MovedUpdatesOneSlot) {
    reply_arena a;
    std::optional<cluster_map> m =
        cluster_map::from_slots_reply(*three_masters(a), "127.0.0.1");
    ASSERT_TRUE(m);
    cluster_node n{"127.0.0.1", 7003, ""};
    m->set_master(42, n);
    EXPECT_EQ(m->master_of(42)->port, 7003);
    EXPECT_EQ(m->master_of(42)->id, "m3");  // the known node, same address
    EXPECT_EQ(m->master_of(41)->port, 7001);
    EXPECT_EQ(m->masters().size(), 3u);

    // a node the map did not know (a new master), and a slot that had
    // none
    std::optional<cluster_map> part = cluster_map::from_slots_reply(
        *a.arr({a.arr({a.num(0), a.num(99), a.node("127.0.0.1", 7001, "m1")})}),
        "127.0.0.1");
    ASSERT_TRUE(part);
    part->set_master(100, {"127.0.0.1", 7009, ""});
    EXPECT_EQ(part->unserved_slots(), 16384u - 101u);
    EXPECT_EQ(part->master_of(100)->port, 7009);
    EXPECT_EQ(part->masters().size(), 2u);
    part->set_master(100, {"", 7010, ""});  // no host: ignored
    EXPECT_EQ(part->master_of(100)->port, 7009);
}

TEST(ClusterRedirect, Forms) {
    std::optional<cluster_redirect> r =
        parse_redirect("MOVED 3999 127.0.0.1:6381", "10.0.0.1");
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->ask);
    EXPECT_EQ(r->slot, 3999);
    EXPECT_EQ(r->host, "127.0.0.1");
    EXPECT_EQ(r->port, 6381);

    r = parse_redirect("ASK 3999 127.0.0.1:6381", "10.0.0.1");
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->ask);
    EXPECT_EQ(r->slot, 3999);

    r = parse_redirect("MOVED 0 [::1]:6381", "10.0.0.1");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->slot, 0);
    EXPECT_EQ(r->host, "::1");
    EXPECT_EQ(r->port, 6381);

    r = parse_redirect("ASK 16383 ::1:6381", "10.0.0.1");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->slot, 16383);
    EXPECT_EQ(r->host, "::1");
    EXPECT_EQ(r->port, 6381);

    r = parse_redirect("MOVED 12 redis-2.example:7000", "10.0.0.1");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->host, "redis-2.example");

    // unknown-endpoint: no host, the address the error came from
    r = parse_redirect("MOVED 12 :7000", "10.0.0.1");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->host, "10.0.0.1");
    EXPECT_EQ(r->port, 7000);
}

TEST(ClusterRedirect, Refused) {
    for (std::string_view e :
         {"ERR unknown command", "MOVED", "MOVED 3999", "MOVED 3999 ",
          "MOVED 3999 127.0.0.1", "MOVED 3999 127.0.0.1:", "MOVEDX 1 h:1",
          "MOVED  3999 h:1", "MOVED 16384 h:1", "MOVED -1 h:1",
          "MOVED 1x h:1", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h:63a",
          "MOVED 1 ?:6381", "ASK 1 h:1 extra", "ask 1 h:1", "TRYAGAIN x"}) {
        EXPECT_FALSE(parse_redirect(e, "10.0.0.1")) << e;
    }
}

TEST(ClusterPolicy, Redirections) {
    cluster_limits lim;
    cluster_action a =
        cluster_on_error("MOVED 3999 127.0.0.1:6381", "h", {}, lim);
    EXPECT_EQ(a.step, cluster_step::redirect);
    EXPECT_TRUE(a.refresh_map);
    EXPECT_FALSE(a.to.ask);
    EXPECT_EQ(a.to.port, 6381);

    a = cluster_on_error("ASK 3999 127.0.0.1:6381", "h", {}, lim);
    EXPECT_EQ(a.step, cluster_step::redirect);
    EXPECT_FALSE(a.refresh_map);  // one key in flight: the map still holds
    EXPECT_TRUE(a.to.ask);

    // hops are bounded (a map that keeps changing, or a redirect loop)
    a = cluster_on_error("MOVED 3999 127.0.0.1:6381", "h",
                         {lim.max_redirects, 0}, lim);
    EXPECT_EQ(a.step, cluster_step::fail);
    EXPECT_TRUE(a.refresh_map);
    a = cluster_on_error("ASK 3999 127.0.0.1:6381", "h",
                         {lim.max_redirects, 0}, lim);
    EXPECT_EQ(a.step, cluster_step::fail);

    // a room's scripts wait for the migration to end rather than run on
    // the importing node
    cluster_limits rooms_lim;
    rooms_lim.follow_ask = false;
    a = cluster_on_error("ASK 3999 127.0.0.1:6381", "h", {}, rooms_lim);
    EXPECT_EQ(a.step, cluster_step::retry);
    EXPECT_FALSE(a.refresh_map);
    EXPECT_EQ(a.delay_ms, rooms_lim.retry_delay_ms);
    a = cluster_on_error("ASK 3999 127.0.0.1:6381", "h",
                         {0, rooms_lim.max_retries}, rooms_lim);
    EXPECT_EQ(a.step, cluster_step::fail);
    a = cluster_on_error("MOVED 3999 127.0.0.1:6381", "h", {}, rooms_lim);
    EXPECT_EQ(a.step, cluster_step::redirect);  // the migration ended

    // sync: a MOVED fails it, the map is refreshed
    cluster_limits sync_lim = rooms_lim;
    sync_lim.follow_moved = false;
    a = cluster_on_error("MOVED 3999 127.0.0.1:6381", "h", {}, sync_lim);
    EXPECT_EQ(a.step, cluster_step::fail);
    EXPECT_TRUE(a.refresh_map);
    a = cluster_on_error("ASK 3999 127.0.0.1:6381", "h", {}, sync_lim);
    EXPECT_EQ(a.step, cluster_step::retry);

    // an unreadable redirection fails the command, and the map is stale
    a = cluster_on_error("MOVED 3999 nowhere", "h", {}, lim);
    EXPECT_EQ(a.step, cluster_step::fail);
    EXPECT_TRUE(a.refresh_map);
    a = cluster_on_error("ASK 3999 nowhere", "h", {}, rooms_lim);
    EXPECT_EQ(a.step, cluster_step::fail);
    EXPECT_TRUE(a.refresh_map);
}

TEST(ClusterPolicy, RetriesBackOffAndEnd) {
    cluster_limits lim;
    std::vector<uint64_t> delays;
    cluster_attempts done;
    for (int i = 0; i < 20; i++) {
        cluster_action a = cluster_on_error(
            "TRYAGAIN Multiple keys request during rehashing of slot", "h",
            done, lim);
        EXPECT_FALSE(a.refresh_map);
        if (a.step != cluster_step::retry) {
            EXPECT_EQ(a.step, cluster_step::fail);
            break;
        }
        delays.push_back(a.delay_ms);
        done.retries++;
    }
    EXPECT_EQ(delays, (std::vector<uint64_t>{20, 40, 80, 160, 320, 640}));

    cluster_action a =
        cluster_on_error("CLUSTERDOWN The cluster is down", "h", {}, lim);
    EXPECT_EQ(a.step, cluster_step::retry);
    EXPECT_TRUE(a.refresh_map);
    EXPECT_EQ(a.delay_ms, 20u);
    a = cluster_on_error("CLUSTERDOWN Hash slot not served", "h",
                         {0, lim.max_retries}, lim);
    EXPECT_EQ(a.step, cluster_step::fail);
    EXPECT_TRUE(a.refresh_map);
}

TEST(ClusterPolicy, OtherErrorsAreTheAnswer) {
    cluster_limits lim;
    for (std::string_view e :
         {"ERR Error running script", "NOSCRIPT No matching script",
          "CROSSSLOT Keys in request don't hash to the same slot",
          "OOM command not allowed", "LOADING Redis is loading",
          "MOVEDX", "TRYAGAINX", ""}) {
        cluster_action a = cluster_on_error(e, "h", {}, lim);
        EXPECT_EQ(a.step, cluster_step::fail) << e;
        EXPECT_FALSE(a.refresh_map) << e;
    }
}

TEST(ClusterRefresh, CoalescedAndRateLimited) {
    cluster_refresh r(100);
    EXPECT_EQ(r.wait_ms(0), std::nullopt);
    EXPECT_FALSE(r.start(0));  // nothing asked for

    r.request();
    r.request();  // a burst of MOVEDs: one refresh
    EXPECT_EQ(r.wait_ms(1000), 0u);
    EXPECT_TRUE(r.start(1000));
    EXPECT_TRUE(r.in_flight());
    EXPECT_FALSE(r.start(1000));

    r.request();  // while one is in flight: after it
    EXPECT_EQ(r.wait_ms(1010), std::nullopt);
    r.finished(true);
    EXPECT_EQ(r.wait_ms(1030), 70u);  // one per 100 ms
    EXPECT_FALSE(r.start(1030));
    EXPECT_TRUE(r.start(1100));
    r.finished(true);
    EXPECT_EQ(r.wait_ms(5000), std::nullopt);  // nothing more asked

    // a failed refresh is wanted again
    r.request();
    EXPECT_TRUE(r.start(5000));
    r.finished(false);
    EXPECT_EQ(r.wait_ms(5050), 50u);
    EXPECT_TRUE(r.start(5100));
}
