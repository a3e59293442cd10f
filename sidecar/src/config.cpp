#include "config.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <climits>
#include <fstream>
#include <utility>
#include <vector>

namespace rooms {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' ||
                          s.front() == '\r' || s.front() == '\n')) {
        s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' ||
                          s.back() == '\r' || s.back() == '\n')) {
        s.remove_suffix(1);
    }
    return s;
}

bool parse_int(std::string_view s, int base, long min, long max, long& out) {
    if (s.empty()) {
        return false;
    }
    long v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
    if (ec != std::errc() || end != s.data() + s.size() || v < min ||
        v > max) {
        return false;
    }
    out = v;
    return true;
}

int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool percent_decode(std::string_view s, std::string& out) {
    out.clear();
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size()) {
            return false;
        }
        int hi = hex_value(s[i + 1]);
        int lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
    }
    return true;
}

std::string normalize_key(std::string_view key) {
    std::string k(key);
    for (char& c : k) {
        if (c == '-') {
            c = '_';
        }
    }
    return k;
}

bool parse_tcp_url(std::string_view rest, redis_address& out,
                   std::string& err) {
    // rest: [[user]:password@]host[:port][/db]
    std::string_view auth;
    size_t at = rest.rfind('@');
    if (at != std::string_view::npos) {
        auth = rest.substr(0, at);
        rest.remove_prefix(at + 1);
    }

    std::string_view hostport = rest;
    std::string_view dbpart;
    size_t slash = rest.find('/');
    if (slash != std::string_view::npos) {
        hostport = rest.substr(0, slash);
        dbpart = rest.substr(slash + 1);
    }

    host_port hp;
    if (!parse_host_port(hostport, 6379, hp, err)) {
        err = "redis URL: " + err;
        return false;
    }
    out.host = std::move(hp.host);
    out.port = hp.port;

    long v = 0;
    if (!dbpart.empty() && !parse_int(dbpart, 10, 0, INT_MAX, v)) {
        err = "redis URL: bad database number";
        return false;
    }
    out.db = static_cast<int>(v);

    if (!auth.empty()) {
        size_t colon = auth.find(':');
        std::string_view user = auth;
        std::string_view pass;
        if (colon != std::string_view::npos) {
            user = auth.substr(0, colon);
            pass = auth.substr(colon + 1);
        } else {
            // redis://password@host is a common spelling too.
            user = {};
            pass = auth;
        }
        if (!percent_decode(user, out.username) ||
            !percent_decode(pass, out.password)) {
            err = "redis URL: bad %-escape in credentials";
            return false;
        }
    }
    return true;
}

bool parse_unix_url(std::string_view rest, redis_address& out,
                    std::string& err) {
    // rest: /path[?db=N][&password=P]
    std::string_view path = rest;
    std::string_view query;
    size_t q = rest.find('?');
    if (q != std::string_view::npos) {
        path = rest.substr(0, q);
        query = rest.substr(q + 1);
    }
    if (path.empty()) {
        err = "redis URL: no unix socket path";
        return false;
    }
    out.unix_socket = true;
    out.path.assign(path);

    while (!query.empty()) {
        size_t amp = query.find('&');
        std::string_view param = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view()
                                              : query.substr(amp + 1);
        size_t eq = param.find('=');
        if (eq == std::string_view::npos) {
            err = "redis URL: bad query parameter";
            return false;
        }
        std::string_view name = param.substr(0, eq);
        std::string_view value = param.substr(eq + 1);
        long v = 0;
        if (name == "db") {
            if (!parse_int(value, 10, 0, INT_MAX, v)) {
                err = "redis URL: bad database number";
                return false;
            }
            out.db = static_cast<int>(v);
        } else if (name == "password") {
            if (!percent_decode(value, out.password)) {
                err = "redis URL: bad %-escape in password";
                return false;
            }
        } else if (name == "user") {
            if (!percent_decode(value, out.username)) {
                err = "redis URL: bad %-escape in user";
                return false;
            }
        } else {
            err = "redis URL: unknown query parameter";
            return false;
        }
    }
    return true;
}

bool valid_type_name(std::string_view t) {
    if (t.empty() || t.size() > 32) {
        return false;
    }
    for (char c : t) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-')) {
            return false;
        }
    }
    return true;
}

