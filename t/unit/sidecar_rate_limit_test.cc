// Per-connection token bucket (SPEC 3).

#include <gtest/gtest.h>

#include "rate_limit.h"

using rooms::rate_limit_config;
using rooms::rate_limiter;
using verdict = rooms::rate_limiter::verdict;

TEST(SidecarRateLimit, BurstThenRate) {
    rate_limit_config cfg;  // 50/s, burst 100
    rate_limiter rl(0);
    for (int i = 0; i < 100; i++) {
        ASSERT_EQ(rl.take(cfg, 0), verdict::ok) << i;
    }
    EXPECT_EQ(rl.take(cfg, 0), verdict::limited);
    // 20 ms = one token at 50/s.
    EXPECT_EQ(rl.take(cfg, 20), verdict::ok);
    EXPECT_EQ(rl.take(cfg, 20), verdict::limited);
    // A long pause refills to the burst, not beyond.
    int ok = 0;
    for (int i = 0; i < 200; i++) {
        ok += rl.take(cfg, 100000) == verdict::ok;
    }
    EXPECT_EQ(ok, 100);
}

TEST(SidecarRateLimit, ZeroIsOff) {
    rate_limit_config cfg;
    cfg.rate = 0;
    rate_limiter rl(0);
    for (int i = 0; i < 10000; i++) {
        ASSERT_EQ(rl.take(cfg, 0), verdict::ok);
    }
}

TEST(SidecarRateLimit, SustainedAbuseKicks) {
    rate_limit_config cfg;
    cfg.rate = 10;
    cfg.burst = 10;
    cfg.kick_after = 5;
    rate_limiter rl(0);
    for (int i = 0; i < 10; i++) {
        ASSERT_EQ(rl.take(cfg, 0), verdict::ok);
    }
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(rl.take(cfg, 1), verdict::limited) << i;
    }
    EXPECT_EQ(rl.take(cfg, 2), verdict::kick);
}

TEST(SidecarRateLimit, PauseForgivesRefusals) {
    rate_limit_config cfg;
    cfg.rate = 1;
    cfg.burst = 1;
    cfg.kick_after = 3;
    rate_limiter rl(0);
    uint64_t t = 0;
    // Over the limit now and then, with pauses: never kicked.
    for (int round = 0; round < 20; round++) {
        EXPECT_EQ(rl.take(cfg, t), verdict::ok);
        EXPECT_EQ(rl.take(cfg, t), verdict::limited);
        EXPECT_EQ(rl.take(cfg, t), verdict::limited);
        t += 1500;
    }
}
