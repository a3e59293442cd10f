// Coalescing of `state` publications per room (docs/redis.md).

#include <gtest/gtest.h>

#include "state_throttle.h"

using rooms::state_interval_ms;
using rooms::state_throttle;

TEST(SidecarStateThrottle, Interval) {
    EXPECT_EQ(state_interval_ms(0, 1, 2000), 0u);
    EXPECT_EQ(state_interval_ms(10, 1, 2000), 10u);
    EXPECT_EQ(state_interval_ms(1000, 1, 2000), 1000u);
    EXPECT_EQ(state_interval_ms(5000, 1, 2000), 2000u);
    EXPECT_EQ(state_interval_ms(300, 3, 2000), 900u);
    EXPECT_EQ(state_interval_ms(1000, 3, 2000), 2000u);
    // 0 in either setting: no throttling.
    EXPECT_EQ(state_interval_ms(1000, 0, 2000), 0u);
    EXPECT_EQ(state_interval_ms(1000, 1, 0), 0u);
    // No overflow.
    EXPECT_EQ(state_interval_ms(SIZE_MAX, 3600000, 2000), 2000u);
}

TEST(SidecarStateThrottle, LeadingThenTrailing) {
    state_throttle t;
    EXPECT_TRUE(t.changed("A", 1000, 10));  // first change: at once
    EXPECT_FALSE(t.next_due());
    EXPECT_FALSE(t.changed("A", 1003, 10));  // within 10 ms: scheduled
    EXPECT_TRUE(t.scheduled("A"));
    ASSERT_TRUE(t.next_due());
    EXPECT_EQ(*t.next_due(), 1010u);
    EXPECT_FALSE(t.changed("A", 1005, 10));  // rides on it
    EXPECT_FALSE(t.changed("A", 1009, 50));  // interval grew: same due
    EXPECT_EQ(*t.next_due(), 1010u);
    EXPECT_TRUE(t.take_due(1009).empty());
    auto due = t.take_due(1010);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0], "A");
    EXPECT_FALSE(t.next_due());
    EXPECT_FALSE(t.scheduled("A"));
    // The trailing publication counts: the next change within the
    // interval after it waits again.
    EXPECT_FALSE(t.changed("A", 1015, 10));
    EXPECT_EQ(*t.next_due(), 1020u);
    EXPECT_EQ(t.take_due(1020).size(), 1u);
    // Quiet for an interval: at once again.
    EXPECT_TRUE(t.changed("A", 1030, 10));
}

TEST(SidecarStateThrottle, ZeroIntervalAlwaysAtOnce) {
    state_throttle t;
    for (uint64_t now = 0; now < 5; now++) {
        EXPECT_TRUE(t.changed("A", now, 0));
        EXPECT_TRUE(t.changed("A", now, 0));
    }
    EXPECT_FALSE(t.next_due());
}

TEST(SidecarStateThrottle, AtOnceCancelsScheduled) {
    state_throttle t;
    EXPECT_TRUE(t.changed("A", 0, 100));
    EXPECT_FALSE(t.changed("A", 10, 100));
    EXPECT_EQ(*t.next_due(), 100u);
    // The interval shrank (players left): publishing now covers it.
    EXPECT_TRUE(t.changed("A", 20, 5));
    EXPECT_FALSE(t.next_due());
    EXPECT_TRUE(t.take_due(1000).empty());
}

TEST(SidecarStateThrottle, RoomsIndependentEarliestFirst) {
    state_throttle t;
    EXPECT_TRUE(t.changed("A", 0, 100));
    EXPECT_TRUE(t.changed("B", 0, 10));
    EXPECT_FALSE(t.changed("A", 1, 100));
    EXPECT_FALSE(t.changed("B", 1, 10));
    EXPECT_EQ(*t.next_due(), 10u);
    auto due = t.take_due(10);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0], "B");
    EXPECT_EQ(*t.next_due(), 100u);
    due = t.take_due(500);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0], "A");
}

// A burst: 1000 changes, one per ms, with the interval growing with the
// room (1 ms per player): far fewer publications than changes, and the
// last change is covered by a publication at or after it.
TEST(SidecarStateThrottle, BurstIsBounded) {
    state_throttle t;
    size_t published = 0;
    uint64_t last_pub = 0;
    uint64_t now = 0;
    for (size_t players = 1; players <= 1000; players++, now++) {
        for (const auto& r : t.take_due(now)) {
            (void) r;
            published++;
            last_pub = now;
        }
        if (t.changed("A", now, state_interval_ms(players, 1, 2000))) {
            published++;
            last_pub = now;
        }
    }
    uint64_t last_change = now - 1;
    ASSERT_TRUE(t.next_due());
    now = *t.next_due();
    published += t.take_due(now).size();
    last_pub = now;
    EXPECT_GE(last_pub, last_change);
    EXPECT_LT(published, 40u);
    EXPECT_GT(published, 2u);
}

TEST(SidecarStateThrottle, PlayersAndPrune) {
    state_throttle t;
    EXPECT_EQ(t.players("A"), 0u);
    t.set_players("A", 42);
    EXPECT_EQ(t.players("A"), 42u);
    EXPECT_TRUE(t.changed("A", 0, 42));
    EXPECT_TRUE(t.changed("B", 0, 42));
    EXPECT_FALSE(t.changed("B", 1, 42));
    t.prune(100, 2000);  // too recent
    EXPECT_EQ(t.size(), 2u);
    t.prune(5000, 2000);  // B is scheduled: kept
    EXPECT_EQ(t.size(), 1u);
    EXPECT_EQ(t.players("A"), 0u);
    EXPECT_TRUE(t.scheduled("B"));
}
