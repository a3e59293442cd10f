#include "cluster_map.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <charconv>

namespace rooms {

namespace {

// One CRC16-XMODEM step per byte value, computed at compile time.
constexpr std::array<uint16_t, 256> crc16_table() {
    std::array<uint16_t, 256> t{};
    for (unsigned b = 0; b < 256; b++) {
        uint16_t crc = static_cast<uint16_t>(b << 8);
        for (int i = 0; i < 8; i++) {
            crc = static_cast<uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021
                                                       : crc << 1);
        }
        t[b] = crc;
    }
    return t;
}

constexpr std::array<uint16_t, 256> crc16_steps = crc16_table();

std::string_view str(const redisReply& r) {
    return std::string_view(r.str, r.len);
}

// "6381" -> 6381; nullopt unless all digits and in 1..65535.
std::optional<int> parse_port(std::string_view s) {
    int port = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), port);
    if (ec != std::errc() || end != s.data() + s.size() || port < 1 ||
        port > 65535) {
        return std::nullopt;
    }
    return port;
}

std::optional<uint16_t> parse_slot(std::string_view s) {
    unsigned slot = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), slot);
    if (ec != std::errc() || end != s.data() + s.size() ||
        slot >= cluster_slot_count) {
        return std::nullopt;
    }
    return static_cast<uint16_t>(slot);
}

bool is_slot(const redisReply& r) {
    return r.type == REDIS_REPLY_INTEGER && r.integer >= 0 &&
           r.integer < cluster_slot_count;
}

// [host, port, id?, metadata?] -> node; nullopt if malformed.  The host
// "?" gives a node with an empty host: known, but not reachable.
std::optional<cluster_node> parse_node(const redisReply& r,
                                       std::string_view from_host) {
    if (r.type != REDIS_REPLY_ARRAY || r.elements < 2) {
        return std::nullopt;
    }
    const redisReply& host = *r.element[0];
    const redisReply& port = *r.element[1];
    if ((host.type != REDIS_REPLY_STRING && host.type != REDIS_REPLY_NIL) ||
        port.type != REDIS_REPLY_INTEGER || port.integer < 1 ||
        port.integer > 65535) {
        return std::nullopt;
    }
    cluster_node n;
    n.port = static_cast<int>(port.integer);
    if (host.type == REDIS_REPLY_NIL || host.len == 0) {
        n.host = from_host;
    } else if (str(host) != "?") {
        n.host = str(host);
    }
    if (r.elements >= 3) {
        if (r.element[2]->type != REDIS_REPLY_STRING) {
            return std::nullopt;
        }
        n.id = str(*r.element[2]);
    }
    return n;
}

bool starts_with_word(std::string_view s, std::string_view word) {
    return s.size() >= word.size() && s.substr(0, word.size()) == word &&
           (s.size() == word.size() || s[word.size()] == ' ');
}

}  // namespace

uint16_t crc16_xmodem(std::string_view data) {
    uint16_t crc = 0;
    for (unsigned char c : data) {
        crc = static_cast<uint16_t>((crc << 8) ^
                                    crc16_steps[((crc >> 8) ^ c) & 0xff]);
    }
    return crc;
}

std::string_view key_hash_part(std::string_view key) {
    size_t open = key.find('{');
    if (open == std::string_view::npos) {
        return key;
    }
    size_t close = key.find('}', open + 1);
    if (close == std::string_view::npos || close == open + 1) {
        return key;
    }
    return key.substr(open + 1, close - open - 1);
}

uint16_t key_slot(std::string_view key) {
    return crc16_xmodem(key_hash_part(key)) % cluster_slot_count;
}

cluster_map::cluster_map() : owner_(cluster_slot_count, -1) {}

std::optional<cluster_map> cluster_map::from_slots_reply(
    const redisReply& r, std::string_view from_host) {
    if (r.type != REDIS_REPLY_ARRAY) {
        return std::nullopt;
    }
    cluster_map m;
    for (size_t i = 0; i < r.elements; i++) {
        const redisReply& range = *r.element[i];
        if (range.type != REDIS_REPLY_ARRAY || range.elements < 3 ||
            !is_slot(*range.element[0]) || !is_slot(*range.element[1]) ||
            range.element[0]->integer > range.element[1]->integer) {
            return std::nullopt;
        }
        std::optional<cluster_node> master =
            parse_node(*range.element[2], from_host);
        if (!master) {
            return std::nullopt;
        }
        for (size_t j = 3; j < range.elements; j++) {
            if (!parse_node(*range.element[j], from_host)) {
                return std::nullopt;  // replicas are not used, but checked
            }
        }
        if (master->host.empty()) {
            continue;  // "?": no endpoint to reach it by
        }
        int index = m.node_index(*master);
        if (index < 0) {
            return std::nullopt;
        }
        auto first = static_cast<size_t>(range.element[0]->integer);
        auto last = static_cast<size_t>(range.element[1]->integer);
        for (size_t s = first; s <= last; s++) {
            if (m.owner_[s] < 0) {
                m.unserved_--;
            }
            m.owner_[s] = static_cast<int16_t>(index);
        }
    }
    return m;
}