bool valid_server_id(std::string_view id) {
    if (id.empty() || id.size() > 64) {
        return false;
    }
    for (unsigned char c : id) {
        if (c <= ' ' || c >= 0x7f || c == '"' || c == '\\') {
            return false;
        }
    }
    return true;
}

}  // namespace

// <hostname>-<8 hex digits of the listen path's FNV-1a hash>: the same
// after a restart (a restarted sidecar resumes its players under the same
// server), different for two sidecars on one host.
std::string default_server_id(std::string_view listen) {
    char host[256];
    if (gethostname(host, sizeof(host)) != 0) {
        host[0] = '\0';
    }
    host[sizeof(host) - 1] = '\0';
    uint32_t h = 2166136261u;
    for (char c : listen) {
        h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
    }
    char hex[9];
    std::snprintf(hex, sizeof(hex), "%08x", h);
    std::string id = std::string(host[0] ? host : "sidecar") + "-" + hex;
    if (id.size() > 64) {
        id = id.substr(id.size() - 64);
    }
    for (char& c : id) {
        if (c <= ' ' || c > '~') {
            c = '_';
        }
    }
    return id;
}

std::string host_port::describe() const {
    if (host.find(':') != std::string::npos) {
        return "[" + host + "]:" + std::to_string(port);
    }
    return host + ":" + std::to_string(port);
}

bool parse_host_port(std::string_view s, int default_port, host_port& out,
                     std::string& err) {
    std::string_view host = s;
    std::string_view port;
    if (!s.empty() && s.front() == '[') {
        size_t close = s.find(']');
        if (close == std::string_view::npos) {
            err = "unterminated [ in host";
            return false;
        }
        host = s.substr(1, close - 1);
        std::string_view after = s.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') {
                err = "junk after ]";
                return false;
            }
            port = after.substr(1);
        }
    } else {
        size_t colon = s.rfind(':');
        if (colon != std::string_view::npos) {
            host = s.substr(0, colon);
            port = s.substr(colon + 1);
        }
    }
    if (host.empty()) {
        err = "no host";
        return false;
    }
    long v = default_port;
    if ((port.empty() && default_port == 0) ||
        (!port.empty() && !parse_int(port, 10, 1, 65535, v))) {
        err = "bad port";
        return false;
    }
    out.host.assign(host);
    out.port = static_cast<int>(v);
    return true;
}

std::string redis_address::describe() const {
    std::string s =
        unix_socket ? "unix:" + path : host_port{host, port}.describe();
    if (db != 0) {
        s += " db=" + std::to_string(db);
    }
    return s;
}

bool parse_redis_url(std::string_view url, redis_address& out,
                     std::string& err) {
    redis_address a;
    constexpr std::string_view tcp_scheme = "redis://";
    constexpr std::string_view unix_scheme = "unix:";

    bool ok = false;
    if (url.substr(0, tcp_scheme.size()) == tcp_scheme) {
        ok = parse_tcp_url(url.substr(tcp_scheme.size()), a, err);
    } else if (url.substr(0, unix_scheme.size()) == unix_scheme) {
        ok = parse_unix_url(url.substr(unix_scheme.size()), a, err);
    } else {
        err = "redis URL must start with redis:// or unix:";
    }
    if (ok) {
        out = std::move(a);
    }
    return ok;
}

