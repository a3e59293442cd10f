#pragma once

// An unordered_map keyed by std::string that is also searched with a
// std::string_view (heterogeneous lookup), so that a name read from a
// buffer (a room code, a channel) is looked up without a copy.

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace rooms {

struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>()(s);
    }
};

template <typename V>
using string_map =
    std::unordered_map<std::string, V, string_hash, std::equal_to<>>;

}  // namespace rooms
