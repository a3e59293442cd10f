#pragma once

// Small helpers shared by the app_*.cpp files.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ngx_http_rooms_ipc.h"

namespace rooms {

inline unsigned long long ull(uint64_t v) {
    return static_cast<unsigned long long>(v);
}

inline int len(std::string_view s) {
    return static_cast<int>(s.size());
}

inline std::string_view view(const ngx_rooms_ipc_str_t& s) {
    return std::string_view(reinterpret_cast<const char*>(s.data), s.len);
}

inline ngx_rooms_ipc_str_t ipc_str(std::string_view s) {
    ngx_rooms_ipc_str_t r;
    r.len = s.size();
    r.data = reinterpret_cast<const uint8_t*>(s.data());
    return r;
}

inline ngx_rooms_ipc_msg_t ipc_msg(unsigned type, uint64_t id) {
    ngx_rooms_ipc_msg_t m{};
    m.type = type;
    m.id = id;
    return m;
}

}  // namespace rooms
