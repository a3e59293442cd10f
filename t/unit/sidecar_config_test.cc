// Sidecar settings: Redis URLs, flags and the config file; key names.

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "config.h"
#include "keys.h"

using rooms::config;
using rooms::parse_status;
using rooms::redis_address;

namespace {

parse_status parse(std::vector<std::string> args, config& cfg,
                   std::string& err) {
    std::vector<char*> argv;
    static char prog[] = "rooms-sidecar";
    argv.push_back(prog);
    for (auto& a : args) {
        argv.push_back(a.data());
    }
    return rooms::parse_command_line(static_cast<int>(argv.size()),
                                     argv.data(), cfg, err);
}

}  // namespace

TEST(SidecarConfig, RedisTcpUrls) {
    redis_address a;
    std::string err;
    ASSERT_TRUE(rooms::parse_redis_url("redis://127.0.0.1:6380", a, err));
    EXPECT_FALSE(a.unix_socket);
    EXPECT_EQ(a.host, "127.0.0.1");
    EXPECT_EQ(a.port, 6380);
    EXPECT_EQ(a.db, 0);
    EXPECT_TRUE(a.password.empty());

    ASSERT_TRUE(rooms::parse_redis_url("redis://:s%40cret@redis.local:7000/3",
                                       a, err));
    EXPECT_EQ(a.host, "redis.local");
    EXPECT_EQ(a.port, 7000);
    EXPECT_EQ(a.db, 3);
    EXPECT_EQ(a.password, "s@cret");
    EXPECT_TRUE(a.username.empty());

    ASSERT_TRUE(rooms::parse_redis_url("redis://user:pw@h", a, err));
    EXPECT_EQ(a.username, "user");
    EXPECT_EQ(a.password, "pw");
    EXPECT_EQ(a.port, 6379);

    ASSERT_TRUE(rooms::parse_redis_url("redis://[::1]:6390/1", a, err));
    EXPECT_EQ(a.host, "::1");
    EXPECT_EQ(a.port, 6390);
    EXPECT_EQ(a.db, 1);
    EXPECT_EQ(a.describe(), "[::1]:6390 db=1");
}

TEST(SidecarConfig, RedisUnixUrls) {
    redis_address a;
    std::string err;
    ASSERT_TRUE(rooms::parse_redis_url("unix:/run/redis/redis.sock", a, err));
    EXPECT_TRUE(a.unix_socket);
    EXPECT_EQ(a.path, "/run/redis/redis.sock");
    EXPECT_EQ(a.db, 0);
    ASSERT_TRUE(rooms::parse_redis_url("unix:/tmp/r.sock?db=2&password=x",
                                       a, err));
    EXPECT_EQ(a.path, "/tmp/r.sock");
    EXPECT_EQ(a.db, 2);
    EXPECT_EQ(a.password, "x");
    EXPECT_EQ(a.describe(), "unix:/tmp/r.sock db=2");
}

TEST(SidecarConfig, RedisBadUrls) {
    redis_address a;
    std::string err;
    for (const char* u : {"", "http://x", "redis://", "redis://h:0",
                          "redis://h:70000", "redis://h:x", "redis://h/x",
                          "redis://h/-1", "unix:", "unix:/p?db=x",
                          "unix:/p?foo=1", "redis://[::1", "redis://:%zz@h"}) {
        err.clear();
        EXPECT_FALSE(rooms::parse_redis_url(u, a, err)) << u;
        EXPECT_FALSE(err.empty()) << u;
    }
}

TEST(SidecarConfig, Defaults) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({}, cfg, err), parse_status::ok) << err;
    EXPECT_EQ(cfg.listen, "/run/rooms/sidecar.sock");
    EXPECT_EQ(cfg.redis.host, "127.0.0.1");
    EXPECT_EQ(cfg.redis.port, 6379);
    EXPECT_EQ(cfg.key_prefix, "");
    EXPECT_EQ(cfg.level, rooms::log_level::info);
    EXPECT_EQ(cfg.socket_mode, 0660u);
    // Stable across restarts: no pid in it; one per listen path.
    EXPECT_EQ(cfg.server_id, rooms::default_server_id(cfg.listen));
    EXPECT_EQ(cfg.server_id.find(std::to_string(getpid())),
              std::string::npos);
    EXPECT_NE(rooms::default_server_id("/run/a.sock"),
              rooms::default_server_id("/run/b.sock"));
    EXPECT_EQ(rooms::default_server_id("/run/a.sock"),
              rooms::default_server_id("/run/a.sock"));
}

