#pragma once

// The sidecar's figures and their Prometheus text (docs/metrics.md): the
// counters are bumped where things happen (app_*.cpp, redis_client.cpp),
// render_metrics() writes them for a STATS request, and the worker puts
// them after its own on the rooms_metrics page.  No labels but fixed
// ones: never a room code or a player.

#include <array>
#include <cstdint>
#include <string>

namespace rooms {

// Redis command latency, from the write to the reply, in seconds.
class latency_histogram {
public:
    static constexpr std::array<double, 12> bounds = {
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

    void observe(double seconds);
    // Adds another histogram's observations (a cluster's nodes).
    void merge(const latency_histogram& o);

    // Cumulative count of observations <= bounds[i] (i < bounds.size()).
    uint64_t cumulative(size_t i) const;
    uint64_t count() const { return count_; }
    double sum() const { return sum_; }

private:
    std::array<uint64_t, bounds.size()> counts_{};  // per bucket, not
                                                    // cumulative
    uint64_t count_ = 0;
    double sum_ = 0;
};

// What the Redis client counts (redis_client.cpp).
struct redis_stats {
    latency_histogram latency;
    uint64_t errors = 0;      // error replies
    uint64_t timeouts = 0;    // connections given up: Redis not answering
    uint64_t refused = 0;     // commands refused: max_pending outstanding
    uint64_t held = 0;        // commands refused: a failover under way
    uint64_t reconnects = 0;  // connections made again after the first
    uint64_t master_switches = 0;  // new masters Sentinel announced
    // Redis Cluster (0 otherwise): the masters of the slot map, those
    // connected (both connections), redirections followed, calls that
    // waited for a retry (TRYAGAIN, CLUSTERDOWN, an ASK not followed, a
    // node not connected yet), slot maps read.
    uint64_t cluster_masters = 0;
    uint64_t cluster_masters_up = 0;
    uint64_t cluster_moved = 0;
    uint64_t cluster_ask = 0;
    uint64_t cluster_retries = 0;
    uint64_t cluster_maps = 0;
};

// What the room logic counts (app_*.cpp).
struct app_stats {
    uint64_t published = 0;         // client messages published
    uint64_t broadcasts = 0;        // BROADCAST frames written to links
    uint64_t deliveries = 0;        // those frames times the attached
                                    // members they reach
    uint64_t rate_limited = 0;      // messages refused by the rate limit
    uint64_t rate_limit_kicks = 0;  // clients closed for abusing it
    uint64_t refused_invalid = 0;   // messages refused by the envelope rules
    uint64_t unavailable = 0;       // messages answered "unavailable"
    uint64_t sync_failures = 0;     // join/resync scripts that failed
    uint64_t link_faults = 0;       // links closed for a protocol fault
    uint64_t gap_fills = 0;         // gap fills (per group of links)
    uint64_t gap_fill_messages = 0; // messages they sent, per link
    uint64_t resets = 0;            // `reset`s sent: history could not
                                    // fill the gap
};

// The state at the time of the request.
struct sidecar_gauges {
    uint64_t rooms = 0;        // rooms with members on this sidecar
    uint64_t members = 0;
    uint64_t links = 0;        // worker links
    bool redis_command_up = false;
    bool redis_subscriber_up = false;
    double start_time = 0;     // unix seconds
};

// The Prometheus text exposition format (version 0.0.4): HELP, TYPE and
// the samples of every rooms_sidecar_* and rooms_redis_* family.
std::string render_metrics(const app_stats& app, const redis_stats& redis,
                           const sidecar_gauges& gauges);

}  // namespace rooms
