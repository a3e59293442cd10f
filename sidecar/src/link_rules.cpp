#include "link_rules.h"

#include <string_view>

#include "app_util.h"
#include "envelope.h"

namespace rooms {

namespace {

// A player id as the module mints it: <token>.<pid>.<conn>; anything
// printable without quotes or spaces is accepted (it is used as a hash
// field and JSON string, never parsed).
bool valid_player_id(std::string_view id) {
    if (id.empty() || id.size() > 64) {
        return false;
    }
    for (char c : id) {
        if (c <= ' ' || c > '~' || c == '"' || c == '\\') {
            return false;
        }
    }
    return true;
}

}  // namespace

const char* link_frame_fault(const ngx_rooms_ipc_msg_t& msg, bool greeted) {
    if (!greeted && msg.type != NGX_ROOMS_IPC_HELLO) {
        return "no HELLO";
    }
    switch (msg.type) {
    case NGX_ROOMS_IPC_HELLO:
        if (msg.version != NGX_ROOMS_IPC_VERSION) {
            return "unsupported version";
        }
        return nullptr;
    case NGX_ROOMS_IPC_OPEN:
        if (!valid_room_code(view(msg.room)) ||
            !valid_player_name(view(msg.name)) ||
            !valid_player_id(view(msg.player))) {
            return "bad OPEN";
        }
        return nullptr;
    default:
        return nullptr;
    }
}

}  // namespace rooms
