// libFuzzer target for the module's "ref" finder (ngx_http_rooms_json.c),
// checked against the sidecar's JSON parser (nlohmann/json): whenever the
// input is a JSON object that nlohmann accepts, both must agree on its
// ref (the worker's own `unavailable` errors echo the ref the sidecar
// would have echoed).  On any input: no crash, no read past the end, the
// ref within its bounds.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "ngx_http_rooms_json.h"

namespace {

bool valid_ref(const std::string& r) {
    if (r.empty() || r.size() > NGX_ROOMS_REF_MAX) {
        return false;
    }
    for (char c : r) {
        if (c < 0x20 || c > 0x7e) {
            return false;
        }
    }
    return true;
}

// Nesting as the sidecar counts it (envelope.cpp): deeper envelopes are
// refused before their ref is read.
bool nesting_within(const uint8_t* p, size_t n, unsigned limit) {
    unsigned depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > limit) {
                return false;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return true;
}

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    uint8_t ref[NGX_ROOMS_REF_MAX];
    size_t len = 0;
    int found = ngx_rooms_json_ref(data, size, ref, &len);
    check(found == 0 || (len >= 1 && len <= NGX_ROOMS_REF_MAX));

    if (!nesting_within(data, size, 64)) {
        return 0;
    }
    auto j = nlohmann::json::parse(data, data + size, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return 0;
    }

    // nlohmann keeps the last of duplicate keys, like the finder.
    auto it = j.find("ref");
    bool want = it != j.end() && it->is_string() &&
                valid_ref(it->get<std::string>());
    check(found == (want ? 1 : 0));
    if (want) {
        check(std::string(reinterpret_cast<char*>(ref), len) ==
              it->get<std::string>());
    }
    return 0;
}