int cluster_map::node_index(const cluster_node& node) {
    auto it = std::find_if(nodes_.begin(), nodes_.end(),
                           [&node](const cluster_node& n) {
                               return n.same_address(node);
                           });
    if (it != nodes_.end()) {
        if (!node.id.empty()) {
            it->id = node.id;  // a redirection names no id; a map does
        }
        return static_cast<int>(it - nodes_.begin());
    }
    if (nodes_.size() >= cluster_slot_count) {
        return -1;  // more nodes than slots: not a real map
    }
    nodes_.push_back(node);
    return static_cast<int>(nodes_.size() - 1);
}

const cluster_node* cluster_map::master_of(uint16_t slot) const {
    if (slot >= cluster_slot_count || owner_[slot] < 0) {
        return nullptr;
    }
    return &nodes_[static_cast<size_t>(owner_[slot])];
}

std::vector<const cluster_node*> cluster_map::masters() const {
    std::vector<bool> seen(nodes_.size(), false);
    for (int16_t o : owner_) {
        if (o >= 0) {
            seen[static_cast<size_t>(o)] = true;
        }
    }
    std::vector<const cluster_node*> out;
    for (size_t i = 0; i < nodes_.size(); i++) {
        if (seen[i]) {
            out.push_back(&nodes_[i]);
        }
    }
    return out;
}

void cluster_map::set_master(uint16_t slot, const cluster_node& node) {
    if (slot >= cluster_slot_count || node.host.empty()) {
        return;
    }
    int index = node_index(node);
    if (index < 0) {
        return;
    }
    if (owner_[slot] < 0) {
        unserved_--;
    }
    owner_[slot] = static_cast<int16_t>(index);
}

std::optional<cluster_redirect> parse_redirect(std::string_view error,
                                               std::string_view from_host) {
    cluster_redirect to;
    if (starts_with_word(error, "ASK")) {
        to.ask = true;
        error.remove_prefix(3);
    } else if (starts_with_word(error, "MOVED")) {
        error.remove_prefix(5);
    } else {
        return std::nullopt;
    }
    if (error.empty() || error[0] != ' ') {
        return std::nullopt;
    }
    error.remove_prefix(1);
    size_t space = error.find(' ');
    if (space == std::string_view::npos) {
        return std::nullopt;
    }
    std::optional<uint16_t> slot = parse_slot(error.substr(0, space));
    std::string_view endpoint = error.substr(space + 1);
    size_t colon = endpoint.rfind(':');
    if (!slot || colon == std::string_view::npos) {
        return std::nullopt;
    }
    std::optional<int> port = parse_port(endpoint.substr(colon + 1));
    std::string_view host = endpoint.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    if (!port || host == "?" ||
        host.find_first_of(" []") != std::string_view::npos) {
        return std::nullopt;
    }
    to.slot = *slot;
    to.port = *port;
    to.host = host.empty() ? from_host : host;
    return to;
}

cluster_action cluster_on_error(std::string_view error,
                                std::string_view from_host,
                                const cluster_attempts& done,
                                const cluster_limits& limits) {
    cluster_action a;
    bool moved = starts_with_word(error, "MOVED");
    if (moved || starts_with_word(error, "ASK")) {
        std::optional<cluster_redirect> to = parse_redirect(error, from_host);
        // an unreadable redirection: the map is stale all the same
        a.refresh_map = moved || !to;
        if (!to) {
            return a;
        }
        if (moved || limits.follow_ask) {
            bool follow = !moved || limits.follow_moved;
            if (follow && done.redirects < limits.max_redirects) {
                a.step = cluster_step::redirect;
                a.to = std::move(*to);
            }
            return a;
        }
        // an ASK not followed: wait for the migration to end (MOVED)
    } else if (starts_with_word(error, "CLUSTERDOWN")) {
        // a master failed and no replica took over yet, or the node lost
        // the majority: the map will change
        a.refresh_map = true;
    } else if (!starts_with_word(error, "TRYAGAIN")) {
        // TRYAGAIN: a multi-key command met a slot half migrated, the
        // keys will be on one node shortly; anything else is the
        // command's own answer
        return a;
    }
    if (done.retries >= limits.max_retries) {
        return a;
    }
    a.step = cluster_step::retry;
    a.delay_ms = limits.retry_delay_ms;
    for (int i = 0; i < done.retries && a.delay_ms < limits.retry_delay_max_ms;
         i++) {
        a.delay_ms *= 2;
    }
    a.delay_ms = std::min(a.delay_ms, limits.retry_delay_max_ms);
    return a;
}

bool cluster_refresh::start(uint64_t now) {
    std::optional<uint64_t> wait = wait_ms(now);
    if (!wait || *wait > 0) {
        return false;
    }
    wanted_ = false;
    in_flight_ = true;
    started_ = true;
    last_start_ = now;
    return true;
}

void cluster_refresh::finished(bool ok) {
    in_flight_ = false;
    if (!ok) {
        wanted_ = true;
    }
}

std::optional<uint64_t> cluster_refresh::wait_ms(uint64_t now) const {
    if (!wanted_ || in_flight_) {
        return std::nullopt;
    }
    if (!started_ || now >= last_start_ + min_interval_ms_) {
        return 0;
    }
    return last_start_ + min_interval_ms_ - now;
}

}  // namespace rooms
