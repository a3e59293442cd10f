// link_server against a real Unix socket: the input buffer grown for a
// frame near the 16 MiB limit is given back once that frame is consumed,
// also when the worker keeps sending and the buffer never drains (a
// partial frame always waits at its end).

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "link_server.h"

using rooms::link_server;

namespace {

struct counting_handler final : rooms::link_handler {
    rooms::link* last = nullptr;
    size_t frames = 0;

    void on_link_frame(rooms::link& l, const ngx_rooms_ipc_msg_t&) override {
        last = &l;
        frames++;
    }
    void on_link_closed(rooms::link& l) override {
        if (last == &l) {
            last = nullptr;
        }
    }
};

std::string frame_of(size_t payload_bytes, uint64_t seq) {
    std::string payload(payload_bytes, 'x');
    ngx_rooms_ipc_msg_t m{};
    m.type = NGX_ROOMS_IPC_MESSAGE;
    m.id = 1;
    m.seq = seq;
    m.payload.len = payload.size();
    m.payload.data = reinterpret_cast<const uint8_t*>(payload.data());
    rooms::frame_ptr f = rooms::encode_frame(m);
    return f ? *f : std::string();
}

bool write_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
        ssize_t n = write(fd, s.data() + off, s.size() - off);
        if (n <= 0) {
            return false;
        }
        off += static_cast<size_t>(n);
    }
    return true;
}

}  // namespace

TEST(SidecarLinkServer, InputBufferShrinksAfterABigFrame) {
    char dir[] = "/tmp/rooms-link-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/s.sock";

    uv_loop_t loop;
    ASSERT_EQ(uv_loop_init(&loop), 0);
    counting_handler h;
    std::string big = frame_of((16u << 20) - 4096, 1);
    ASSERT_FALSE(big.empty());
    std::string small = frame_of(100, 2);
    constexpr size_t smalls = 50;
    size_t mids = 0;
    for (size_t n = 100000; n < big.size() / 2; n *= 2) {
        mids++;
    }
    {
        link_server server(&loop, h);
        std::string err;
        ASSERT_TRUE(server.listen(path, 0600, err)) << err;

        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
        ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)),
                  0);

        // The big frame, small ones, and half of one more: the link's
        // input never drains.
        std::string tail = small.substr(0, small.size() / 2);
        std::atomic<bool> wrote{false};
        std::thread writer([&] {
            // One stream of frames that double in size up to the big
            // one, which the buffer grows by doubling for, and then
            // small ones: the big frame's end shares reads with them.
            std::string all;
            for (size_t n = 100000; n < big.size() / 2; n *= 2) {
                all += frame_of(n, 3);
            }
            all += big;
            for (size_t i = 0; i < smalls; i++) {
                all += small;
            }
            all += tail;
            wrote = write_all(fd, all);
        });

        struct wait_state {
            counting_handler* h;
            size_t want;
            size_t pending;
            uint64_t deadline;
        } ws{&h, mids + 1 + smalls, tail.size(), uv_now(&loop) + 30000};
        uv_timer_t t;
        uv_timer_init(&loop, &t);
        t.data = &ws;
        uv_timer_start(
            &t,
            [](uv_timer_t* timer) {
                auto* w = static_cast<wait_state*>(timer->data);
                bool done = w->h->frames >= w->want && w->h->last != nullptr &&
                            w->h->last->input_pending() == w->pending;
                if (done || uv_now(timer->loop) > w->deadline) {
                    uv_stop(timer->loop);
                }
            },
            5, 5);
        uv_run(&loop, UV_RUN_DEFAULT);
        writer.join();
        EXPECT_TRUE(wrote);

        EXPECT_EQ(h.frames, mids + 1 + smalls);
        ASSERT_NE(h.last, nullptr);
        EXPECT_EQ(h.last->input_pending(), tail.size());
        // Back to a small buffer: at most 1 MiB, not the 16 MiB the big
        // frame needed.
        EXPECT_LE(h.last->input_capacity(), size_t(1) << 20);

        // The rest of the split frame still decodes.
        ASSERT_TRUE(write_all(fd, small.substr(tail.size())));
        ws.want = mids + 2 + smalls;
        ws.pending = 0;
        uv_run(&loop, UV_RUN_DEFAULT);
        EXPECT_EQ(h.frames, mids + 2 + smalls);

        uv_close(reinterpret_cast<uv_handle_t*>(&t), nullptr);
        close(fd);
        server.close();
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    EXPECT_EQ(uv_loop_close(&loop), 0);
    rmdir(dir);
}
