#pragma once

// A redis-server for the unit tests that need a real one: on a free
// loopback port, in a temporary directory, stopped (SIGCONT, SIGKILL) and
// reaped whatever happens.  Tests skip when in_path("redis-server") is
// false.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "config.h"

namespace rooms_test {

inline bool in_path(const char* prog) {
    const char* path = std::getenv("PATH");
    std::string p = path != nullptr ? path : "";
    size_t start = 0;
    while (start <= p.size()) {
        size_t end = p.find(':', start);
        std::string dir = p.substr(start, end - start);
        if (!dir.empty() && access((dir + "/" + prog).c_str(), X_OK) == 0) {
            return true;
        }
        if (end == std::string::npos) {
            break;
        }
        start = end + 1;
    }
    return false;
}

inline int free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
        port = ntohs(a.sin_port);
    }
    close(fd);
    return port;
}

inline bool port_open(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    return ok;
}

// A redis-server on a free loopback port, stopped (SIGCONT, SIGKILL) and
// reaped whatever happens.
class redis_server {
public:
    bool start() {
        port_ = free_port();
        char dir[] = "/tmp/rooms-unit-redis-XXXXXX";
        if (port_ < 0 || mkdtemp(dir) == nullptr) {
            return false;
        }
        dir_ = dir;
        pid_ = fork();
        if (pid_ == 0) {
            std::string port = std::to_string(port_);
            if (freopen("/dev/null", "w", stdout) == nullptr) {
                _exit(126);
            }
            execlp("redis-server", "redis-server", "--port", port.c_str(),
                   "--bind", "127.0.0.1", "--save", "", "--appendonly",
                   "no", "--dir", dir, static_cast<char*>(nullptr));
            _exit(127);
        }
        for (int i = 0; i < 500 && pid_ > 0; i++) {
            if (port_open(port_)) {
                return true;
            }
            usleep(10000);
        }
        return false;
    }

    void signal(int sig) { kill(pid_, sig); }

    ~redis_server() {
        if (pid_ > 0) {
            kill(pid_, SIGCONT);
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (!dir_.empty()) {
            rmdir(dir_.c_str());
        }
    }

    rooms::redis_address address() const {
        rooms::redis_address a;
        a.port = port_;
        return a;
    }

    int port() const { return port_; }

private:
    pid_t pid_ = -1;
    int port_ = -1;
    std::string dir_;
};

}  // namespace rooms_test
