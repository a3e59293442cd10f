#include "room_registry.h"

#include <algorithm>
#include <charconv>

#include "ngx_http_rooms_ipc.h"

namespace rooms {

std::string member::id(uint64_t conn) const {
    if (id_whole_) {
        return *id_head_;
    }
    char tail[24];
    auto end = std::to_chars(tail, tail + sizeof(tail), conn).ptr;
    std::string id;
    id.reserve(id_head_->size() + (end - tail));
    id.append(*id_head_).append(tail, end);
    return id;
}

// The id's head up to its last '.' is interned when the rest is the conn
// number as the worker writes it; any other id is interned whole.
const std::string* room_registry::intern_id(member& m, uint64_t conn,
                                            std::string_view id) {
    char tail[24];
    auto end = std::to_chars(tail, tail + sizeof(tail), conn).ptr;
    std::string_view digits(tail, end - tail);
    size_t dot = id.rfind('.');
    m.id_whole_ = dot == std::string_view::npos ||
                  id.substr(dot + 1) != digits;
    std::string_view head = m.id_whole_ ? id : id.substr(0, dot + 1);
    auto it = id_heads_.find(head);
    if (it == id_heads_.end()) {
        it = id_heads_.emplace(std::string(head), 0).first;
    }
    it->second++;
    return &it->first;
}

void room_registry::release_id(const member& m) {
    auto it = id_heads_.find(*m.id_head_);
    if (it != id_heads_.end() && --it->second == 0) {
        id_heads_.erase(it);
    }
}

room_registry::join_result room_registry::join(const member_key& key,
                                               std::string_view room_code,
                                               std::string_view name,
                                               std::string_view player_id,
                                               unsigned flags,
                                               uint64_t since) {
    if (members_.contains(key)) {
        return join_result::duplicate;
    }

    bool resume = (flags & NGX_ROOMS_IPC_F_RESUME) &&
                  (flags & NGX_ROOMS_IPC_F_SINCE);
    bool created = false;
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        it = rooms_.emplace(std::string(room_code), room()).first;
        it->second.sync.incarnation = next_incarnation_++;
        created = true;
    }
    room& r = it->second;

    entry& added = members_[key];
    added.m.room_ = &it->first;
    added.m.name.assign(name);
    added.m.id_head_ = intern_id(added.m, key.conn, player_id);
    added.m.flags = flags;
    added.m.since = since;
    added.slot = static_cast<uint32_t>(r.all.size());
    r.members++;
    r.all.push_back(key);

    if (resume) {
        attach(key);
        r.sync.resync = true;
        auto from = std::find_if(r.sync.resume_from.begin(),
                                 r.sync.resume_from.end(),
                                 [&](const auto& lf) {
                                     return lf.first == key.link;
                                 });
        if (from == r.sync.resume_from.end()) {
            r.sync.resume_from.emplace_back(key.link, since);
        } else {
            from->second = std::min(from->second, since);
        }
    } else if (!r.subscribed) {
        // welcomed once the room is subscribed
        added.at = r.pending.insert(r.pending.end(), key);
        added.pending = true;
    }

    if (created) {
        return join_result::subscribe;
    }
    if (!r.subscribed) {
        return join_result::wait;
    }
    // subscribed: a joiner is synced now (the caller pushes it with the
    // room's other pending members), a resumed member's gap filled
    return resume ? join_result::resync : join_result::ready;
}

void room_registry::attach(const member_key& key) {
    auto mit = members_.find(key);
    if (mit == members_.end() || mit->second.m.attached) {
        return;
    }
    auto rit = rooms_.find(mit->second.m.room());
    if (rit == rooms_.end()) {
        return;
    }
    mit->second.m.attached = true;

    auto& links = rit->second.links;
    for (auto& l : links) {
        if (l.link == key.link) {
            l.attached++;
            return;
        }
    }
    links.push_back(link_members{key.link, 1});
}

void room_registry::detach(room& r, const member_key& key) {
    auto it = std::find_if(r.links.begin(), r.links.end(),
                           [&](const link_members& l) {
                               return l.link == key.link;
                           });
    if (it == r.links.end()) {
        return;
    }
    if (--it->attached == 0) {
        *it = r.links.back();
        r.links.pop_back();
    }
}

room_registry::leave_result room_registry::leave(const member_key& key) {
    leave_result res;
    auto mit = members_.find(key);
    if (mit == members_.end()) {
        return res;
    }
    entry& e = mit->second;
    res.found = true;
    res.room = e.m.room();
    res.player_id = e.m.id(key.conn);
    release_id(e.m);

    auto rit = rooms_.find(res.room);
    if (rit == rooms_.end()) {
        members_.erase(mit);
        return res;
    }
    room& r = rit->second;
    if (e.m.attached) {
        detach(r, key);
    }
    if (e.pending) {
        r.pending.erase(e.at);
    }
    // The last of the room's list takes its slot.
    if (e.slot < r.all.size() && r.all[e.slot] == key) {
        const member_key& moved = r.all.back();
        if (!(moved == key)) {
            r.all[e.slot] = moved;
            members_.find(moved)->second.slot = e.slot;
        }
        r.all.pop_back();
    }
    members_.erase(mit);
    if (--r.members == 0) {
        rooms_.erase(rit);
        res.room_empty = true;
    }
    return res;
}

