// redis_client against a real redis-server (skipped when there is none in
// PATH): a Redis that stops answering (SIGSTOP) fails each command in
// flight exactly once, with nullptr and timed_out(), within the timeout;
// one that dies fails them without timed_out(); the command connection
// refuses commands beyond max_pending; TIME gives Redis's clock.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keys.h"
#include "log.h"
#include "redis_client.h"
#include "redis_test_server.h"

using rooms::redis_client;
using rooms::redis_connection;
using rooms::redis_options;
using rooms_test::in_path;
using rooms_test::redis_server;

namespace {

struct events : redis_client::handler {
    int ready[2] = {0, 0};
    int lost[2] = {0, 0};
    bool lost_timed_out = false;
    redis_client* client = nullptr;

    void on_redis_ready(redis_connection::role r) override {
        ready[static_cast<int>(r)]++;
    }
    void on_redis_lost(redis_connection::role r) override {
        lost[static_cast<int>(r)]++;
        lost_timed_out = client->timed_out();
    }
    void on_subscribed(std::string_view) override {}
    void on_subscription_lost(std::string_view) override {}
    void on_message(std::string_view, std::string_view) override {}
};

constexpr int command = static_cast<int>(redis_connection::role::command);

// Runs the loop until done() or 5 s.
bool run_until(uv_loop_t* loop, const std::function<bool()>& done) {
    uint64_t deadline = uv_now(loop) + 5000;
    while (!done()) {
        if (uv_now(loop) > deadline) {
            return false;
        }
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(loop);
    }
    return true;
}

// What one command's callback saw.
struct outcome {
    int calls = 0;
    bool null_reply = false;
    bool timed_out = false;
    uint64_t at = 0;
};

class RedisClient : public ::testing::Test {
protected:
    void SetUp() override {
        if (!in_path("redis-server")) {
            GTEST_SKIP() << "redis-server not in PATH";
        }
        rooms::set_log_level(rooms::log_level::error);
        ASSERT_EQ(uv_loop_init(&loop_), 0);
        ASSERT_TRUE(redis_.start());
    }

    void TearDown() override {
        if (client_) {
            client_->stop();
            client_.reset();
            uv_run(&loop_, UV_RUN_DEFAULT);  // the handles' close callbacks
            EXPECT_EQ(uv_loop_close(&loop_), 0);
        }
    }

    void start(const redis_options& opts) {
        addr_ = redis_.address();
        client_ = std::make_unique<redis_client>(&loop_, addr_, events_, opts);
        events_.client = client_.get();
        client_->set_barrier_channel("barrier");
        client_->start();
        ASSERT_TRUE(run_until(&loop_, [&] {
            return client_->commands_ready() && client_->subscriber_ready();
        }));
        // Every SCRIPT LOAD is answered once a later command is.
        bool pong = false;
        ASSERT_TRUE(client_->command({"PING"}, [&](const redisReply* r) {
            pong = r != nullptr;
        }));
        ASSERT_TRUE(run_until(&loop_, [&] { return pong; }));
    }

    redis_client::reply_fn record(outcome& o) {
        return [this, &o](const redisReply* r) {
            o.calls++;
            o.null_reply = r == nullptr;
            o.timed_out = client_->timed_out();
            o.at = uv_now(&loop_);
        };
    }

