// Master discovery's pure parts (sentinel.h): Sentinel and INFO replies,
// the order sentinels are asked in, and the sentinel settings.

#include <gtest/gtest.h>
#include <algorithm>

#include <hiredis/hiredis.h>

#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "redis_reply_reader.h"
#include "sentinel.h"

using namespace rooms;

using rooms_test::read_reply;
using rooms_test::reply_ptr;

TEST(SentinelMasterAddr, HostAndPort) {
    reply_ptr r = read_reply("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n");
    ASSERT_TRUE(r);
    std::optional<host_port> a = parse_master_addr(*r);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->host, "127.0.0.1");
    EXPECT_EQ(a->port, 6380);
    EXPECT_EQ(a->describe(), "127.0.0.1:6380");
}

TEST(SentinelMasterAddr, Ipv6HostKeepsItsColons) {
    reply_ptr r = read_reply("*2\r\n$3\r\n::1\r\n$4\r\n6379\r\n");
    ASSERT_TRUE(r);
    std::optional<host_port> a = parse_master_addr(*r);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->host, "::1");
    EXPECT_EQ(a->describe(), "[::1]:6379");
}

TEST(SentinelMasterAddr, RefusesWhatIsNotAnAddress) {
    for (std::string_view resp : {
             std::string_view("*-1\r\n"),                  // unknown name
             std::string_view("$-1\r\n"),                  // nil (RESP2)
             std::string_view("-ERR unknown command\r\n"),
             std::string_view("-NOAUTH Authentication required.\r\n"),
             std::string_view("*1\r\n$9\r\n127.0.0.1\r\n"),
             std::string_view("*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n"),
             std::string_view("*2\r\n$9\r\n127.0.0.1\r\n$5\r\n65536\r\n"),
             std::string_view("*2\r\n$9\r\n127.0.0.1\r\n$3\r\n6a9\r\n"),
             std::string_view("*2\r\n$0\r\n\r\n$4\r\n6379\r\n"),
             std::string_view("*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n"),
         }) {
        reply_ptr r = read_reply(resp);
        ASSERT_TRUE(r) << resp;
        EXPECT_FALSE(parse_master_addr(*r)) << resp;
    }
}

TEST(ReplicationInfo, RoleAndReplid) {
    struct {
        std::string_view text;
        bool master;
        std::string_view replid;
    } cases[] = {
        {"# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
         "slave0:ip=127.0.0.1,port=6381,state=online,offset=42,lag=0\r\n"
         "master_failover_state:no-failover\r\n"
         "master_replid:8e1f0c8a2f5d3b6e9a0c1d2e3f4a5b6c7d8e9f00\r\n"
         "master_replid2:0000000000000000000000000000000000000000\r\n"
         "master_repl_offset:42\r\n",
         true, "8e1f0c8a2f5d3b6e9a0c1d2e3f4a5b6c7d8e9f00"},
        // a replica (a demoted master back up) is not a master
        {"# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n"
         "master_port:6380\r\nmaster_link_status:up\r\n"
         "master_replid:aaaa\r\n",
         false, "aaaa"},
    };
    for (const auto& c : cases) {
        std::optional<replication_info> i = parse_replication_info(c.text);
        ASSERT_TRUE(i) << c.text;
        EXPECT_EQ(i->master, c.master) << c.text;
        EXPECT_EQ(i->replid, c.replid) << c.text;
    }
}

TEST(ReplicationInfo, WithoutRoleNothing) {
    EXPECT_FALSE(parse_replication_info(""));
    EXPECT_FALSE(
        parse_replication_info("# Replication\r\nmaster_replid:x\r\n"));
    // A line that only starts like one is not the role.
    std::optional<replication_info> i =
        parse_replication_info("role:masterful\nmaster_replid:b");
    ASSERT_TRUE(i);
    EXPECT_FALSE(i->master);
}

TEST(SentinelRotation, ConfiguredOrderFirst) {
    sentinel_rotation r(3);
    EXPECT_EQ(r.order(), (std::vector<size_t>{0, 1, 2}));
}

