// Backfill and gap fill plans from a Redis snapshot (SPEC 2.4).

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backfill.h"
#include "envelope.h"

using rooms::backfill_plan;
using rooms::history_entry;
using rooms::plan_backfill;
using rooms::plan_gap_fill;
using rooms::room_snapshot;

namespace {

// Payloads as the publish script makes them; kept alive by the fixture.
struct room {
    std::vector<std::string> store;
    room_snapshot snap;

    // Kept messages with these ids (oldest first), room seq and trimmed.
    room(std::vector<uint64_t> ids, uint64_t seq, uint64_t trimmed = 0) {
        store.reserve(ids.size());
        for (uint64_t id : ids) {
            store.push_back(rooms::close_envelope(
                R"({"type":"chat","data":{"n":)" + std::to_string(id) + "}",
                id, 1000 + id));
        }
        for (const std::string& s : store) {
            snap.history.push_back(
                history_entry{rooms::envelope_tail_id(s), s});
        }
        snap.seq = seq;
        snap.trimmed = trimmed;
    }
};

std::vector<uint64_t> ids(const backfill_plan& p) {
    std::vector<uint64_t> v;
    for (std::string_view m : p.messages) {
        v.push_back(rooms::envelope_tail_id(m));
    }
    return v;
}

}  // namespace

TEST(SidecarBackfill, LastN) {
    room r({2, 3, 5, 8, 9}, 10);
    auto p = plan_backfill(r.snap, std::nullopt, 3);
    EXPECT_FALSE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{5, 8, 9}));
    EXPECT_EQ(ids(plan_backfill(r.snap, std::nullopt, 50)),
              (std::vector<uint64_t>{2, 3, 5, 8, 9}));
    EXPECT_TRUE(plan_backfill(r.snap, std::nullopt, 0).messages.empty());
}

TEST(SidecarBackfill, EmptyRoom) {
    room r({}, 0);
    auto p = plan_backfill(r.snap, std::nullopt, 50);
    EXPECT_FALSE(p.reset);
    EXPECT_TRUE(p.messages.empty());
    p = plan_backfill(r.snap, 0, 50);
    EXPECT_FALSE(p.reset);
    EXPECT_TRUE(p.messages.empty());
}

TEST(SidecarBackfill, SinceExactTail) {
    room r({2, 3, 5, 8, 9}, 12);
    EXPECT_EQ(ids(plan_backfill(r.snap, 4, 2)),
              (std::vector<uint64_t>{5, 8, 9}))
        << "since gives every kept message after it, not the last N";
    EXPECT_EQ(ids(plan_backfill(r.snap, 5, 50)),
              (std::vector<uint64_t>{8, 9}));
    EXPECT_TRUE(plan_backfill(r.snap, 9, 50).messages.empty());
    EXPECT_TRUE(plan_backfill(r.snap, 12, 50).messages.empty());
    EXPECT_FALSE(plan_backfill(r.snap, 12, 50).reset);
    EXPECT_FALSE(plan_backfill(r.snap, 0, 50).reset);
}

TEST(SidecarBackfill, SinceTrimmedResets) {
    // 1 was trimmed: a client at 0 missed it.
    room r({2, 3, 5}, 6, 1);
    auto p = plan_backfill(r.snap, 0, 2);
    EXPECT_TRUE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{3, 5}));
    // A client at 1 missed nothing that was trimmed.
    p = plan_backfill(r.snap, 1, 2);
    EXPECT_FALSE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{2, 3, 5}));
}

TEST(SidecarBackfill, SinceAboveSeqResets) {
    room r({1, 2}, 2);
    auto p = plan_backfill(r.snap, 7, 50);
    EXPECT_TRUE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{1, 2}));
}

