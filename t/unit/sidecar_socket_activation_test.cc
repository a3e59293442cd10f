// systemd socket activation (sd_listen_fds(3) semantics) without
// libsystemd: the variables' parsing, their removal, the socket check.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "socket_activation.h"

using rooms::check_listen_socket;
using rooms::parse_listen_fds;
using rooms::take_listen_fds;

namespace {

int parse(const char* pid, const char* fds, long self = 42) {
    std::string err;
    int n = parse_listen_fds(pid, fds, self, err);
    EXPECT_EQ(n < 0, !err.empty()) << err;
    return n;
}

// A listening (or, with listen_too false, bound) Unix socket in a fresh
// temporary directory, removed at the end.
struct unix_listener {
    std::string dir;
    std::string path;
    int fd = -1;

    explicit unix_listener(bool listen_too = true, int type = SOCK_STREAM) {
        char tmpl[] = "/tmp/rooms-sa-test-XXXXXX";
        const char* d = mkdtemp(tmpl);
        if (d == nullptr) {
            ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
            return;
        }
        dir = d;
        path = dir + "/s.sock";
        fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa;
        std::memset(&sa, 0, sizeof(sa));
        sa.sun_family = AF_UNIX;
        std::memcpy(sa.sun_path, path.c_str(), path.size());
        EXPECT_EQ(bind(fd, reinterpret_cast<struct sockaddr*>(&sa),
                       sizeof(sa)), 0);
        if (listen_too) {
            EXPECT_EQ(listen(fd, 8), 0);
        }
    }

    ~unix_listener() {
        if (fd >= 0) {
            close(fd);
        }
        if (!dir.empty()) {
            unlink(path.c_str());
            rmdir(dir.c_str());
        }
    }
};

}  // namespace

TEST(SidecarSocketActivation, NotActivated) {
    EXPECT_EQ(parse(nullptr, nullptr), 0);
    // LISTEN_FDS alone means nothing: it may be a parent's leftover
    EXPECT_EQ(parse(nullptr, "1"), 0);
    EXPECT_EQ(parse("42", nullptr), 0);
}

TEST(SidecarSocketActivation, AnotherProcesssVariables) {
    EXPECT_EQ(parse("41", "1"), 0);
    EXPECT_EQ(parse("4200", "1"), 0);
    // not ours, so not checked further
    EXPECT_EQ(parse("41", "junk"), 0);
}

TEST(SidecarSocketActivation, Ours) {
    EXPECT_EQ(parse("42", "1"), 1);
    EXPECT_EQ(parse("42", "3"), 3);
    EXPECT_EQ(parse("2147483647", "1", 2147483647L), 1);
}

TEST(SidecarSocketActivation, Malformed) {
    for (const char* pid : {"", "0", "-42", "+42", " 42", "42 ", "4x",
                            "99999999999999999999999"}) {
        EXPECT_EQ(parse(pid, "1"), -1) << "LISTEN_PID=" << pid;
    }
    for (const char* fds : {"", "0", "-1", "+1", "1 ", "x",
                            "2147483645", "99999999999999999999"}) {
        EXPECT_EQ(parse("42", fds), -1) << "LISTEN_FDS=" << fds;
    }
    // the largest count whose fds are all ints
    EXPECT_EQ(parse("42", "2147483644"), 2147483644);
}

TEST(SidecarSocketActivation, TakeUnsetsTheVariables) {
    std::string err;
    // meant for another process: ignored, and still removed
    setenv("LISTEN_PID", "1", 1);
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_FDNAMES", "sidecar", 1);
    EXPECT_EQ(take_listen_fds(err), 0) << err;
    EXPECT_EQ(getenv("LISTEN_PID"), nullptr);
    EXPECT_EQ(getenv("LISTEN_FDS"), nullptr);
    EXPECT_EQ(getenv("LISTEN_FDNAMES"), nullptr);

    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    setenv("LISTEN_FDS", "nope", 1);
    EXPECT_EQ(take_listen_fds(err), -1);
    EXPECT_NE(err.find("LISTEN_FDS"), std::string::npos) << err;
    EXPECT_EQ(getenv("LISTEN_PID"), nullptr);
    EXPECT_EQ(getenv("LISTEN_FDS"), nullptr);
}

TEST(SidecarSocketActivation, TakeSetsCloexec) {
    unix_listener l;
    ASSERT_GE(l.fd, 0);
    // put the socket at fd 3 without FD_CLOEXEC, as systemd passes it
    const int fd3 = rooms::listen_fds_start;
    const bool moved = l.fd != fd3;
    int saved = moved ? fcntl(fd3, F_DUPFD_CLOEXEC, 100) : -1;
    if (moved) {
        ASSERT_EQ(dup2(l.fd, fd3), fd3);
    }
    ASSERT_EQ(fcntl(fd3, F_SETFD, 0), 0);

    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    setenv("LISTEN_FDS", "1", 1);
    std::string err;
    EXPECT_EQ(take_listen_fds(err), 1) << err;
    EXPECT_NE(fcntl(fd3, F_GETFD) & FD_CLOEXEC, 0);

    std::string path;
    EXPECT_TRUE(check_listen_socket(fd3, path, err)) << err;
    EXPECT_EQ(path, l.path);

    // give fd 3 back to whoever had it
    if (saved >= 0) {
        dup2(saved, fd3);
        close(saved);
    } else if (moved) {
        close(fd3);
    }
}

TEST(SidecarSocketActivation, CheckListeningUnixStream) {
    unix_listener l;
    ASSERT_GE(l.fd, 0);
    std::string path;
    std::string err;
    EXPECT_TRUE(check_listen_socket(l.fd, path, err)) << err;
    EXPECT_EQ(path, l.path);
}

TEST(SidecarSocketActivation, CheckRefusesOtherFds) {
    std::string path;
    std::string err;

    unix_listener bound(false);
    ASSERT_GE(bound.fd, 0);
    EXPECT_FALSE(check_listen_socket(bound.fd, path, err));
    EXPECT_NE(err.find("not listening"), std::string::npos) << err;

    unix_listener dgram(false, SOCK_DGRAM);
    ASSERT_GE(dgram.fd, 0);
    EXPECT_FALSE(check_listen_socket(dgram.fd, path, err));
    EXPECT_NE(err.find("SOCK_STREAM"), std::string::npos) << err;

    int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(tcp, 0);
    EXPECT_FALSE(check_listen_socket(tcp, path, err));
    EXPECT_NE(err.find("AF_UNIX"), std::string::npos) << err;
    close(tcp);

    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    EXPECT_FALSE(check_listen_socket(fds[0], path, err));
    EXPECT_NE(err.find("not a socket"), std::string::npos) << err;
    close(fds[0]);
    close(fds[1]);

    EXPECT_FALSE(check_listen_socket(-1, path, err));
}

TEST(SidecarSocketActivation, CheckNamesAbstractSockets) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    struct sockaddr_un sa;
    std::memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    std::string name = "rooms-sa-test-" + std::to_string(getpid());
    std::memcpy(sa.sun_path + 1, name.data(), name.size());
    socklen_t len = static_cast<socklen_t>(
        offsetof(struct sockaddr_un, sun_path) + 1 + name.size());
    ASSERT_EQ(bind(fd, reinterpret_cast<struct sockaddr*>(&sa), len), 0);
    ASSERT_EQ(listen(fd, 8), 0);
    std::string path;
    std::string err;
    EXPECT_TRUE(check_listen_socket(fd, path, err)) << err;
    EXPECT_EQ(path, "@" + name);
    close(fd);
}
