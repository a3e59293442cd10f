#pragma once

// The sidecar: wires the worker links, the room registry, the envelope
// rules and Redis together (docs/architecture.md, docs/protocol.md).
//
//   HELLO            remember the worker's pid
//   OPEN             join; subscribe the room if it is new here; once the
//                    subscription is confirmed: SEND(welcome), ATTACH
//   MESSAGE          validate, stamp `from`, PUBLISH (never local delivery)
//   Redis message    one BROADCAST per link with attached members
//   CLOSE / link     leave; unsubscribe a room left empty
//   ROOMS            ROOMS_REPLY with this sidecar's rooms

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "config.h"
#include "link_server.h"
#include "redis_client.h"
#include "room_registry.h"
#include "uv_handle.h"

namespace rooms {

class app final : public link_handler, public redis_client::handler {
public:
    app(uv_loop_t* loop, const config& cfg);
    ~app();

    app(const app&) = delete;
    app& operator=(const app&) = delete;

    // Listens, installs the signal handlers, starts Redis, reports ready.
    bool start(std::string& err);

    // Closes everything so that the loop runs empty.  Idempotent.
    void stop();

private:
    // link_handler
    void on_link_frame(link& l, const ngx_rooms_ipc_msg_t& msg) override;
    void on_link_closed(link& l) override;

    // redis_client::handler
    void on_redis_ready(redis_connection::role r) override;
    void on_redis_lost(redis_connection::role r) override;
    void on_subscribed(std::string_view channel) override;
    void on_message(std::string_view channel,
                    std::string_view payload) override;

    void on_hello(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_open(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_client_message(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_client_close(link& l, const ngx_rooms_ipc_msg_t& msg);
    void on_rooms(link& l, const ngx_rooms_ipc_msg_t& msg);

    // SEND(welcome) unless resuming, then ATTACH.
    void admit(const member_key& key);
    void send_text(link& l, uint64_t conn, std::string_view payload);
    void send_error(link& l, uint64_t conn, std::string_view code,
                    std::string_view message);
    void room_emptied(const std::string& room);

    bool install_signal(uv_ptr<uv_signal_t>& h, int signum,
                        std::string& err);
    static void signal_cb(uv_signal_t* h, int signum);

    uv_loop_t* loop_;
    config cfg_;
    room_registry rooms_;
    link_server links_;
    redis_client redis_;
    uv_ptr<uv_signal_t> sigterm_;
    uv_ptr<uv_signal_t> sigint_;
    bool started_ = false;
    bool stopping_ = false;
};

}  // namespace rooms
