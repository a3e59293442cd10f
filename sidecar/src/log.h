#pragma once

// One line per event on stderr:
//   2024-05-01T12:00:00.123Z [info] open link=1 conn=7 room=ABCD ...
// Messages name the link, conn and room they concern as key=value pairs.

#include <string_view>

namespace rooms {

enum class log_level { debug = 0, info = 1, warn = 2, error = 3 };

// Parses "debug", "info", "warn" (or "warning"), "error".
bool parse_log_level(std::string_view s, log_level& out);

void set_log_level(log_level level);
bool log_enabled(log_level level);

void log_debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace rooms
