#pragma once

// systemd readiness notification without libsystemd: one datagram to
// $NOTIFY_SOCKET ("READY=1", "STOPPING=1").  A no-op when it is unset.

namespace rooms {

// True if a datagram was sent.
bool sd_notify_send(const char* state);

}  // namespace rooms