    uv_loop_t loop_{};
    redis_server redis_;
    rooms::redis_address addr_;
    events events_;
    std::unique_ptr<redis_client> client_;
};

TEST_F(RedisClient, HungRedisFailsEachCommandOnce) {
    start({.backoff_min_ms = 20, .backoff_max_ms = 100, .timeout_ms = 300});
    EXPECT_EQ(events_.ready[command], 1);

    redis_.signal(SIGSTOP);
    uint64_t sent = uv_now(&loop_);
    std::vector<outcome> out(3);
    for (outcome& o : out) {
        ASSERT_TRUE(client_->command({"INCR", "n"}, record(o)));
    }
    ASSERT_TRUE(run_until(&loop_, [&] { return events_.lost[command] > 0; }));
    EXPECT_TRUE(events_.lost_timed_out);
    EXPECT_FALSE(client_->timed_out());
    EXPECT_FALSE(client_->commands_ready());
    for (const outcome& o : out) {
        EXPECT_EQ(o.calls, 1);
        EXPECT_TRUE(o.null_reply);
        EXPECT_TRUE(o.timed_out);
        // The oldest request outstanding may be a probe sent up to one
        // period (75 ms) before these.
        EXPECT_GE(o.at - sent, 300u - 75u);
        EXPECT_LE(o.at - sent, 300u + 100u);
    }
    EXPECT_FALSE(client_->command({"INCR", "n"}, nullptr));

    // Stopped, Redis still completes connects: still not ready.
    uint64_t t = uv_now(&loop_) + 700;
    run_until(&loop_, [&] { return uv_now(&loop_) >= t; });
    EXPECT_FALSE(client_->commands_ready());
    EXPECT_EQ(events_.ready[command], 1);

    redis_.signal(SIGCONT);
    ASSERT_TRUE(run_until(&loop_, [&] { return client_->commands_ready(); }));
    EXPECT_EQ(events_.ready[command], 2);
    outcome after;
    ASSERT_TRUE(client_->command({"GET", "n"}, record(after)));
    ASSERT_TRUE(run_until(&loop_, [&] { return after.calls > 0; }));
    EXPECT_FALSE(after.null_reply);
    EXPECT_FALSE(after.timed_out);
    for (const outcome& o : out) {
        EXPECT_EQ(o.calls, 1);  // never again
    }
}

TEST_F(RedisClient, DeadRedisIsNotTimedOut) {
    start({.timeout_ms = 5000});
    redis_.signal(SIGSTOP);
    outcome o;
    ASSERT_TRUE(client_->command({"INCR", "n"}, record(o)));
    redis_.signal(SIGKILL);  // the kernel closes its sockets
    ASSERT_TRUE(run_until(&loop_, [&] { return o.calls > 0; }));
    EXPECT_EQ(o.calls, 1);
    EXPECT_TRUE(o.null_reply);
    EXPECT_FALSE(o.timed_out);
    ASSERT_TRUE(run_until(&loop_, [&] { return events_.lost[command] > 0; }));
    EXPECT_FALSE(events_.lost_timed_out);
}

TEST_F(RedisClient, MaxPendingRefusesBeyondTheBound) {
    start({.timeout_ms = 5000, .max_pending = 20});
    redis_.signal(SIGSTOP);
    std::vector<outcome> out(25);
    size_t accepted = 0;
    for (outcome& o : out) {
        if (client_->command({"INCR", "n"}, record(o))) {
            accepted++;
        }
    }
    EXPECT_EQ(accepted, 20u);
    rooms::lua_script script{"t", "return 1"};
    EXPECT_FALSE(client_->eval(script, {}, {}, nullptr));

    redis_.signal(SIGCONT);
    ASSERT_TRUE(run_until(&loop_, [&] { return out[19].calls > 0; }));
    for (size_t i = 0; i < out.size(); i++) {
        EXPECT_EQ(out[i].calls, i < 20 ? 1 : 0) << i;
        EXPECT_FALSE(out[i].null_reply) << i;
    }
    outcome again;
    EXPECT_TRUE(client_->command({"GET", "n"}, record(again)));
}

TEST_F(RedisClient, ClockOffset) {
    start({});
    ASSERT_TRUE(client_->clock_known());
    int64_t wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    uv_update_time(&loop_);
    int64_t redis_now = static_cast<int64_t>(uv_now(&loop_)) +
                        client_->redis_clock_offset_ms();
    EXPECT_NEAR(static_cast<double>(redis_now), static_cast<double>(wall),
                50.0);
}

}  // namespace

// SCRIPT FLUSH with EVALSHAs in flight: every one is answered NOSCRIPT and
// must run again in the order it was given, also relative to a script
// call made meanwhile (here from the callback of a command between them,
// as the sidecar makes them from any reply): execution order is reply
// order on the one connection.
TEST_F(RedisClient, NoscriptRecoveryKeepsOrder) {
    start({});
    const rooms::lua_script& hb = rooms::script_heartbeat();
    auto beat = [&](std::vector<int>& order, int n) {
        return client_->eval(hb, rooms::server_keys("t:", "t"),
                             {"1000", "500"},
                             [&order, n](const redisReply* r) {
                                 bool ok = r != nullptr &&
                                           r->type == REDIS_REPLY_ARRAY;
                                 order.push_back(ok ? n : -n);
                             });
    };

    for (int round = 0; round < 3; round++) {
        std::vector<int> order;
        ASSERT_TRUE(client_->command({"SCRIPT", "FLUSH"}, nullptr));
        ASSERT_TRUE(beat(order, 1));
        ASSERT_TRUE(client_->command({"PING"}, [&](const redisReply*) {
            beat(order, 4);  // given after 1, 2 and 3
        }));
        ASSERT_TRUE(beat(order, 2));
        ASSERT_TRUE(beat(order, 3));
        ASSERT_TRUE(run_until(&loop_, [&] { return order.size() == 4; }));
        EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4})) << "round " << round;
    }

    // Afterwards scripts run by their SHA again (no NOSCRIPT, no EVAL).
    std::vector<int> order;
    ASSERT_TRUE(beat(order, 1));
    ASSERT_TRUE(beat(order, 2));
    ASSERT_TRUE(run_until(&loop_, [&] { return order.size() == 2; }));
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
}