TEST(SentinelRotation, TheOneThatAnsweredIsAskedFirst) {
    sentinel_rotation r(4);
    r.answered(2);
    EXPECT_EQ(r.order(), (std::vector<size_t>{2, 0, 1, 3}));
    r.answered(3);
    EXPECT_EQ(r.order(), (std::vector<size_t>{3, 0, 1, 2}));
    r.answered(3);
    EXPECT_EQ(r.order(), (std::vector<size_t>{3, 0, 1, 2}));
    r.answered(0);
    EXPECT_EQ(r.order(), (std::vector<size_t>{0, 1, 2, 3}));
}

TEST(SentinelRotation, UnknownIndexIgnored) {
    sentinel_rotation r(2);
    r.answered(5);
    EXPECT_EQ(r.order(), (std::vector<size_t>{0, 1}));
    sentinel_rotation none(0);
    none.answered(0);
    EXPECT_TRUE(none.order().empty());
}

TEST(SentinelSettings, ListsAndNames) {
    config cfg;
    std::string err;
    ASSERT_TRUE(apply_setting(cfg, "redis_sentinels",
                              "127.0.0.1:26379, 10.0.0.2", err))
        << err;
    ASSERT_TRUE(apply_setting(cfg, "redis-sentinels", "[::1]:26380", err))
        << err;
    ASSERT_EQ(cfg.sentinel.sentinels.size(), 3u);
    EXPECT_EQ(cfg.sentinel.sentinels[0], (host_port{"127.0.0.1", 26379}));
    EXPECT_EQ(cfg.sentinel.sentinels[1], (host_port{"10.0.0.2", 26379}));
    EXPECT_EQ(cfg.sentinel.sentinels[2], (host_port{"::1", 26380}));
    EXPECT_EQ(cfg.sentinel.master_name, "mymaster");
    ASSERT_TRUE(apply_setting(cfg, "redis_sentinel_master", "rooms", err));
    EXPECT_EQ(cfg.sentinel.master_name, "rooms");
    ASSERT_TRUE(apply_setting(cfg, "redis_sentinel_password", "s3", err));
    EXPECT_EQ(cfg.sentinel.password, "s3");
}

TEST(SentinelSettings, BadValuesRefused) {
    config cfg;
    std::string err;
    EXPECT_FALSE(apply_setting(cfg, "redis_sentinels", "host:0", err));
    EXPECT_NE(err.find("bad port"), std::string::npos) << err;
    EXPECT_FALSE(apply_setting(cfg, "redis_sentinels", ":26379", err));
    EXPECT_FALSE(apply_setting(cfg, "redis_sentinels", "[::1", err));
    EXPECT_FALSE(apply_setting(cfg, "redis_sentinel_master", "", err));
    EXPECT_FALSE(apply_setting(cfg, "redis_sentinel_master", "a b", err));
}

TEST(HostPort, RequiredPort) {
    host_port hp;
    std::string err;
    EXPECT_FALSE(parse_host_port("example.com", 0, hp, err));
    EXPECT_TRUE(parse_host_port("example.com:1", 0, hp, err));
    EXPECT_EQ(hp, (host_port{"example.com", 1}));
}

TEST(SwitchMaster, NewAddressOfOurMaster) {
    std::optional<host_port> a = parse_switch_master(
        "mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster");
    ASSERT_TRUE(a);
    EXPECT_EQ(*a, (host_port{"127.0.0.1", 6380}));
    a = parse_switch_master("m ::1 6379 ::2 26", "m");
    ASSERT_TRUE(a);
    EXPECT_EQ(*a, (host_port{"::2", 26}));
}

TEST(SwitchMaster, OtherMastersAndJunkIgnored) {
    for (std::string_view p : {
             std::string_view("other 127.0.0.1 6379 127.0.0.1 6380"),
             std::string_view("mymaster 127.0.0.1 6379 127.0.0.1"),
             std::string_view("mymaster 127.0.0.1 6379 127.0.0.1 0"),
             std::string_view("mymaster 127.0.0.1 6379 127.0.0.1 x"),
             std::string_view("mymaster 127.0.0.1 6379 127.0.0.1 6380 x"),
             std::string_view(""),
         }) {
        EXPECT_FALSE(parse_switch_master(p, "mymaster")) << p;
    }
}

