#include "sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace rooms {

bool sd_notify_send(const char* state) {
    const char* path = std::getenv("NOTIFY_SOCKET");
    if (path == nullptr || (path[0] != '/' && path[0] != '@')) {
        return false;
    }
    size_t len = std::strlen(path);

    struct sockaddr_un sa;
    if (len >= sizeof(sa.sun_path)) {
        return false;
    }
    std::memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path, len);
    if (sa.sun_path[0] == '@') {
        sa.sun_path[0] = '\0';  // abstract namespace
    }
    socklen_t salen =
        static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + len);

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    ssize_t n = sendto(fd, state, std::strlen(state), MSG_NOSIGNAL,
                       reinterpret_cast<struct sockaddr*>(&sa), salen);
    ::close(fd);
    return n >= 0;
}

}  // namespace rooms