bool apply_setting(config& cfg, std::string_view key, std::string_view value,
                   std::string& err) {
    std::string k = normalize_key(key);
    if (k == "listen") {
        if (value.empty()) {
            err = "listen: empty path";
            return false;
        }
        cfg.listen.assign(value);
    } else if (k == "redis") {
        cfg.redis_url.assign(value);
    } else if (k == "server_id") {
        if (!valid_server_id(value)) {
            err = "server_id: 1-64 printable characters, no spaces or "
                  "quotes";
            return false;
        }
        cfg.server_id.assign(value);
    } else if (k == "key_prefix") {
        cfg.key_prefix.assign(value);
    } else if (k == "log_level") {
        if (!parse_log_level(value, cfg.level)) {
            err = "log_level: one of debug, info, warn, error";
            return false;
        }
    } else if (k == "socket_mode") {
        long v = 0;
        if (!parse_int(value, 8, 0, 0777, v)) {
            err = "socket_mode: an octal mode such as 0660";
            return false;
        }
        cfg.socket_mode = static_cast<unsigned>(v);
    } else if (k == "history_length") {
        long v = 0;
        if (!parse_int(value, 10, 0, 100000, v)) {
            err = "history_length: 0-100000";
            return false;
        }
        cfg.history_length = static_cast<size_t>(v);
    } else if (k == "kept_types") {
        // "chat,vote" or "chat vote"; "none" keeps nothing.
        cfg.kept_types.clear();
        std::string_view rest = value;
        while (!rest.empty()) {
            size_t cut = rest.find_first_of(", \t");
            std::string_view t = rest.substr(0, cut);
            rest = cut == std::string_view::npos ? std::string_view()
                                                 : rest.substr(cut + 1);
            if (t.empty() || t == "none") {
                continue;
            }
            if (!valid_type_name(t)) {
                err = "kept_types: types of 1-32 chars a-z 0-9 _ . -";
                return false;
            }
            cfg.kept_types.emplace_back(t);
        }
    } else if (k == "max_message_bytes") {
        long v = 0;
        if (!parse_int(value, 10, 0, 16L << 20, v)) {
            err = "max_message_bytes: 0 (no limit) to 16777216";
            return false;
        }
        cfg.max_message_bytes = static_cast<size_t>(v);
    } else if (k == "sync_buffer_bytes") {
        long v = 0;
        if (!parse_int(value, 10, 1024, 1L << 30, v)) {
            err = "sync_buffer_bytes: 1024-1073741824";
            return false;
        }
        cfg.sync_buffer_bytes = static_cast<size_t>(v);
    } else if (k == "room_ttl") {
        long v = 0;
        if (!parse_int(value, 10, 0, 31536000, v)) {
            err = "room_ttl: 0 (never) to 31536000 (seconds)";
            return false;
        }
        cfg.room_ttl_ms = static_cast<uint64_t>(v) * 1000;
    } else if (k == "rate_limit" || k == "rate_burst" || k == "rate_kick") {
        long v = 0;
        long most = k == "rate_kick" ? 65535 : 1000000;
        if (!parse_int(value, 10, 0, most, v)) {
            err = k + ": 0-" + std::to_string(most);
            return false;
        }
        if (k == "rate_limit") {
            cfg.rate.rate = static_cast<double>(v);
        } else if (k == "rate_burst") {
            cfg.rate.burst = static_cast<double>(v);
        } else {
            cfg.rate.kick_after = static_cast<unsigned>(v);
        }
    } else if (k == "heartbeat_interval_ms" || k == "heartbeat_ttl_ms" ||
               k == "redis_backoff_min_ms" || k == "redis_backoff_max_ms" ||
               k == "redis_timeout" || k == "redis_timeout_ms") {
        long v = 0;
        if (!parse_int(value, 10, 10, 3600000, v)) {
            err = k + ": 10-3600000 (milliseconds)";
            return false;
        }
        uint64_t ms = static_cast<uint64_t>(v);
        if (k == "heartbeat_interval_ms") {
            cfg.heartbeat_interval_ms = ms;
        } else if (k == "heartbeat_ttl_ms") {
            cfg.heartbeat_ttl_ms = ms;
        } else if (k == "redis_backoff_min_ms") {
            cfg.redis_backoff_min_ms = ms;
        } else if (k == "redis_backoff_max_ms") {
            cfg.redis_backoff_max_ms = ms;
        } else {
            cfg.redis_timeout_ms = ms;
        }
    } else if (k == "resume_grace_ms") {
        long v = 0;
        if (!parse_int(value, 10, 0, 3600000, v)) {
            err = k + ": 0-3600000 (milliseconds)";
            return false;
        }
        cfg.resume_grace_ms = static_cast<uint64_t>(v);
    } else if (k == "redis_max_pending") {
        long v = 0;
        if (!parse_int(value, 10, 1, 10000000, v)) {
            err = "redis_max_pending: 1-10000000";
            return false;
        }
        cfg.redis_max_pending = static_cast<size_t>(v);
    } else if (k == "state_ms_per_player" ||
               k == "state_max_interval_ms") {
        long v = 0;
        if (!parse_int(value, 10, 0, 3600000, v)) {
            err = k + ": 0-3600000 (milliseconds)";
            return false;
        }
        if (k == "state_ms_per_player") {
            cfg.state_ms_per_player = static_cast<uint64_t>(v);
        } else {
            cfg.state_max_interval_ms = static_cast<uint64_t>(v);
        }
    } else if (k == "redis_password") {
        cfg.redis_password.assign(value);
    } else if (k == "redis_sentinels") {
        // "host:port,host:port" or separated by spaces; repeatable.
        std::string_view rest = value;
        while (!rest.empty()) {
            size_t cut = rest.find_first_of(", \t");
            std::string_view a = rest.substr(0, cut);
            rest = cut == std::string_view::npos ? std::string_view()
                                                 : rest.substr(cut + 1);
            if (a.empty()) {
                continue;
            }
            host_port hp;
            if (!parse_host_port(a, 26379, hp, err)) {
                err = "redis_sentinels: " + err + " in \"" +
                      std::string(a) + "\"";
                return false;
            }
            cfg.sentinel.sentinels.push_back(std::move(hp));
        }
    } else if (k == "redis_cluster") {
        if (value == "on" || value == "yes" || value == "1") {
            cfg.redis_cluster = true;
        } else if (value == "off" || value == "no" || value == "0") {
            cfg.redis_cluster = false;
        } else {
            err = "redis_cluster: on or off";
            return false;
        }
    } else if (k == "redis_sentinel_master") {
        if (value.empty() || value.find_first_of(" \t") != value.npos) {
            err = "redis_sentinel_master: a name without spaces";
            return false;
        }
        cfg.sentinel.master_name.assign(value);
    } else if (k == "redis_sentinel_password") {
        cfg.sentinel.password.assign(value);
    } else if (k == "redis_db") {
        long v = 0;
        if (!parse_int(value, 10, 0, INT_MAX, v)) {
            err = "redis_db: a database number";
            return false;
        }
        cfg.redis_db = static_cast<int>(v);
    } else {
        err = "unknown setting \"" + std::string(key) + "\"";
        return false;
    }
    return true;
}

