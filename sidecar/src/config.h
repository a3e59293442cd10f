#pragma once

// Sidecar settings: command line flags and a `key value` config file.
//
//   rooms-sidecar [--config FILE] [--listen PATH] [--redis URL]
//                 [--server-id ID] [--key-prefix P]
//                 [--log-level debug|info|warn|error] [--socket-mode OCTAL]
//
// The file holds one `key value` pair a line (keys as the flags without
// the dashes, `_` or `-` alike; `#` starts a comment).  Flags override the
// file whatever their order on the command line.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "log.h"
#include "rate_limit.h"

namespace rooms {

struct host_port {
    std::string host;
    int port = 0;

    std::string describe() const;  // host:port, [v6addr]:port
    bool operator==(const host_port&) const = default;
};

// "host[:port]" or "[v6addr][:port]"; default_port when none is given
// (0: a port is required).
bool parse_host_port(std::string_view s, int default_port, host_port& out,
                     std::string& err);

// Redis Sentinel (docs/sidecar.md, docs/redis.md "Sentinel"); no
// sentinels: not used, the redis URL's host is the master.
struct sentinel_settings {
    std::vector<host_port> sentinels;
    std::string master_name = "mymaster";
    std::string password;  // AUTH on the sentinels when not empty
};

struct redis_address {
    bool unix_socket = false;
    std::string host = "127.0.0.1";
    int port = 6379;
    std::string path;       // unix_socket
    std::string username;   // AUTH username password (Redis 6 ACL)
    std::string password;   // AUTH when not empty
    int db = 0;             // SELECT when not 0

    // For logs: the address without credentials.
    std::string describe() const;
};

// redis://[[user]:password@]host[:port][/db]  (host may be [v6addr])
// unix:/path/redis.sock[?db=N][&password=P]
bool parse_redis_url(std::string_view url, redis_address& out,
                     std::string& err);

struct config {
    std::string listen = "/run/rooms/sidecar.sock";
    // Rooms (docs/sidecar.md).
    size_t history_length = 50;          // kept messages per room
    std::vector<std::string> kept_types = {"chat"};
    size_t max_message_bytes = 16384;    // longer: bad_envelope
    // Live messages held per room while a snapshot is in flight (a join,
    // a gap fill), in bytes; past it the room is snapshotted again.
    size_t sync_buffer_bytes = 4u << 20;
    // A room's Redis keys expire this long after its last join, message
    // or state, while no server has members in it (key room_ttl, in
    // seconds; 0: never).
    uint64_t room_ttl_ms = 24 * 3600 * 1000ull;
    rate_limit_config rate;              // per connection
    // Presence: heartbeat period and how long a silent server lives.
    uint64_t heartbeat_interval_ms = 1000;
    uint64_t heartbeat_ttl_ms = 5000;
    // `state` coalescing: a room's interval between two states from this
    // server is its player count x state_ms_per_player, at most
    // state_max_interval_ms (0: every change publishes at once).
    uint64_t state_ms_per_player = 1;
    uint64_t state_max_interval_ms = 2000;
    // A restarted sidecar waits this long for the workers to resume their
    // clients before it removes the players of its previous run that
    // nobody resumed.
    uint64_t resume_grace_ms = 3000;
    // Redis reconnect backoff.
    uint64_t redis_backoff_min_ms = 50;
    uint64_t redis_backoff_max_ms = 1000;
    // A Redis connection whose oldest request waited this long is given
    // up and replaced (key redis_timeout, in ms).
    uint64_t redis_timeout_ms = 2000;
    // Commands outstanding on the command connection, at most; beyond,
    // messages answer unavailable.
    size_t redis_max_pending = 100000;
    // Override the URL's password and database when set.
    std::string redis_password;
    int redis_db = -1;
    std::string redis_url = "redis://127.0.0.1:6379";
    redis_address redis;
    // With sentinels, the master's address comes from them; the URL's
    // credentials and database still apply to it.
    sentinel_settings sentinel;
    // Redis Cluster: the URL is a seed node (docs/redis.md "Redis
    // Cluster"; key redis_cluster on|off).
    bool redis_cluster = false;
    std::string server_id;  // default: default_server_id(listen)
    std::string key_prefix;
    log_level level = log_level::info;
    // Owner and group only: nginx's workers reach the socket through its
    // group (its user must be in the sidecar's group, docs/sidecar.md).
    unsigned socket_mode = 0660;

    bool kept(std::string_view type) const;
};

enum class parse_status { ok, help, error };

// Fills cfg from argv (and the --config file), then derives cfg.redis and
// the default server id.  On error, err says why.
parse_status parse_command_line(int argc, char** argv, config& cfg,
                                std::string& err);

// Sets one setting by its name (file key or flag name without dashes).
bool apply_setting(config& cfg, std::string_view key, std::string_view value,
                   std::string& err);

// Reads a `key value` file into cfg.
bool load_config_file(const std::string& path, config& cfg, std::string& err);

// Checks cfg and derives cfg.redis and the default server id.
bool finish_config(config& cfg, std::string& err);

const char* usage_text();

// The server id when none is set: <hostname>-<hash of the listen path>,
// stable across restarts.
std::string default_server_id(std::string_view listen);

}  // namespace rooms
