// rooms-sidecar: see docs/architecture.md and `rooms-sidecar --help`.

#include <uv.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "app.h"
#include "config.h"
#include "log.h"
#include "socket_activation.h"

int main(int argc, char** argv) {
    // A worker that goes away mid-write must not kill the sidecar.
    std::signal(SIGPIPE, SIG_IGN);

    rooms::config cfg;
    std::string err;
    switch (rooms::parse_command_line(argc, argv, cfg, err)) {
    case rooms::parse_status::help:
        std::fputs(rooms::usage_text(), stdout);
        return 0;
    case rooms::parse_status::error:
        std::fprintf(stderr, "rooms-sidecar: %s\n\n%s", err.c_str(),
                     rooms::usage_text());
        return 2;
    case rooms::parse_status::ok:
        break;
    }
    rooms::set_log_level(cfg.level);

    // Socket activation: a listening socket held by systemd across our
    // restarts (conf/rooms-sidecar.socket), else --listen.
    int nfds = rooms::take_listen_fds(err);
    if (nfds < 0) {
        rooms::log_error("socket activation: %s", err.c_str());
        return 1;
    }
    if (nfds > 1) {
        rooms::log_warn("socket activation: %d sockets passed, using fd %d "
                        "only", nfds, rooms::listen_fds_start);
    }
    int listen_fd = nfds > 0 ? rooms::listen_fds_start : -1;

    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc < 0) {
        rooms::log_error("uv_loop_init: %s", uv_strerror(rc));
        return 1;
    }

    int status = 0;
    {
        rooms::app app(&loop, cfg);
        if (!app.start(listen_fd, err)) {
            rooms::log_error("%s", err.c_str());
            status = 1;
            app.stop();
        }
        // Runs until stop() (SIGTERM, SIGINT) has closed every handle.
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    // Close callbacks of anything the app's destructor closed.
    uv_run(&loop, UV_RUN_DEFAULT);

    rc = uv_loop_close(&loop);
    if (rc < 0) {
        rooms::log_warn("event loop not empty at exit: %s", uv_strerror(rc));
    }
    if (status == 0) {
        rooms::log_info("stopped");
    }
    return status;
}