TEST(SidecarConfig, Flags) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({"--listen", "/tmp/x.sock", "--redis=redis://h:1/2",
                     "--server-id", "web1", "--key-prefix", "t:",
                     "--log-level", "debug", "--socket-mode", "0600"},
                    cfg, err),
              parse_status::ok)
        << err;
    EXPECT_EQ(cfg.listen, "/tmp/x.sock");
    EXPECT_EQ(cfg.redis.host, "h");
    EXPECT_EQ(cfg.redis.port, 1);
    EXPECT_EQ(cfg.redis.db, 2);
    EXPECT_EQ(cfg.server_id, "web1");
    EXPECT_EQ(cfg.key_prefix, "t:");
    EXPECT_EQ(cfg.level, rooms::log_level::debug);
    EXPECT_EQ(cfg.socket_mode, 0600u);
}

TEST(SidecarConfig, BadFlags) {
    std::string err;
    for (std::vector<std::string> args :
         std::vector<std::vector<std::string>>{
             {"--nope", "1"},
             {"--listen"},
             {"stray"},
             {"--log-level", "loud"},
             {"--socket-mode", "999"},
             {"--socket-mode", "rw"},
             {"--server-id", "has space"},
             {"--server-id", ""},
             {"--redis", "nope"},
             {"--key-prefix", "a{b}:"},
             {"--key-prefix", "x}"},
             {"--config", "/nonexistent/rooms.conf"}}) {
        config cfg;
        err.clear();
        EXPECT_EQ(parse(args, cfg, err), parse_status::error) << args[0];
        EXPECT_FALSE(err.empty());
    }
    config cfg;
    EXPECT_EQ(parse({"--help"}, cfg, err), parse_status::help);
}

TEST(SidecarConfig, FileAndFlagsOverride) {
    char path[] = "/tmp/sidecar_config_testXXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    std::string text =
        "# rooms-sidecar\n"
        "listen /tmp/from-file.sock\n"
        "redis   redis://filehost:6390\n"
        "\n"
        "server_id file-id   # trailing comment\n"
        "key-prefix p:\n"
        "log_level warn\n"
        "socket_mode 640\n";
    ASSERT_EQ(write(fd, text.data(), text.size()),
              static_cast<ssize_t>(text.size()));
    close(fd);

    config cfg;
    std::string err;
    // The flag comes before --config and still wins.
    ASSERT_EQ(parse({"--server-id", "flag-id", "--config", path}, cfg, err),
              parse_status::ok)
        << err;
    EXPECT_EQ(cfg.listen, "/tmp/from-file.sock");
    EXPECT_EQ(cfg.redis.host, "filehost");
    EXPECT_EQ(cfg.redis.port, 6390);
    EXPECT_EQ(cfg.server_id, "flag-id");
    EXPECT_EQ(cfg.key_prefix, "p:");
    EXPECT_EQ(cfg.level, rooms::log_level::warn);
    EXPECT_EQ(cfg.socket_mode, 0640u);

    FILE* f = std::fopen(path, "w");
    ASSERT_NE(f, nullptr);
    std::fputs("listen /x\nbogus 1\n", f);
    std::fclose(f);
    config cfg2;
    EXPECT_EQ(parse({"--config", path}, cfg2, err), parse_status::error);
    EXPECT_NE(err.find(":2:"), std::string::npos) << err;
    unlink(path);
}

TEST(SidecarKeys, RoomChannel) {
    EXPECT_EQ(rooms::room_channel("", "ABCD"), "room:{ABCD}:pub");
    EXPECT_EQ(rooms::room_channel("t1:", "A"), "t1:room:{A}:pub");

    std::string_view room;
    ASSERT_TRUE(rooms::room_of_channel("", "room:{ABCD}:pub", room));
    EXPECT_EQ(room, "ABCD");
    ASSERT_TRUE(rooms::room_of_channel("t1:", "t1:room:{X_Y}:pub", room));
    EXPECT_EQ(room, "X_Y");
    EXPECT_FALSE(rooms::room_of_channel("", "room:{}:pub", room));
    EXPECT_FALSE(rooms::room_of_channel("t1:", "room:{A}:pub", room));
    EXPECT_FALSE(rooms::room_of_channel("", "room:{A}:history", room));
    EXPECT_FALSE(rooms::room_of_channel("", "other", room));
}

TEST(SidecarConfig, RoomSettingsDefaults) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({}, cfg, err), parse_status::ok) << err;
    EXPECT_EQ(cfg.history_length, 50u);
    EXPECT_EQ(cfg.kept_types, (std::vector<std::string>{"chat"}));
    EXPECT_TRUE(cfg.kept("chat"));
    EXPECT_FALSE(cfg.kept("typing"));
    EXPECT_EQ(cfg.max_message_bytes, 16384u);
    EXPECT_EQ(cfg.sync_buffer_bytes, 4194304u);
    EXPECT_EQ(cfg.rate.rate, 50);
    EXPECT_EQ(cfg.rate.burst, 100);
    EXPECT_EQ(cfg.heartbeat_interval_ms, 1000u);
    EXPECT_EQ(cfg.heartbeat_ttl_ms, 5000u);
    EXPECT_EQ(cfg.state_ms_per_player, 1u);
    EXPECT_EQ(cfg.state_max_interval_ms, 2000u);
    EXPECT_EQ(cfg.room_ttl_ms, 86400000u);
}

