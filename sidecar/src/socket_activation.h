#pragma once

// systemd socket activation without libsystemd: what sd_listen_fds(1)
// does (sd_listen_fds(3)), written out.  systemd passes the listening
// sockets of rooms-sidecar.socket as fds 3, 4, ... and says so in
// $LISTEN_PID (the pid they are meant for) and $LISTEN_FDS (how many).
// The variables are unset once read, so that nothing we start inherits
// them, and the fds get FD_CLOEXEC.
//
// parse_listen_fds() is the decision, a pure function of the variables'
// values and our pid; take_listen_fds() and check_listen_socket() are the
// I/O around it.

#include <string>

namespace rooms {

// SD_LISTEN_FDS_START: the first passed fd.
constexpr int listen_fds_start = 3;

// The number of fds passed to the process self_pid: 0 if none (LISTEN_PID
// unset, or another process's: a variable inherited from a parent), n >= 1
// for fds listen_fds_start .. listen_fds_start + n - 1, or -1 with err set
// if the variables are meant for us but malformed.  Null means unset.
int parse_listen_fds(const char* listen_pid, const char* listen_fds,
                     long self_pid, std::string& err);

// Reads $LISTEN_PID and $LISTEN_FDS for this process, unsets them and
// $LISTEN_FDNAMES, sets FD_CLOEXEC on the passed fds.  Returns what
// parse_listen_fds() does.
int take_listen_fds(std::string& err);

// True if fd is a listening AF_UNIX SOCK_STREAM socket; path is then its
// address: the file name, "@name" for an abstract one, "" if unnamed.
bool check_listen_socket(int fd, std::string& path, std::string& err);

}  // namespace rooms