std::vector<std::string> room_registry::leave_link(uint64_t link) {
    std::vector<std::string> emptied;
    for (leave_result& r : leave_link_members(link)) {
        if (r.room_empty) {
            emptied.push_back(std::move(r.room));
        }
    }
    return emptied;
}

std::vector<room_registry::leave_result> room_registry::leave_link_members(
    uint64_t link) {
    std::vector<leave_result> out;
    // Not while iterating: leave() erases.  Sorted: leave order is conn
    // order.
    std::vector<uint64_t> conns;
    for (const auto& [key, e] : members_) {
        if (key.link == link) {
            conns.push_back(key.conn);
        }
    }
    std::sort(conns.begin(), conns.end());
    out.reserve(conns.size());
    for (uint64_t conn : conns) {
        leave_result r = leave(member_key{link, conn});
        if (r.found) {
            out.push_back(std::move(r));
        }
    }
    return out;
}

std::vector<member_key> room_registry::take_all_pending(room& r) {
    std::vector<member_key> keys;
    keys.reserve(r.pending.size());
    for (const member_key& k : r.pending) {
        keys.push_back(k);
        members_.find(k)->second.pending = false;
    }
    r.pending.clear();
    return keys;
}

bool room_registry::has_pending(std::string_view room_code) const {
    auto it = rooms_.find(room_code);
    return it != rooms_.end() && !it->second.pending.empty();
}

std::vector<member_key> room_registry::take_pending(
    std::string_view room_code) {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return {};
    }
    return take_all_pending(it->second);
}

void room_registry::push_pending(std::string_view room_code,
                                 const member_key& key) {
    auto it = rooms_.find(room_code);
    auto mit = members_.find(key);
    if (it == rooms_.end() || mit == members_.end() ||
        mit->second.pending || mit->second.m.room() != room_code) {
        return;
    }
    mit->second.at = it->second.pending.insert(it->second.pending.end(),
                                               key);
    mit->second.pending = true;
}

void room_registry::requeue(std::string_view room_code,
                            const std::vector<member_key>& keys) {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return;
    }
    pending_list& pending = it->second.pending;
    auto front = pending.begin();
    for (const member_key& k : keys) {
        auto mit = members_.find(k);
        if (mit == members_.end() || mit->second.m.attached ||
            mit->second.pending || mit->second.m.room() != room_code) {
            continue;
        }
        mit->second.at = pending.insert(front, k);
        mit->second.pending = true;
    }
}

std::vector<member_key> room_registry::members_of(
    std::string_view room_code) const {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return {};
    }
    return it->second.all;
}

member* room_registry::find_mutable(const member_key& key) {
    auto it = members_.find(key);
    return it == members_.end() ? nullptr : &it->second.m;
}

room_sync* room_registry::sync_of(std::string_view room_code) {
    auto it = rooms_.find(room_code);
    return it == rooms_.end() ? nullptr : &it->second.sync;
}

std::vector<member_key> room_registry::subscribed(std::string_view room_code) {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return {};
    }
    it->second.subscribed = true;
    return take_all_pending(it->second);
}

void room_registry::unsubscribe_all() {
    for (auto& [code, r] : rooms_) {
        r.subscribed = false;
        if (!r.links.empty()) {
            r.sync.resync = true;
        }
    }
}

room_sync* room_registry::unsubscribe(std::string_view room_code) {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return nullptr;
    }
    it->second.subscribed = false;
    if (!it->second.links.empty()) {
        it->second.sync.resync = true;
    }
    return &it->second.sync;
}

const member* room_registry::find(const member_key& key) const {
    auto it = members_.find(key);
    return it == members_.end() ? nullptr : &it->second.m;
}

const std::vector<link_members>* room_registry::attached_links(
    std::string_view room_code) const {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end() || it->second.links.empty()) {
        return nullptr;
    }
    return &it->second.links;
}

bool room_registry::is_subscribed(std::string_view room_code) const {
    auto it = rooms_.find(room_code);
    return it != rooms_.end() && it->second.subscribed;
}

std::vector<std::string> room_registry::room_codes() const {
    std::vector<std::string> codes;
    codes.reserve(rooms_.size());
    for (const auto& [code, r] : rooms_) {
        codes.push_back(code);
    }
    return codes;
}

size_t room_registry::members_in(std::string_view room) const {
    auto it = rooms_.find(room);
    return it == rooms_.end() ? 0 : it->second.members;
}

std::vector<room_count> room_registry::counts() const {
    std::vector<room_count> v;
    v.reserve(rooms_.size());
    for (const auto& [code, r] : rooms_) {
        v.push_back(room_count{code, r.members});
    }
    std::sort(v.begin(), v.end(), [](const room_count& a,
                                      const room_count& b) {
        if (a.count != b.count) {
            return a.count > b.count;
        }
        return a.code < b.code;
    });
    return v;
}

}  // namespace rooms