TEST(SidecarConfig, RoomTtl) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({"--room-ttl", "90"}, cfg, err), parse_status::ok)
        << err;
    EXPECT_EQ(cfg.room_ttl_ms, 90000u);
    config never;
    ASSERT_TRUE(rooms::apply_setting(never, "room_ttl", "0", err)) << err;
    EXPECT_EQ(never.room_ttl_ms, 0u);
    for (const char* bad : {"-1", "1.5", "x", "31536001"}) {
        config c;
        EXPECT_EQ(parse({"--room-ttl", bad}, c, err), parse_status::error)
            << bad;
    }
}

TEST(SidecarConfig, RoomKeys) {
    EXPECT_EQ(rooms::room_keys("p:", "AB"),
              (std::vector<std::string>{
                  "p:room:{AB}:seq", "p:room:{AB}:history",
                  "p:room:{AB}:trimmed", "p:room:{AB}:senders",
                  "p:room:{AB}:presence", "p:room:{AB}:epoch",
                  "p:room:{AB}:pv"}));
}

TEST(SidecarConfig, StateSettings) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({"--state-ms-per-player", "3",
                     "--state_max_interval_ms", "0"},
                    cfg, err),
              parse_status::ok)
        << err;
    EXPECT_EQ(cfg.state_ms_per_player, 3u);
    EXPECT_EQ(cfg.state_max_interval_ms, 0u);
    for (const char* bad : {"-1", "x", "3600001"}) {
        config c;
        EXPECT_EQ(parse({"--state-ms-per-player", bad}, c, err),
                  parse_status::error)
            << bad;
    }
}

TEST(SidecarConfig, RoomSettings) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({"--history-length", "5", "--kept-types", "chat,vote",
                     "--rate-limit", "0", "--rate-burst", "7",
                     "--heartbeat-interval-ms", "200",
                     "--heartbeat-ttl-ms", "900", "--redis-password", "pw",
                     "--redis-db", "3", "--redis=redis://:url@h:1/2",
                     "--redis-backoff-min-ms", "1000",
                     "--max-message-bytes", "0",
                     "--sync-buffer-bytes", "1024"},
                    cfg, err),
              parse_status::ok)
        << err;
    EXPECT_EQ(cfg.history_length, 5u);
    EXPECT_EQ(cfg.kept_types, (std::vector<std::string>{"chat", "vote"}));
    EXPECT_EQ(cfg.rate.rate, 0);
    EXPECT_EQ(cfg.rate.burst, 7);
    EXPECT_EQ(cfg.heartbeat_interval_ms, 200u);
    EXPECT_EQ(cfg.heartbeat_ttl_ms, 900u);
    EXPECT_EQ(cfg.redis.password, "pw");
    EXPECT_EQ(cfg.redis.db, 3);
    EXPECT_EQ(cfg.redis_backoff_min_ms, 1000u);
    // The default maximum (1000) is raised to the minimum when below it.
    EXPECT_EQ(cfg.redis_backoff_max_ms, 1000u);
    EXPECT_EQ(cfg.max_message_bytes, 0u);
    EXPECT_EQ(cfg.sync_buffer_bytes, 1024u);

    config none;
    ASSERT_EQ(parse({"--kept-types", "none"}, none, err), parse_status::ok);
    EXPECT_TRUE(none.kept_types.empty());
}

TEST(SidecarConfig, RedisTimeouts) {
    config cfg;
    std::string err;
    ASSERT_EQ(parse({}, cfg, err), parse_status::ok) << err;
    EXPECT_EQ(cfg.redis_timeout_ms, 2000u);
    EXPECT_EQ(cfg.redis_max_pending, 100000u);
    EXPECT_EQ(cfg.redis_backoff_min_ms, 50u);
    EXPECT_EQ(cfg.redis_backoff_max_ms, 1000u);

    config flags;
    ASSERT_EQ(parse({"--redis-timeout", "1000", "--redis-max-pending", "5"},
                    flags, err),
              parse_status::ok)
        << err;
    EXPECT_EQ(flags.redis_timeout_ms, 1000u);
    EXPECT_EQ(flags.redis_max_pending, 5u);

    // File keys, `_` or `-`; `redis_timeout_ms` as the other ms settings.
    for (const char* key :
         {"redis_timeout", "redis-timeout", "redis_timeout_ms"}) {
        config file;
        ASSERT_TRUE(rooms::apply_setting(file, key, "750", err)) << key << err;
        EXPECT_EQ(file.redis_timeout_ms, 750u) << key;
    }

    for (const char* bad : {"0", "9", "-1", "x", "", "3600001"}) {
        config c;
        EXPECT_EQ(parse({"--redis-timeout", bad}, c, err),
                  parse_status::error)
            << bad;
    }
    for (const char* bad : {"0", "-1", "x", "10000001"}) {
        config c;
        EXPECT_EQ(parse({"--redis-max-pending", bad}, c, err),
                  parse_status::error)
            << bad;
    }
}

