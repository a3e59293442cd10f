#include "metrics.h"

#include <cinttypes>
#include <cstdio>

namespace rooms {

void latency_histogram::observe(double seconds) {
    if (seconds < 0) {
        seconds = 0;
    }
    for (size_t i = 0; i < bounds.size(); i++) {
        if (seconds <= bounds[i]) {
            counts_[i]++;
            break;
        }
    }
    count_++;
    sum_ += seconds;
}

void latency_histogram::merge(const latency_histogram& o) {
    for (size_t i = 0; i < counts_.size(); i++) {
        counts_[i] += o.counts_[i];
    }
    count_ += o.count_;
    sum_ += o.sum_;
}

uint64_t latency_histogram::cumulative(size_t i) const {
    uint64_t n = 0;
    for (size_t j = 0; j <= i && j < counts_.size(); j++) {
        n += counts_[j];
    }
    return n;
}

namespace {

class writer {
public:
    explicit writer(std::string& out) : out_(out) {}

    void family(const char* name, const char* type, const char* help) {
        out_ += "# HELP ";
        out_ += name;
        out_ += ' ';
        out_ += help;
        out_ += "\n# TYPE ";
        out_ += name;
        out_ += ' ';
        out_ += type;
        out_ += '\n';
    }

    void sample(const char* name, const char* labels, uint64_t v) {
        char buf[32];
        std::snprintf(buf, sizeof(buf), "%" PRIu64, v);
        line(name, labels, buf);
    }

    void sample(const char* name, const char* labels, double v) {
        char buf[40];
        std::snprintf(buf, sizeof(buf), "%.15g", v);
        line(name, labels, buf);
    }

    // One family with one unlabelled sample.
    void one(const char* name, const char* type, const char* help,
             uint64_t v) {
        family(name, type, help);
        sample(name, nullptr, v);
    }

private:
    void line(const char* name, const char* labels, const char* value) {
        out_ += name;
        if (labels != nullptr) {
            out_ += '{';
            out_ += labels;
            out_ += '}';
        }
        out_ += ' ';
        out_ += value;
        out_ += '\n';
    }

    std::string& out_;
};

}  // namespace

std::string render_metrics(const app_stats& app, const redis_stats& redis,
                           const sidecar_gauges& g) {
    std::string out;
    out.reserve(4096);
    writer w(out);

    w.family("rooms_sidecar_start_time_seconds", "gauge",
             "Start time of the sidecar since the unix epoch in seconds.");
    w.sample("rooms_sidecar_start_time_seconds", nullptr, g.start_time);
    w.one("rooms_sidecar_rooms", "gauge",
          "Rooms with members on this sidecar.", g.rooms);
    w.one("rooms_sidecar_members", "gauge",
          "Members of the rooms on this sidecar.", g.members);
    w.one("rooms_sidecar_links", "gauge", "Worker links to the sidecar.",
          g.links);
    w.one("rooms_sidecar_published_total", "counter",
          "Client messages published to their room.", app.published);
    w.one("rooms_sidecar_broadcasts_total", "counter",
          "Room messages written to worker links, one frame per link.",
          app.broadcasts);
    w.one("rooms_sidecar_deliveries_total", "counter",
          "Room messages times the attached members they were sent to.",
          app.deliveries);
    w.one("rooms_sidecar_rate_limited_total", "counter",
          "Client messages refused by the rate limit.", app.rate_limited);
    w.one("rooms_sidecar_rate_limit_kicks_total", "counter",
          "Clients closed for going on past the rate limit.",
          app.rate_limit_kicks);

    const char* errors = "rooms_sidecar_errors_total";
    w.family(errors, "counter", "Errors of the sidecar by kind.");
    w.sample(errors, "kind=\"invalid_message\"", app.refused_invalid);
    w.sample(errors, "kind=\"unavailable\"", app.unavailable);
    w.sample(errors, "kind=\"sync\"", app.sync_failures);
    w.sample(errors, "kind=\"link_fault\"", app.link_faults);
    w.sample(errors, "kind=\"redis_error\"", redis.errors);
    w.sample(errors, "kind=\"redis_timeout\"", redis.timeouts);
    w.sample(errors, "kind=\"redis_backlog\"", redis.refused);
    w.sample(errors, "kind=\"redis_failover\"", redis.held);

    w.one("rooms_sidecar_gap_fills_total", "counter",
          "Gaps in a room's stream filled from history, per group of "
          "links.",
          app.gap_fills);
    w.one("rooms_sidecar_gap_fill_messages_total", "counter",
          "Messages sent by gap fills, per link.", app.gap_fill_messages);
    w.one("rooms_sidecar_resets_total", "counter",
          "Resets sent because history could not fill a gap.", app.resets);

    const char* up = "rooms_redis_up";
    w.family(up, "gauge", "Whether the Redis connection is usable.");
    w.sample(up, "connection=\"command\"",
             uint64_t{g.redis_command_up ? 1u : 0u});
    w.sample(up, "connection=\"subscriber\"",
             uint64_t{g.redis_subscriber_up ? 1u : 0u});
    w.one("rooms_redis_reconnects_total", "counter",
          "Redis connections made again after a loss.", redis.reconnects);
    w.one("rooms_redis_master_switches_total", "counter",
          "Failovers of the master announced by Sentinel.",
          redis.master_switches);

    const char* masters = "rooms_redis_cluster_masters";
    w.family(masters, "gauge",
             "Masters of the Redis Cluster slot map, and those connected.");
    w.sample(masters, "state=\"known\"", redis.cluster_masters);
    w.sample(masters, "state=\"connected\"", redis.cluster_masters_up);
    const char* redirects = "rooms_redis_cluster_redirects_total";
    w.family(redirects, "counter",
             "Redis Cluster redirections followed, by kind.");
    w.sample(redirects, "kind=\"moved\"", redis.cluster_moved);
    w.sample(redirects, "kind=\"ask\"", redis.cluster_ask);
    w.one("rooms_redis_cluster_retries_total", "counter",
          "Redis Cluster calls that waited for a retry.",
          redis.cluster_retries);
    w.one("rooms_redis_cluster_slot_maps_total", "counter",
          "Redis Cluster slot maps read (CLUSTER SLOTS).", redis.cluster_maps);

    const char* lat = "rooms_redis_command_duration_seconds";
    w.family(lat, "histogram",
             "Redis command latency from the write to the reply.");
    std::string bucket = std::string(lat) + "_bucket";
    for (size_t i = 0; i < latency_histogram::bounds.size(); i++) {
        char labels[32];
        std::snprintf(labels, sizeof(labels), "le=\"%g\"",
                      latency_histogram::bounds[i]);
        w.sample(bucket.c_str(), labels, redis.latency.cumulative(i));
    }
    w.sample(bucket.c_str(), "le=\"+Inf\"", redis.latency.count());
    w.sample((std::string(lat) + "_sum").c_str(), nullptr,
             redis.latency.sum());
    w.sample((std::string(lat) + "_count").c_str(), nullptr,
             redis.latency.count());
    return out;
}

}  // namespace rooms
