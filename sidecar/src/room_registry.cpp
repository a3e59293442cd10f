#include "room_registry.h"

#include <algorithm>

#include "ngx_http_rooms_ipc.h"

namespace rooms {

room_registry::join_result room_registry::join(const member_key& key,
                                               std::string_view room_code,
                                               std::string_view name,
                                               std::string player_id,
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

    entry e;
    e.m.room.assign(room_code);
    e.m.name.assign(name);
    e.m.id = std::move(player_id);
    e.m.flags = flags;
    e.m.since = since;
    e.slot = r.all.size();
    entry& added = members_.emplace(key, std::move(e)).first->second;
    links_[key.link].insert(key.conn);
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
    auto rit = rooms_.find(mit->second.m.room);
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
    res.room = std::move(e.m.room);
    res.player_id = std::move(e.m.id);

    auto lit = links_.find(key.link);
    if (lit != links_.end()) {
        lit->second.erase(key.conn);
        if (lit->second.empty()) {
            links_.erase(lit);
        }
    }

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
    auto lit = links_.find(link);
    if (lit == links_.end()) {
        return out;
    }
    // Copy: leave() edits links_.  Sorted: leave order is conn order.
    std::vector<uint64_t> conns(lit->second.begin(), lit->second.end());
    std::sort(conns.begin(), conns.end());
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
        mit->second.pending || mit->second.m.room != room_code) {
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
            mit->second.pending || mit->second.m.room != room_code) {
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