bool load_config_file(const std::string& path, config& cfg,
                      std::string& err) {
    std::ifstream in(path);
    if (!in) {
        err = "cannot open config file " + path;
        return false;
    }
    std::string line;
    unsigned lineno = 0;
    while (std::getline(in, line)) {
        lineno++;
        std::string_view s = line;
        size_t hash = s.find('#');
        if (hash != std::string_view::npos) {
            s = s.substr(0, hash);
        }
        s = trim(s);
        if (s.empty()) {
            continue;
        }
        size_t sp = s.find_first_of(" \t");
        std::string_view key = s.substr(0, sp);
        std::string_view value =
            sp == std::string_view::npos ? std::string_view()
                                         : trim(s.substr(sp + 1));
        std::string e;
        if (!apply_setting(cfg, key, value, e)) {
            err = path + ":" + std::to_string(lineno) + ": " + e;
            return false;
        }
    }
    if (in.bad()) {
        err = "cannot read config file " + path;
        return false;
    }
    return true;
}

bool config::kept(std::string_view type) const {
    for (const std::string& t : kept_types) {
        if (t == type) {
            return true;
        }
    }
    return false;
}

bool finish_config(config& cfg, std::string& err) {
    if (!parse_redis_url(cfg.redis_url, cfg.redis, err)) {
        return false;
    }
    if (!cfg.redis_password.empty()) {
        cfg.redis.password = cfg.redis_password;
    }
    if (cfg.redis_db >= 0) {
        cfg.redis.db = cfg.redis_db;
    }
    if (cfg.redis_cluster) {
        // The address is a seed: the nodes are named by CLUSTER SLOTS, by
        // IP and port, and a cluster has one database.
        if (cfg.redis.unix_socket) {
            err = "redis_cluster: the redis URL must be a node's "
                  "redis://host:port (a seed)";
            return false;
        }
        if (cfg.redis.db != 0) {
            err = "redis_cluster: a cluster has database 0 only";
            return false;
        }
        if (!cfg.sentinel.sentinels.empty()) {
            err = "redis_cluster and redis_sentinels exclude each other: a "
                  "cluster fails over by itself";
            return false;
        }
    }
    if (cfg.heartbeat_ttl_ms <= cfg.heartbeat_interval_ms) {
        err = "heartbeat_ttl_ms must be larger than heartbeat_interval_ms";
        return false;
    }
    if (cfg.redis_backoff_max_ms < cfg.redis_backoff_min_ms) {
        cfg.redis_backoff_max_ms = cfg.redis_backoff_min_ms;
    }
    if (cfg.server_id.empty()) {
        cfg.server_id = default_server_id(cfg.listen);
    }
    if (cfg.key_prefix.find_first_of("{}") != std::string::npos) {
        // A hash tag in the prefix would put every key in its slot
        err = "key_prefix must not contain { or }: the room code and the "
              "server id are the keys' hash tags (docs/redis.md)";
        return false;
    }
    return true;
}

