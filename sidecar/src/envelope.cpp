#include "envelope.h"

#include <nlohmann/json.hpp>

namespace rooms {

namespace {

using json = nlohmann::ordered_json;

std::string dump(const json& j) {
    // replace: invalid UTF-8 never throws (the module validates client
    // text, but a name or payload must not be able to stop the sidecar).
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Nesting depth of arrays and objects, outside strings; stops counting
// once over the limit.  Keeps dump() recursion bounded.
bool nesting_within(std::string_view s, unsigned limit) {
    unsigned depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < s.size(); i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
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

envelope_result fail(envelope_status status, const char* message) {
    envelope_result r;
    r.status = status;
    r.message = message;
    return r;
}

}  // namespace

const char* envelope_error_code(envelope_status status) {
    switch (status) {
    case envelope_status::ok:
        return "ok";
    case envelope_status::bad_envelope:
        return "bad_envelope";
    case envelope_status::bad_type:
        return "bad_type";
    case envelope_status::reserved_type:
        return "reserved_type";
    }
    return "bad_envelope";
}

bool valid_envelope_type(std::string_view type) {
    if (type.empty() || type.size() > 32) {
        return false;
    }
    for (char c : type) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool reserved_envelope_type(std::string_view type) {
    return type == "state" || type == "error" || type == "welcome" ||
           type == "reset";
}

envelope_result process_client_envelope(std::string_view payload,
                                        std::string_view name) {
    if (!nesting_within(payload, envelope_max_depth)) {
        return fail(envelope_status::bad_envelope, "nested too deeply");
    }

    json j = json::parse(payload.begin(), payload.end(), nullptr, false);
    if (j.is_discarded()) {
        return fail(envelope_status::bad_envelope, "not valid JSON");
    }
    if (!j.is_object()) {
        return fail(envelope_status::bad_envelope, "not a JSON object");
    }

    auto type_it = j.find("type");
    if (type_it == j.end() || !type_it->is_string()) {
        return fail(envelope_status::bad_envelope,
                    "\"type\" missing or not a string");
    }
    auto data_it = j.find("data");
    if (data_it == j.end() || !data_it->is_object()) {
        return fail(envelope_status::bad_envelope,
                    "\"data\" missing or not an object");
    }

    const std::string& type = type_it->get_ref<const std::string&>();
    if (!valid_envelope_type(type)) {
        return fail(envelope_status::bad_type,
                    "type must be 1-32 characters of a-z 0-9 _ . -");
    }
    if (reserved_envelope_type(type)) {
        return fail(envelope_status::reserved_type,
                    "type is reserved for the server");
    }

    json data = std::move(*data_it);
    data["from"] = name;
    if (type == "agree") {
        data["username"] = name;
    }

    json out = json::object();
    out["type"] = type;
    out["data"] = std::move(data);

    envelope_result r;
    r.status = envelope_status::ok;
    r.type = type;
    r.out = dump(out);
    return r;
}

std::string make_welcome(std::string_view room, std::string_view player_id,
                         std::string_view name, uint64_t last_id) {
    json you = json::object();
    you["id"] = player_id;
    you["name"] = name;

    json data = json::object();
    data["room"] = room;
    data["you"] = std::move(you);
    data["last_id"] = last_id;

    json out = json::object();
    out["type"] = "welcome";
    out["data"] = std::move(data);
    return dump(out);
}

std::string make_error(std::string_view code, std::string_view message) {
    json data = json::object();
    data["code"] = code;
    data["message"] = message;

    json out = json::object();
    out["type"] = "error";
    out["data"] = std::move(data);
    return dump(out);
}

}  // namespace rooms