TEST(SidecarConfig, RedisCluster) {
    std::string err;
    config off;
    ASSERT_EQ(parse({}, off, err), parse_status::ok) << err;
    EXPECT_FALSE(off.redis_cluster);

    config on;
    ASSERT_EQ(parse({"--redis-cluster", "on", "--redis",
                     "redis://10.0.0.7:7001"},
                    on, err),
              parse_status::ok)
        << err;
    EXPECT_TRUE(on.redis_cluster);
    EXPECT_EQ(on.redis.host, "10.0.0.7");
    EXPECT_EQ(on.redis.port, 7001);

    // A seed is host:port; a cluster has one database; it fails over by
    // itself.
    for (std::vector<std::string> args :
         std::vector<std::vector<std::string>>{
             {"--redis-cluster", "maybe"},
             {"--redis-cluster", "on", "--redis", "unix:/run/redis.sock"},
             {"--redis-cluster", "on", "--redis", "redis://127.0.0.1:7000/2"},
             {"--redis-cluster", "on", "--redis-db", "1"},
             {"--redis-cluster", "on", "--redis-sentinels",
              "127.0.0.1:26379"}}) {
        config cfg;
        EXPECT_EQ(parse(args, cfg, err), parse_status::error)
            << args.back();
    }
}

TEST(SidecarConfig, BadRoomSettings) {
    std::string err;
    for (std::vector<std::string> args :
         std::vector<std::vector<std::string>>{
             {"--kept-types", "Chat"},
             {"--history-length", "-1"},
             {"--rate-limit", "x"},
             {"--heartbeat-interval-ms", "5"},
             {"--heartbeat-interval-ms", "1000", "--heartbeat-ttl-ms",
              "1000"},
             {"--redis-db", "x"},
             {"--sync-buffer-bytes", "1023"},
             {"--sync-buffer-bytes", "1073741825"}}) {
        config cfg;
        EXPECT_EQ(parse(args, cfg, err), parse_status::error) << args[0];
    }
}

TEST(SidecarKeys, RoomAndServerKeys) {
    EXPECT_EQ(rooms::room_key("", "AB", "history"), "room:{AB}:history");
    EXPECT_EQ(rooms::room_key("p:", "AB", "seq"), "p:room:{AB}:seq");
    EXPECT_EQ(rooms::server_key("p:", "web-1", "alive"),
              "p:server:{web-1}:alive");
    EXPECT_EQ(rooms::server_keys("", "w"),
              (std::vector<std::string>{
                  "server:{w}:alive", "server:{w}:watch", "server:{w}:suspect",
                  "server:{w}:reaping", "server:{w}:rooms"}));
    EXPECT_EQ(rooms::servers_key(""), "servers");
    EXPECT_EQ(rooms::room_index_key("p:", 7), "p:rooms:{b7}");
    // CRC16-XMODEM("AB") = 0x567B: bucket 11
    EXPECT_EQ(rooms::room_bucket("AB"), 11u);
    EXPECT_EQ(rooms::room_index_keys("p:", "AB"),
              (std::vector<std::string>{"p:rooms:{b11}",
                                        "p:rooms:{b11}:v:AB"}));
}

// Each member's limiter counts refusals in 16 bits: rate_kick stops at
// 65535; the bucket's settings at 1000000.
TEST(SidecarConfig, RateLimits) {
    std::string err;
    config c;
    ASSERT_TRUE(rooms::apply_setting(c, "rate_kick", "65535", err)) << err;
    EXPECT_EQ(c.rate.kick_after, 65535u);
    EXPECT_FALSE(rooms::apply_setting(c, "rate_kick", "65536", err));
    EXPECT_EQ(err, "rate_kick: 0-65535");
    ASSERT_TRUE(rooms::apply_setting(c, "rate_kick", "0", err)) << err;
    EXPECT_EQ(c.rate.kick_after, 0u);
    for (const char* key : {"rate_limit", "rate_burst"}) {
        ASSERT_TRUE(rooms::apply_setting(c, key, "1000000", err)) << key;
        EXPECT_FALSE(rooms::apply_setting(c, key, "1000001", err)) << key;
        EXPECT_EQ(err, std::string(key) + ": 0-1000000");
    }
    EXPECT_EQ(c.rate.rate, 1000000.0);
    EXPECT_EQ(c.rate.burst, 1000000.0);
}
