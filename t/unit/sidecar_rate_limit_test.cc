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

// The bucket counts thousandths of a token: a rate that refills a
// fraction of a token per millisecond adds up exactly, also in a bucket
// of the largest size.
TEST(SidecarRateLimit, SlowRefillAddsUp) {
    rate_limit_config cfg;
    cfg.rate = 3;  // one token per 333.3 ms
    cfg.burst = 1;
    cfg.kick_after = 0;
    rate_limiter rl(0);
    EXPECT_EQ(rl.take(cfg, 0), verdict::ok);
    uint64_t t = 0;
    for (; t < 333; t++) {
        ASSERT_EQ(rl.take(cfg, t), verdict::limited) << t;
    }
    EXPECT_EQ(rl.take(cfg, 334), verdict::ok);

    cfg.rate = 1;
    cfg.burst = 1000000;
    rate_limiter big(0);
    for (int i = 0; i < 1000000; i++) {
        ASSERT_EQ(big.take(cfg, 0), verdict::ok) << i;
    }
    EXPECT_EQ(big.take(cfg, 999), verdict::limited);
    EXPECT_EQ(big.take(cfg, 1000), verdict::ok);
}

// A refusal is forgiven by a whole second without one, not by less.
TEST(SidecarRateLimit, ForgivenAfterOneSecond) {
    rate_limit_config cfg;
    cfg.rate = 1;
    cfg.burst = 1;
    cfg.kick_after = 2;
    rate_limiter rl(0);
    EXPECT_EQ(rl.take(cfg, 0), verdict::ok);
    EXPECT_EQ(rl.take(cfg, 0), verdict::limited);
    EXPECT_EQ(rl.take(cfg, 999), verdict::limited);  // 999 ms: 2 in a row
    EXPECT_EQ(rl.take(cfg, 1998), verdict::ok);      // a token, no refusal
    EXPECT_EQ(rl.take(cfg, 1998), verdict::kick);    // 999 ms: the 3rd
    rate_limiter calm(0);
    EXPECT_EQ(calm.take(cfg, 0), verdict::ok);
    EXPECT_EQ(calm.take(cfg, 0), verdict::limited);
    EXPECT_EQ(calm.take(cfg, 600), verdict::limited);
    EXPECT_EQ(calm.take(cfg, 1600), verdict::ok);
    EXPECT_EQ(calm.take(cfg, 1600), verdict::limited);  // 1000 ms: 1st again
    EXPECT_EQ(calm.take(cfg, 1601), verdict::limited);
    EXPECT_EQ(calm.take(cfg, 1602), verdict::kick);
}

// The largest kick_after (rate_kick 65535) still kicks, after exactly
// that many refusals; 0 never does.
TEST(SidecarRateLimit, LargestKickAfter) {
    rate_limit_config cfg;
    cfg.rate = 1;
    cfg.burst = 1;
    cfg.kick_after = 65535;
    rate_limiter rl(0);
    EXPECT_EQ(rl.take(cfg, 0), verdict::ok);
    for (int i = 0; i < 65535; i++) {
        ASSERT_EQ(rl.take(cfg, 0), verdict::limited) << i;
    }
    EXPECT_EQ(rl.take(cfg, 0), verdict::kick);

    cfg.kick_after = 0;
    rate_limiter never(0);
    EXPECT_EQ(never.take(cfg, 0), verdict::ok);
    for (int i = 0; i < 70000; i++) {
        ASSERT_EQ(never.take(cfg, 0), verdict::limited) << i;
    }
}
