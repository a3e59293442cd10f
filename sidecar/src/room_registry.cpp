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

    member m;
    m.room.assign(room_code);
    m.name.assign(name);
    m.id = std::move(player_id);
    m.flags = flags;
    m.since = since;
    members_.emplace(key, std::move(m));
    links_[key.link].insert(key.conn);

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
        r.pending.push_back(key);  // welcomed once the room is subscribed
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
    if (mit == members_.end() || mit->second.attached) {
        return;
    }
    auto rit = rooms_.find(mit->second.room);
    if (rit == rooms_.end()) {
        return;
    }
    mit->second.attached = true;

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
    res.found = true;
    res.room = std::move(mit->second.room);
    res.player_id = std::move(mit->second.id);
    bool attached = mit->second.attached;
    members_.erase(mit);

    auto lit = links_.find(key.link);
    if (lit != links_.end()) {
        lit->second.erase(key.conn);
        if (lit->second.empty()) {
            links_.erase(lit);
        }
    }

    auto rit = rooms_.find(res.room);
    if (rit == rooms_.end()) {
        return res;
    }
    room& r = rit->second;
    if (attached) {
        detach(r, key);
    } else {
        std::erase(r.pending, key);
    }
    auto ait = std::find(r.all.begin(), r.all.end(), key);
    if (ait != r.all.end()) {
        *ait = r.all.back();
        r.all.pop_back();
    }
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

std::vector<member_key> room_registry::take_pending(
    std::string_view room_code) {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return {};
    }
    return std::exchange(it->second.pending, {});
}

void room_registry::push_pending(std::string_view room_code,
                                 const member_key& key) {
    auto it = rooms_.find(room_code);
    if (it != rooms_.end()) {
        it->second.pending.push_back(key);
    }
}

void room_registry::requeue(std::string_view room_code,
                            const std::vector<member_key>& keys) {
    auto it = rooms_.find(room_code);
    if (it == rooms_.end()) {
        return;
    }
    std::vector<member_key> back;
    for (const member_key& k : keys) {
        auto mit = members_.find(k);
        if (mit != members_.end() && !mit->second.attached &&
            mit->second.room == room_code) {
            back.push_back(k);
        }
    }
    auto& pending = it->second.pending;
    pending.insert(pending.begin(), back.begin(), back.end());
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
    return it == members_.end() ? nullptr : &it->second;
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
    return std::exchange(it->second.pending, {});
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
    return it == members_.end() ? nullptr : &it->second;
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
