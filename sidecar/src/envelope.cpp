#include "envelope.h"

#include <nlohmann/json.hpp>

#include "ngx_http_rooms_utf8.h"

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

bool valid_room_code(std::string_view room) {
    if (room.empty() || room.size() > 32) {
        return false;
    }
    for (char c : room) {
        bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool valid_player_name(std::string_view name) {
    if (name.empty() || name.size() > 128) {
        return false;
    }
    size_t n = ngx_rooms_utf8_text_len(
        reinterpret_cast<const uint8_t*>(name.data()), name.size());
    return n != static_cast<size_t>(-1) && n >= 1 && n <= 32;
}

bool valid_ref(std::string_view ref) {
    if (ref.empty() || ref.size() > 64) {
        return false;
    }
    for (char c : ref) {
        if (c < 0x20 || c > 0x7e) {
            return false;
        }
    }
    return true;
}

envelope_result process_client_envelope(std::string_view payload,
                                        std::string_view name,
                                        size_t max_bytes,
                                        std::string_view player_id) {
    if (max_bytes != 0 && payload.size() > max_bytes) {
        return fail(envelope_status::bad_envelope, "message too long");
    }
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

    std::string ref;
    auto ref_it = j.find("ref");
    if (ref_it != j.end()) {
        if (!ref_it->is_string() ||
            !valid_ref(ref_it->get_ref<const std::string&>())) {
            return fail(envelope_status::bad_envelope,
                        "\"ref\" must be 1-64 printable ASCII characters");
        }
        ref = ref_it->get<std::string>();
    }
    auto refuse = [&ref](envelope_status status, const char* message) {
        envelope_result r = fail(status, message);
        r.ref = ref;
        return r;
    };

    auto type_it = j.find("type");
    if (type_it == j.end() || !type_it->is_string()) {
        return refuse(envelope_status::bad_envelope,
                      "\"type\" missing or not a string");
    }
    auto data_it = j.find("data");
    if (data_it == j.end() || !data_it->is_object()) {
        return refuse(envelope_status::bad_envelope,
                      "\"data\" missing or not an object");
    }

    const std::string& type = type_it->get_ref<const std::string&>();
    if (!valid_envelope_type(type)) {
        return refuse(envelope_status::bad_type,
                      "type must be 1-32 characters of a-z 0-9 _ . -");
    }
    if (reserved_envelope_type(type)) {
        return refuse(envelope_status::reserved_type,
                      "type is reserved for the server");
    }

    if (type == "chat") {
        auto text_it = data_it->find("text");
        if (text_it == data_it->end() || !text_it->is_string()) {
            return refuse(envelope_status::bad_envelope,
                          "chat: \"data.text\" missing or not a string");
        }
    }

    json data;
    if (type == "agree") {
        data = json::object();
        data["username"] = name;
    } else {
        data = std::move(*data_it);
        data["from"] = name;
        if (!player_id.empty()) {
            data["from_id"] = player_id;
        }
    }

    json out = json::object();
    out["type"] = type;
    out["data"] = std::move(data);
    if (!ref.empty()) {
        out["ref"] = ref;
    }

    std::string relayed = dump(out);
    if (relayed.size() - 1 + envelope_max_tail > envelope_max_relayed) {
        return refuse(envelope_status::bad_envelope,
                      "message too long once relayed");
    }

    envelope_result r;
    r.status = envelope_status::ok;
    r.type = type;
    r.ref = std::move(ref);
    r.out = std::move(relayed);
    r.out.pop_back();  // the closing brace: the publish script adds it
    return r;
}

uint64_t envelope_tail_id(std::string_view s) {
    // ,"id":N,"ts":T}   read backwards
    constexpr std::string_view ts_key = ",\"ts\":";
    constexpr std::string_view id_key = ",\"id\":";
    if (s.empty() || s.back() != '}') {
        return 0;
    }
    size_t i = s.size() - 1;
    size_t digits = 0;
    while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9' && digits < 20) {
        i--;
        digits++;
    }
    if (digits == 0 || i < ts_key.size() ||
        s.substr(i - ts_key.size(), ts_key.size()) != ts_key) {
        return 0;
    }
    i -= ts_key.size();
    size_t end = i;
    digits = 0;
    while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9' && digits < 20) {
        i--;
        digits++;
    }
    if (digits == 0 || digits > 19 || i < id_key.size() ||
        s.substr(i - id_key.size(), id_key.size()) != id_key) {
        return 0;
    }
    uint64_t id = 0;
    for (size_t k = i; k < end; k++) {
        id = id * 10 + static_cast<uint64_t>(s[k] - '0');
    }
    return id;
}

std::string close_envelope(std::string_view open, uint64_t id, uint64_t ts) {
    std::string s(open);
    s += ",\"id\":";
    s += std::to_string(id);
    s += ",\"ts\":";
    s += std::to_string(ts);
    s += '}';
    return s;
}

std::string make_reset(uint64_t last_id) {
    json data = json::object();
    data["last_id"] = last_id;

    json out = json::object();
    out["type"] = "reset";
    out["data"] = std::move(data);
    return dump(out);
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

std::string make_error(std::string_view code, std::string_view message,
                       std::string_view ref) {
    json data = json::object();
    data["code"] = code;
    data["message"] = message;
    if (!ref.empty()) {
        data["ref"] = ref;
    }

    json out = json::object();
    out["type"] = "error";
    out["data"] = std::move(data);
    return dump(out);
}

}  // namespace rooms