TEST(FailoverEvent, TheLeadersStartAbortAndSwitch) {
    using kind = failover_event::kind;
    std::optional<failover_event> e = parse_failover_event(
        "+elected-leader", "master mymaster 127.0.0.1 6379", "mymaster");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->what, kind::started);
    e = parse_failover_event(
        "+failover-state-send-slaveof-noone",
        "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
        "mymaster");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->what, kind::started);
    for (std::string_view c : {"-failover-abort-not-elected",
                               "-failover-abort-no-good-slave",
                               "-failover-abort-slave-timeout"}) {
        e = parse_failover_event(c, "master mymaster 127.0.0.1 6379",
                                 "mymaster");
        ASSERT_TRUE(e) << c;
        EXPECT_EQ(e->what, kind::aborted) << c;
    }
    e = parse_failover_event("+switch-master",
                             "mymaster 127.0.0.1 6379 127.0.0.1 6380",
                             "mymaster");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->what, kind::switched);
    EXPECT_EQ(e->master, (host_port{"127.0.0.1", 6380}));
}

TEST(FailoverEvent, EveryChannelIsSubscribed) {
    const std::vector<std::string_view>& chans = failover_channels();
    for (std::string_view c : {"+elected-leader",
                               "+failover-state-send-slaveof-noone",
                               "-failover-abort-not-elected",
                               "+switch-master"}) {
        EXPECT_NE(std::find(chans.begin(), chans.end(), c), chans.end())
            << c;
    }
}

TEST(FailoverEvent, OtherMastersChannelsAndJunkIgnored) {
    struct bad {
        std::string_view channel;
        std::string_view payload;
    };
    for (const bad& b : {
             bad{"+elected-leader", "master other 127.0.0.1 6379"},
             bad{"+elected-leader", "master mymaster 127.0.0.1 0"},
             bad{"+elected-leader", "master mymaster 127.0.0.1 6379 x"},
             bad{"+elected-leader",
                 "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 "
                 "6379"},
             bad{"+failover-state-send-slaveof-noone",
                 "slave 127.0.0.1:6380 127.0.0.1 6380 @ other 127.0.0.1 "
                 "6379"},
             bad{"+failover-state-send-slaveof-noone",
                 "master mymaster 127.0.0.1 6379"},
             bad{"-failover-abort-not-elected", "master other 127.0.0.1 1"},
             bad{"+sdown", "master mymaster 127.0.0.1 6379"},
             bad{"+switch-master", "other 127.0.0.1 6379 127.0.0.1 6380"},
             bad{"+elected-leader", ""},
         }) {
        EXPECT_FALSE(parse_failover_event(b.channel, b.payload, "mymaster"))
            << b.channel << " " << b.payload;
    }
}

TEST(FailoverHold, FromTheLeadersStartToTheSwitch) {
    using kind = failover_event::kind;
    failover_hold h(3);
    EXPECT_FALSE(h.holding());
    EXPECT_TRUE(h.apply(1, kind::started));
    EXPECT_TRUE(h.holding());
    EXPECT_FALSE(h.apply(1, kind::started));  // its next step
    EXPECT_FALSE(h.apply(0, kind::aborted));  // another's attempt
    EXPECT_TRUE(h.holding());
    EXPECT_TRUE(h.apply(2, kind::switched));  // any sentinel's switch
    EXPECT_FALSE(h.holding());
    EXPECT_FALSE(h.apply(0, kind::switched));
}

TEST(FailoverHold, EndsWhenEveryStarterAbortedOrItExpires) {
    using kind = failover_event::kind;
    failover_hold h(3);
    h.apply(0, kind::started);
    h.apply(2, kind::started);
    EXPECT_FALSE(h.apply(0, kind::aborted));
    EXPECT_TRUE(h.holding());
    EXPECT_TRUE(h.apply(2, kind::aborted));
    EXPECT_FALSE(h.holding());
    h.apply(1, kind::started);
    EXPECT_TRUE(h.started_by(1));
    EXPECT_TRUE(h.expire());
    EXPECT_FALSE(h.holding());
    EXPECT_FALSE(h.started_by(1));
    EXPECT_FALSE(h.expire());
}