TEST(SidecarBackfill, GapFillMergesHistoryAndBuffer) {
    // Members saw up to 4; 5 and 8 are kept, 6 and 7 were typing that
    // arrived live after the resubscription (buffered), 9 and 10 arrived
    // while the snapshot was in flight (9 is in history too).
    room r({2, 3, 5, 8, 9}, 9);
    std::string t6 = rooms::close_envelope(R"({"type":"typing")", 6, 1);
    std::string t7 = rooms::close_envelope(R"({"type":"typing")", 7, 1);
    std::string c9 = r.store[4];
    std::string c10 = rooms::close_envelope(R"({"type":"chat")", 10, 1);
    std::vector<history_entry> buffered = {
        {6, t6}, {7, t7}, {9, c9}, {10, c10}};
    auto p = plan_gap_fill(r.snap, 4, buffered, 50, false);
    EXPECT_FALSE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{5, 6, 7, 8, 9, 10}));
}

TEST(SidecarBackfill, GapFillNothingMissed) {
    room r({2, 3}, 3);
    auto p = plan_gap_fill(r.snap, 3, {}, 50, false);
    EXPECT_FALSE(p.reset);
    EXPECT_TRUE(p.messages.empty());
}

TEST(SidecarBackfill, GapFillAfterRedisLostItsData) {
    // Members saw up to 40 in the old epoch; Redis restarted empty and
    // the other server published 1..3 (kept) before we resubscribed.
    room r({1, 2, 3}, 4);
    std::string s4 = rooms::close_envelope(R"({"type":"state")", 4, 1);
    std::string c5 = rooms::close_envelope(R"({"type":"chat")", 5, 1);
    std::vector<history_entry> buffered = {{4, s4}, {5, c5}};
    auto p = plan_gap_fill(r.snap, 40, buffered, 50, false);
    EXPECT_TRUE(p.reset) << "seq below what members saw: ids restarted";
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{1, 2, 3, 5}));

    // Same, but the new epoch already went past 40: only the epoch tells.
    room big({41, 42}, 42);
    p = plan_gap_fill(big.snap, 40, {}, 50, true);
    EXPECT_TRUE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{41, 42}));
}

TEST(SidecarBackfill, GapFillTrimmed) {
    room r({20, 21, 22}, 22, 19);
    auto p = plan_gap_fill(r.snap, 10, {}, 2, false);
    EXPECT_TRUE(p.reset);
    EXPECT_EQ(ids(p), (std::vector<uint64_t>{21, 22}));
}

TEST(SidecarBackfill, GapFillUnknownIdsLast) {
    room r({5}, 5);
    std::vector<history_entry> buffered = {{0, "{}"}};
    auto p = plan_gap_fill(r.snap, 4, buffered, 50, false);
    ASSERT_EQ(p.messages.size(), 2u);
    EXPECT_EQ(p.messages[1], "{}");
}

// After a failover: a view goes on only if the new master has its last
// message, the very same one.
TEST(HistoryContinues, TheLastMessageDelivered) {
    room r({5, 6, 7, 9}, 11);
    using rooms::message_hash;
    EXPECT_TRUE(rooms::history_continues(r.snap, 0, 0));  // nothing seen
    EXPECT_TRUE(rooms::history_continues(r.snap, 7, message_hash(r.store[2])));
    EXPECT_TRUE(rooms::history_continues(r.snap, 9, message_hash(r.store[3])));
}

TEST(HistoryContinues, MissingOrDifferentOrUnknown) {
    room r({5, 6, 7, 9}, 11);
    room other({7}, 7);
    // the id was reused for another message (the old one not replicated)
    std::string reused = rooms::close_envelope(
        R"({"type":"chat","data":{"n":"other"}})", 7, 1007);
    using rooms::message_hash;
    EXPECT_FALSE(rooms::history_continues(r.snap, 7, message_hash(reused)));
    // not in history: a type not kept, trimmed, or beyond the new seq
    uint64_t h = message_hash(other.store[0]);
    EXPECT_FALSE(rooms::history_continues(r.snap, 8, h));
    EXPECT_FALSE(rooms::history_continues(r.snap, 4, h));
    EXPECT_FALSE(rooms::history_continues(r.snap, 12, h));
    // the view's last message is not known
    EXPECT_FALSE(rooms::history_continues(r.snap, 7, 0));
    EXPECT_NE(message_hash(""), 0u);
}
