#include "log.h"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace rooms {

namespace {

log_level current_level = log_level::info;

const char* level_name(log_level level) {
    switch (level) {
    case log_level::debug:
        return "debug";
    case log_level::info:
        return "info";
    case log_level::warn:
        return "warn";
    case log_level::error:
        return "error";
    }
    return "?";
}

void log_write(log_level level, const char* fmt, va_list ap) {
    char line[4096];
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_name(level));
    size_t len = n > 0 ? static_cast<size_t>(n) : 0;

    // Keep room for the newline; a longer message is cut.
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    if (n > 0) {
        len += static_cast<size_t>(n);
    }
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';

    // One write(2) per line, so lines of concurrent writers do not mix.
    ssize_t rc = write(STDERR_FILENO, line, len);
    (void) rc;
}

}  // namespace

bool parse_log_level(std::string_view s, log_level& out) {
    if (s == "debug") {
        out = log_level::debug;
    } else if (s == "info") {
        out = log_level::info;
    } else if (s == "warn" || s == "warning") {
        out = log_level::warn;
    } else if (s == "error") {
        out = log_level::error;
    } else {
        return false;
    }
    return true;
}

void set_log_level(log_level level) {
    current_level = level;
}

bool log_enabled(log_level level) {
    return level >= current_level;
}

#define ROOMS_LOG_FN(fn, level)                                              \
    void fn(const char* fmt, ...) {                                          \
        if (!log_enabled(level)) {                                           \
            return;                                                          \
        }                                                                    \
        va_list ap;                                                          \
        va_start(ap, fmt);                                                   \
        log_write(level, fmt, ap);                                           \
        va_end(ap);                                                          \
    }

ROOMS_LOG_FN(log_debug, log_level::debug)
ROOMS_LOG_FN(log_info, log_level::info)
ROOMS_LOG_FN(log_warn, log_level::warn)
ROOMS_LOG_FN(log_error, log_level::error)

#undef ROOMS_LOG_FN

}  // namespace rooms
