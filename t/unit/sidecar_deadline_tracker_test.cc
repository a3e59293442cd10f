// When a Redis connection stops answering (deadline_tracker.h).

#include <gtest/gtest.h>

#include "deadline_tracker.h"

using rooms::deadline_tracker;
using action = rooms::deadline_tracker::action;

TEST(SidecarDeadlineTracker, OldestFirst) {
    deadline_tracker t;
    EXPECT_TRUE(t.empty());
    EXPECT_EQ(t.oldest_age(1000), 0u);
    EXPECT_FALSE(t.pop());  // nothing outstanding: no change

    t.push(100);
    t.push(150);
    t.push(150);
    EXPECT_EQ(t.size(), 3u);
    EXPECT_EQ(t.oldest_sent(), 100u);
    EXPECT_EQ(t.oldest_age(400), 300u);

    // Replies come in order: each answers the oldest.
    EXPECT_TRUE(t.pop());
    EXPECT_EQ(t.oldest_age(400), 250u);
    EXPECT_TRUE(t.pop());
    EXPECT_TRUE(t.pop());
    EXPECT_TRUE(t.empty());
    EXPECT_EQ(t.oldest_sent(), 0u);

    t.push(500);
    EXPECT_EQ(t.oldest_age(499), 0u);  // a clock that went back
    t.clear();
    EXPECT_TRUE(t.empty());
}

TEST(SidecarDeadlineTracker, ProbeWhenIdle) {
    deadline_tracker t;
    EXPECT_EQ(deadline_tracker::probe_period(2000), 500u);
    EXPECT_EQ(deadline_tracker::probe_period(3), 1u);
    deadline_tracker::verdict v = t.check(1000, 2000);
    EXPECT_EQ(v.what, action::probe);
    EXPECT_EQ(v.next_ms, 500u);
}

TEST(SidecarDeadlineTracker, HungAfterTimeout) {
    deadline_tracker t;
    // A probe sent at 1000 and never answered: checks every period, the
    // last one exactly when its time is up.
    t.push(1000);
    uint64_t now = 1000;
    for (int i = 0; i < 3; i++) {
        deadline_tracker::verdict v = t.check(now, 2000);
        ASSERT_EQ(v.what, action::wait) << now;
        EXPECT_EQ(v.next_ms, 500u);
        now += v.next_ms;
    }
    EXPECT_EQ(t.check(now, 2000).what, action::wait);  // at 2500: 500 left
    EXPECT_EQ(t.check(2999, 2000).what, action::wait);
    EXPECT_EQ(t.check(2999, 2000).next_ms, 1u);
    EXPECT_EQ(t.check(3000, 2000).what, action::hung);
    EXPECT_EQ(t.check(9000, 2000).what, action::hung);
}

TEST(SidecarDeadlineTracker, CheckAtTheOldestDeadline) {
    deadline_tracker t;
    t.push(1000);
    t.push(2700);
    // 1000 has 100 ms left at 2900: the next check is then, not a period
    // later.
    deadline_tracker::verdict v = t.check(2900, 2000);
    EXPECT_EQ(v.what, action::wait);
    EXPECT_EQ(v.next_ms, 100u);
    // Answered: now the one sent at 2700 counts.
    t.pop();
    EXPECT_EQ(t.check(3000, 2000).what, action::wait);
    EXPECT_EQ(t.check(4699, 2000).what, action::wait);
    EXPECT_EQ(t.check(4700, 2000).what, action::hung);
    // A busy connection that keeps answering is never hung, however
    // long it has been busy.
    deadline_tracker busy;
    for (uint64_t now = 0; now < 100000; now += 100) {
        busy.push(now);
        ASSERT_NE(busy.check(now + 50, 2000).what, action::hung);
        busy.pop();
    }
}
