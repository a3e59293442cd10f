#include "backfill.h"

#include <algorithm>
#include <functional>

namespace rooms {

namespace {

void last_n(const room_snapshot& snap, size_t keep, backfill_plan& plan) {
    size_t n = std::min(keep, snap.history.size());
    for (size_t i = snap.history.size() - n; i < snap.history.size(); i++) {
        plan.messages.push_back(snap.history[i].payload);
    }
}

}  // namespace

backfill_plan plan_backfill(const room_snapshot& snap,
                            std::optional<uint64_t> since, size_t keep,
                            bool restarted) {
    backfill_plan plan;
    if (!since) {
        if (restarted) {
            plan.reset = true;
        }
        last_n(snap, keep, plan);
        return plan;
    }
    if (restarted || *since > snap.seq || snap.trimmed > *since) {
        plan.reset = true;
        last_n(snap, keep, plan);
        return plan;
    }
    for (const history_entry& e : snap.history) {
        if (e.id > *since) {
            plan.messages.push_back(e.payload);
        }
    }
    return plan;
}

uint64_t message_hash(std::string_view payload) {
    uint64_t h = std::hash<std::string_view>{}(payload);
    return h != 0 ? h : 1;
}

bool history_continues(const room_snapshot& snap, uint64_t last_id,
                       uint64_t last_hash) {
    if (last_id == 0) {
        return true;
    }
    for (auto it = snap.history.rbegin(); it != snap.history.rend(); ++it) {
        if (it->id == last_id) {
            return last_hash != 0 && message_hash(it->payload) == last_hash;
        }
        if (it->id != 0 && it->id < last_id) {
            break;
        }
    }
    return false;
}

backfill_plan plan_gap_fill(const room_snapshot& snap, uint64_t last_id,
                            const std::vector<history_entry>& buffered,
                            size_t keep, bool restarted) {
    bool reset = restarted || last_id > snap.seq || snap.trimmed > last_id;
    uint64_t floor = reset ? snap.seq : last_id;

    std::vector<history_entry> all;
    all.reserve(snap.history.size() + buffered.size());
    size_t first = 0;
    if (reset) {
        first = snap.history.size() - std::min(keep, snap.history.size());
    }
    for (size_t i = first; i < snap.history.size(); i++) {
        if (reset || snap.history[i].id > last_id) {
            all.push_back(snap.history[i]);
        }
    }
    std::vector<std::string_view> unknown;
    for (const history_entry& e : buffered) {
        if (e.id == 0) {
            unknown.push_back(e.payload);
        } else if (e.id > floor) {
            all.push_back(e);
        }
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const history_entry& a, const history_entry& b) {
                         return a.id < b.id;
                     });

    backfill_plan plan;
    plan.reset = reset;
    uint64_t prev = 0;
    for (const history_entry& e : all) {
        if (e.id != 0 && e.id == prev) {
            continue;
        }
        plan.messages.push_back(e.payload);
        prev = e.id;
    }
    plan.messages.insert(plan.messages.end(), unknown.begin(),
                         unknown.end());
    return plan;
}

}  // namespace rooms
