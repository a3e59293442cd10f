// The sidecar's metrics text (docs/metrics.md): the Prometheus text
// format, a cumulative histogram, fixed labels.

#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "metrics.h"

using rooms::app_stats;
using rooms::latency_histogram;
using rooms::redis_stats;
using rooms::render_metrics;
using rooms::sidecar_gauges;

namespace {

// sample line ("name{labels}") -> value text
std::map<std::string, std::string> samples(const std::string& text) {
    std::map<std::string, std::string> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        size_t sp = line.rfind(' ');
        out[line.substr(0, sp)] = line.substr(sp + 1);
    }
    return out;
}

}  // namespace

TEST(SidecarMetrics, HistogramIsCumulative) {
    latency_histogram h;
    h.observe(0.0001);  // first bucket
    h.observe(0.001);   // on a bound: that bucket
    h.observe(0.02);
    h.observe(60);      // above every bound: +Inf only
    h.observe(-1);      // a clock step: counted as 0
    EXPECT_EQ(h.count(), 5u);
    EXPECT_EQ(h.cumulative(0), 2u);  // 0.0005: 0.0001 and 0
    EXPECT_EQ(h.cumulative(1), 3u);  // 0.001
    EXPECT_EQ(h.cumulative(5), 4u);  // 0.025
    EXPECT_EQ(h.cumulative(latency_histogram::bounds.size() - 1), 4u);
    EXPECT_NEAR(h.sum(), 60.0211, 1e-9);
}

TEST(SidecarMetrics, RendersEveryFamilyWithHelpAndType) {
    app_stats a;
    a.published = 7;
    a.deliveries = 21;
    a.rate_limited = 2;
    a.unavailable = 1;
    a.gap_fills = 3;
    a.resets = 1;
    redis_stats r{.latency = {},
                  .errors = 4,
                  .reconnects = 1,
                  .master_switches = 2,
                  .cluster_masters = 3,
                  .cluster_masters_up = 2,
                  .cluster_moved = 5,
                  .cluster_ask = 6,
                  .cluster_retries = 7,
                  .cluster_maps = 8};
    r.latency.observe(0.002);
    r.latency.observe(0.3);
    sidecar_gauges g;
    g.rooms = 2;
    g.members = 5;
    g.links = 2;
    g.redis_command_up = true;
    g.start_time = 1700000000.5;

    std::string text = render_metrics(a, r, g);
    auto s = samples(text);

    EXPECT_EQ(s["rooms_sidecar_rooms"], "2");
    EXPECT_EQ(s["rooms_sidecar_members"], "5");
    EXPECT_EQ(s["rooms_sidecar_published_total"], "7");
    EXPECT_EQ(s["rooms_sidecar_deliveries_total"], "21");
    EXPECT_EQ(s["rooms_sidecar_rate_limited_total"], "2");
    EXPECT_EQ(s["rooms_sidecar_errors_total{kind=\"unavailable\"}"], "1");
    EXPECT_EQ(s["rooms_sidecar_errors_total{kind=\"redis_error\"}"], "4");
    EXPECT_EQ(s["rooms_sidecar_gap_fills_total"], "3");
    EXPECT_EQ(s["rooms_sidecar_resets_total"], "1");
    EXPECT_EQ(s["rooms_redis_up{connection=\"command\"}"], "1");
    EXPECT_EQ(s["rooms_redis_up{connection=\"subscriber\"}"], "0");
    EXPECT_EQ(s["rooms_redis_reconnects_total"], "1");
    EXPECT_EQ(s["rooms_redis_master_switches_total"], "2");
    EXPECT_EQ(s["rooms_redis_cluster_masters{state=\"known\"}"], "3");
    EXPECT_EQ(s["rooms_redis_cluster_masters{state=\"connected\"}"], "2");
    EXPECT_EQ(s["rooms_redis_cluster_redirects_total{kind=\"moved\"}"], "5");
    EXPECT_EQ(s["rooms_redis_cluster_redirects_total{kind=\"ask\"}"], "6");
    EXPECT_EQ(s["rooms_redis_cluster_retries_total"], "7");
    EXPECT_EQ(s["rooms_redis_cluster_slot_maps_total"], "8");
    EXPECT_EQ(s["rooms_sidecar_start_time_seconds"], "1700000000.5");

    const std::string h = "rooms_redis_command_duration_seconds";
    EXPECT_EQ(s[h + "_bucket{le=\"0.001\"}"], "0");
    EXPECT_EQ(s[h + "_bucket{le=\"0.0025\"}"], "1");
    EXPECT_EQ(s[h + "_bucket{le=\"0.25\"}"], "1");
    EXPECT_EQ(s[h + "_bucket{le=\"0.5\"}"], "2");
    EXPECT_EQ(s[h + "_bucket{le=\"+Inf\"}"], "2");
    EXPECT_EQ(s[h + "_count"], "2");
    EXPECT_EQ(s[h + "_sum"], "0.302");

    // Every sample's family has HELP then TYPE before its first sample,
    // once; counters end in _total.
    std::istringstream in(text);
    std::string line;
    std::map<std::string, std::string> types;
    std::string current;
    while (std::getline(in, line)) {
        ASSERT_FALSE(line.empty());
        if (line.rfind("# HELP ", 0) == 0) {
            current = line.substr(7, line.find(' ', 7) - 7);
            EXPECT_EQ(types.count(current), 0u) << current;
            continue;
        }
        if (line.rfind("# TYPE ", 0) == 0) {
            std::string name = line.substr(7, line.find(' ', 7) - 7);
            EXPECT_EQ(name, current);
            types[name] = line.substr(line.rfind(' ') + 1);
            if (types[name] == "counter") {
                EXPECT_TRUE(name.ends_with("_total")) << name;
            }
            continue;
        }
        std::string name = line.substr(0, line.find_first_of("{ "));
        EXPECT_TRUE(name.rfind(current, 0) == 0) << line;
        EXPECT_EQ(types.count(current), 1u) << line;
    }
    EXPECT_EQ(text.back(), '\n');
}