parse_status parse_command_line(int argc, char** argv, config& cfg,
                                std::string& err) {
    std::vector<std::pair<std::string, std::string>> flags;
    std::string config_file;

    for (int i = 1; i < argc; i++) {
        std::string_view arg = argv[i];
        if (arg == "-h" || arg == "--help") {
            return parse_status::help;
        }
        if (arg.substr(0, 2) != "--" || arg.size() == 2) {
            err = "unexpected argument \"" + std::string(arg) + "\"";
            return parse_status::error;
        }
        arg.remove_prefix(2);
        std::string name;
        std::string value;
        size_t eq = arg.find('=');
        if (eq != std::string_view::npos) {
            name.assign(arg.substr(0, eq));
            value.assign(arg.substr(eq + 1));
        } else {
            if (i + 1 >= argc) {
                err = "--" + std::string(arg) + " needs a value";
                return parse_status::error;
            }
            name.assign(arg);
            value.assign(argv[++i]);
        }
        if (name == "config") {
            config_file = value;
        } else {
            flags.emplace_back(std::move(name), std::move(value));
        }
    }

    if (!config_file.empty() && !load_config_file(config_file, cfg, err)) {
        return parse_status::error;
    }
    for (const auto& [name, value] : flags) {
        std::string e;
        if (!apply_setting(cfg, name, value, e)) {
            err = "--" + name + ": " + e;
            return parse_status::error;
        }
    }
    if (!finish_config(cfg, err)) {
        return parse_status::error;
    }
    return parse_status::ok;
}

const char* usage_text() {
    return "usage: rooms-sidecar [--config FILE] [--listen PATH] "
           "[--redis URL]\n"
           "                     [--server-id ID] [--key-prefix P]\n"
           "                     [--log-level debug|info|warn|error] "
           "[--socket-mode OCTAL]\n"
           "\n"
           "  --config FILE       `key value` lines (listen, redis, "
           "server_id, key_prefix,\n"
           "                      log_level, socket_mode); flags override "
           "it\n"
           "  --listen PATH       Unix socket for the nginx workers "
           "(/run/rooms/sidecar.sock)\n"
           "  --redis URL         redis://[:password@]host:port[/db] or "
           "unix:/path[?db=N]\n"
           "                      (redis://127.0.0.1:6379)\n"
           "  --server-id ID      this server's id in player ids "
           "(<hostname>-<pid>)\n"
           "  --key-prefix P      prefix of every Redis key and channel "
           "(empty)\n"
           "  --log-level L       debug, info, warn or error (info)\n"
           "  --socket-mode MODE  permissions of the socket file (0660)\n"
           "\n"
           "Every setting of the config file is a flag too (docs/sidecar.md):\n"
           "  --history-length N (50)  --kept-types LIST (chat)\n"
           "  --max-message-bytes N (16384)  --rate-limit N/s (50, 0: off)\n"
           "  --sync-buffer-bytes N (4194304)\n"
           "  --rate-burst N (100)  --rate-kick N (100)\n"
           "  --heartbeat-interval-ms MS (1000)  --heartbeat-ttl-ms MS (5000)\n"
           "  --state-ms-per-player MS (1)  --state-max-interval-ms MS (2000)\n"
           "  --redis-backoff-min-ms MS (50)  --redis-backoff-max-ms MS "
           "(1000)\n"
           "  --redis-timeout MS (2000)  --redis-max-pending N (100000)\n"
           "  --redis-password P  --redis-db N\n"
           "  --redis-sentinels HOST:PORT[,HOST:PORT...]  "
           "--redis-sentinel-master NAME\n"
           "                      (mymaster)  --redis-sentinel-password P\n"
           "  --redis-cluster on|off (off: the redis URL is a cluster's "
           "seed node)\n";
}

}  // namespace rooms
