#pragma once

// What a worker may send on its link (docs/protocol.md), beyond what the
// codec checks: HELLO first and of our version, OPEN with a room code,
// name and player id as the module normalises them.  A frame that breaks
// these rules means a broken worker: its link is closed.  Pure logic:
// app.cpp applies it, fuzz/link_fuzz.cc drives it.

#include "ngx_http_rooms_ipc.h"

namespace rooms {

// Why a well-formed frame must close its link (the reason logged), or
// nullptr if the frame is acceptable.  greeted: the link's HELLO was
// taken.  A frame of a type this sidecar does not know is acceptable
// (skipped), once greeted.
const char* link_frame_fault(const ngx_rooms_ipc_msg_t& msg, bool greeted);

}  // namespace rooms
