// libFuzzer target for the module's "ref" finder (ngx_http_rooms_json.c),
// checked against the sidecar's own envelope rules (envelope.cpp): the
// worker's `unavailable` errors must echo the ref the sidecar would have
// echoed.  Whenever the sidecar read a ref, the finder finds the same;
// whenever the sidecar accepted an envelope without one, the finder finds
// none.  On any input: no crash, no read past the end, the ref within
// its bounds.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "envelope.h"
#include "ngx_http_rooms_json.h"

namespace {

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

    rooms::envelope_result env = rooms::process_client_envelope(
        std::string_view(reinterpret_cast<const char*>(data), size), "n");

    if (!env.ref.empty()) {
        check(found == 1 &&
              std::string(reinterpret_cast<char*>(ref), len) == env.ref);
    } else if (env.status == rooms::envelope_status::ok) {
        check(found == 0);
    }
    return 0;
}
