#include "socket_activation.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace rooms {

namespace {

// A decimal number without sign, blanks or leading "+", at most max.
bool parse_decimal(const char* s, long max, long& out) {
    if (s == nullptr || *s == '\0') {
        return false;
    }
    long v = 0;
    for (const char* p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        int d = *p - '0';
        if (v > (max - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    out = v;
    return true;
}

}  // namespace

int parse_listen_fds(const char* listen_pid, const char* listen_fds,
                     long self_pid, std::string& err) {
    if (listen_pid == nullptr) {
        return 0;
    }
    long pid = 0;
    if (!parse_decimal(listen_pid, LONG_MAX, pid) || pid <= 0) {
        err = std::string("bad LISTEN_PID \"") + listen_pid + "\"";
        return -1;
    }
    if (pid != self_pid) {
        return 0;
    }
    if (listen_fds == nullptr) {
        return 0;
    }
    long n = 0;
    if (!parse_decimal(listen_fds, INT_MAX - listen_fds_start, n) || n <= 0) {
        err = std::string("bad LISTEN_FDS \"") + listen_fds + "\"";
        return -1;
    }
    return static_cast<int>(n);
}

int take_listen_fds(std::string& err) {
    int n = parse_listen_fds(std::getenv("LISTEN_PID"),
                             std::getenv("LISTEN_FDS"),
                             static_cast<long>(getpid()), err);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");

    for (int fd = listen_fds_start; fd < listen_fds_start + n; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0 ||
            (!(flags & FD_CLOEXEC) &&
             fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)) {
            err = "passed fd " + std::to_string(fd) + ": " +
                  std::strerror(errno);
            return -1;
        }
    }
    return n;
}

bool check_listen_socket(int fd, std::string& path, std::string& err) {
    const std::string what = "fd " + std::to_string(fd);

    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    std::memset(&sa, 0, sizeof(sa));
    if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) != 0) {
        err = what + " is not a socket: " + std::strerror(errno);
        return false;
    }
    if (sa.sun_family != AF_UNIX) {
        err = what + " is not an AF_UNIX socket";
        return false;
    }

    int type = 0;
    socklen_t olen = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &olen) != 0 ||
        type != SOCK_STREAM) {
        err = what + " is not a SOCK_STREAM socket";
        return false;
    }

    int listening = 0;
    olen = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) != 0 ||
        !listening) {
        err = what + " is not listening";
        return false;
    }

    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = len > off ? std::min<size_t>(len - off, sizeof(sa.sun_path))
                         : 0;
    if (n == 0) {
        path.clear();
    } else if (sa.sun_path[0] == '\0') {
        path = "@" + std::string(sa.sun_path + 1, n - 1);
    } else {
        path.assign(sa.sun_path, strnlen(sa.sun_path, n));
    }
    return true;
}

}  // namespace rooms
