// loadgen: WebSocket load generator for ngx_rooms and Nchan.
//
// Workloads:
//   fanout  R rooms x S members; the first N members of every room
//           (--publishers, default 1) each publish P msg/s for D seconds,
//           staggered in time.  Every message carries the room (br), its
//           sender's member index (bp), a per-sender sequence number (bs)
//           and its send time (bt, CLOCK_MONOTONIC ns) inside its JSON
//           data, so every receiver measures end-to-end latency, loss,
//           duplicates and reordering per sender.
//   idle    N connections opened and held for D seconds, nothing sent.
//
// Targets:
//   rooms   ws://HOST:PORT/ws?room={room}&name={name}; the first frame is
//           the welcome; messages are sent as chat envelopes.
//   nchan   ws://HOST:PORT/sub/{room} (an nchan_pubsub websocket location);
//           the same envelope text is published and relayed verbatim.
//
// --deflate 1 offers permessage-deflate (RFC 7692, no context takeover
// both ways, as ngx_rooms answers it): messages sent are compressed, the
// compressed ones received are inflated (zlib).  --text english makes the
// chat text English-like words (every message different) instead of a
// run of 'x'.  Every delivery counts its frame's bytes on the wire and its
// message's bytes once inflated.
//
// Structure: the first process is the controller.  It forks --procs worker
// processes (each with --threads epoll threads owning a share of the
// connections), samples the server processes given with --pid from /proc
// every second, starts the workload once every worker is connected, and
// prints a table and one JSON line.  Every phase has a deadline: the run
// always ends by itself.  See docs/benchmarks.md.

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zlib.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace {

// ---------------------------------------------------------------- time

uint64_t now_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull
           + static_cast<uint64_t>(ts.tv_nsec);
}


uint64_t cpu_ns_self()
{
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto tv = [](const timeval& t) {
        return static_cast<uint64_t>(t.tv_sec) * 1000000000ull
               + static_cast<uint64_t>(t.tv_usec) * 1000ull;
    };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
}


void sleep_until_ns(uint64_t t)
{
    for (int i = 0; i < 100000; i++) {
        uint64_t n = now_ns();
        if (n >= t) {
            return;
        }
        uint64_t d = std::min<uint64_t>(t - n, 50000000ull);
        std::this_thread::sleep_for(std::chrono::nanoseconds(d));
    }
}


// ---------------------------------------------------------------- options

struct pid_ref {
    std::string label;
    int pid = 0;
};


struct options {
    std::string target = "rooms";
    std::string workload = "fanout";
    std::string host = "127.0.0.1";
    int port = 0;
    std::string path;
    uint32_t rooms = 10;
    uint32_t members = 10;
    uint32_t publishers = 1;       // per room; 0: every member
    double rate = 1.0;
    double duration = 10.0;
    double drain = 5.0;
    double settle = 1.0;
    uint32_t conns = 1000;
    uint32_t threads = 1;
    uint32_t procs = 1;
    uint32_t payload = 64;
    double connect_timeout = 120.0;
    uint32_t inflight = 200;
    uint32_t addr_span = 20000;
    uint32_t quiet_ms = 500;
    std::string tag;
    std::string json_out;
    std::string sampled;           // created once "opened" is sampled
    std::vector<pid_ref> pids;
    bool quiet = false;
    bool deflate = false;
    bool english = false;
};


void usage()
{
    std::fputs(
        "usage: loadgen --port PORT [options]\n"
        "  --target rooms|nchan     protocol flavour (default rooms)\n"
        "  --workload fanout|idle   (default fanout)\n"
        "  --host ADDR              server address (default 127.0.0.1)\n"
        "  --path TEMPLATE          request path; {room} {name} {i} are\n"
        "                           replaced (default rooms:\n"
        "                           /ws?room={room}&name={name},\n"
        "                           nchan: /sub/{room})\n"
        "  --rooms R --members S    fanout shape (default 10 x 10)\n"
        "  --publishers N|all       members of each room that publish\n"
        "                           (default 1: member 0)\n"
        "  --rate P                 messages/s per publisher (default 1)\n"
        "  --duration D             seconds of sending / holding (10)\n"
        "  --drain S                max seconds to wait for stragglers (5)\n"
        "  --settle S               seconds between connected and start (1)\n"
        "  --quiet-ms MS            connected = no frame for MS ms after\n"
        "                           the last join (500)\n"
        "  --conns N                idle connections (default 1000)\n"
        "  --threads T              epoll threads per process (1)\n"
        "  --procs K                worker processes (1)\n"
        "  --payload BYTES          text padding per message (64)\n"
        "  --text pad|english       the text: 'x' x BYTES, or English-like\n"
        "                           words, different in every message\n"
        "  --deflate 0|1            offer permessage-deflate, compress\n"
        "                           what is sent, inflate what comes (0)\n"
        "  --connect-timeout S      (120)   --inflight N per thread (200)\n"
        "  --addr-span N            connections per source address\n"
        "                           127.0.0.x (20000)\n"
        "  --tag TAG                room name prefix (default random)\n"
        "  --pid LABEL=PID          server process to sample (repeatable;\n"
        "                           --pids L=P,L=P; --pidfile FILE of\n"
        "                           'LABEL PID' lines)\n"
        "  --json FILE              also write the JSON line to FILE\n"
        "  --sampled FILE           create FILE once the servers' memory\n"
        "                           with all connected is taken\n"
        "  --quiet                  only the JSON line on stdout\n",
        stderr);
}


bool add_pid(options& o, const std::string& spec)
{
    std::string label = "proc";
    std::string num = spec;
    auto eq = spec.find_first_of("=:");
    if (eq != std::string::npos) {
        label = spec.substr(0, eq);
        num = spec.substr(eq + 1);
    }
    char* end = nullptr;
    long v = std::strtol(num.c_str(), &end, 10);
    if (end == num.c_str() || *end != '\0' || v <= 0) {
        return false;
    }
    o.pids.push_back({label, static_cast<int>(v)});
    return true;
}


bool parse_options(int argc, char** argv, options& o)
{
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--quiet") {
            o.quiet = true;
            continue;
        }
        if (a == "-h" || a == "--help") {
            usage();
            std::exit(0);
        }
        if (i + 1 >= argc) {
            std::fprintf(stderr, "loadgen: %s needs a value\n", a.c_str());
            return false;
        }
        std::string v = argv[++i];
        auto num = [&](double& out) {
            char* end = nullptr;
            out = std::strtod(v.c_str(), &end);
            return end != v.c_str() && *end == '\0' && out >= 0;
        };
        double d = 0;
        bool ok = true;
        if (a == "--target") {
            o.target = v;
            ok = v == "rooms" || v == "nchan";
        } else if (a == "--workload") {
            o.workload = v;
            ok = v == "fanout" || v == "idle";
        } else if (a == "--host") {
            o.host = v;
        } else if (a == "--path") {
            o.path = v;
        } else if (a == "--tag") {
            o.tag = v;
        } else if (a == "--text") {
            o.english = v == "english";
            ok = v == "pad" || v == "english";
        } else if (a == "--deflate") {
            o.deflate = v == "1";
            ok = v == "0" || v == "1";
        } else if (a == "--publishers") {
            char* end = nullptr;
            long n = std::strtol(v.c_str(), &end, 10);
            ok = v == "all" || (end != v.c_str() && *end == '\0' && n >= 0
                                && n <= 1000000);
            o.publishers = v == "all" ? 0 : static_cast<uint32_t>(n);
        } else if (a == "--json") {
            o.json_out = v;
        } else if (a == "--sampled") {
            o.sampled = v;
        } else if (a == "--pid") {
            ok = add_pid(o, v);
        } else if (a == "--pids") {
            std::stringstream ss(v);
            std::string item;
            while (ok && std::getline(ss, item, ',')) {
                if (!item.empty()) {
                    ok = add_pid(o, item);
                }
            }
        } else if (a == "--pidfile") {
            std::ifstream f(v);
            ok = static_cast<bool>(f);
            std::string label;
            std::string pid;
            std::string line;
            while (ok && std::getline(f, line)) {
                std::stringstream ls(line);
                if (!(ls >> label)) {
                    continue;
                }
                if (ls >> pid) {
                    ok = add_pid(o, label + "=" + pid);
                } else {
                    ok = add_pid(o, label);
                }
            }
        } else if (num(d)) {
            auto u32 = [&](uint32_t& out, double lo) {
                out = static_cast<uint32_t>(d);
                return d >= lo && d <= 4e9;
            };
            if (a == "--port") {
                o.port = static_cast<int>(d);
                ok = d >= 1 && d <= 65535;
            } else if (a == "--rooms") {
                ok = u32(o.rooms, 1);
            } else if (a == "--members") {
                ok = u32(o.members, 1);
            } else if (a == "--rate") {
                o.rate = d;
                ok = d > 0 && d <= 100000;
            } else if (a == "--duration") {
                o.duration = d;
                ok = d > 0 && d <= 3600;
            } else if (a == "--drain") {
                o.drain = d;
                ok = d <= 600;
            } else if (a == "--settle") {
                o.settle = d;
                ok = d <= 600;
            } else if (a == "--conns") {
                ok = u32(o.conns, 1);
            } else if (a == "--threads") {
                ok = u32(o.threads, 1) && d <= 64;
            } else if (a == "--procs") {
                ok = u32(o.procs, 1) && d <= 64;
            } else if (a == "--payload") {
                ok = u32(o.payload, 0) && d <= 1000000;
            } else if (a == "--connect-timeout") {
                o.connect_timeout = d;
                ok = d > 0 && d <= 3600;
            } else if (a == "--quiet-ms") {
                ok = u32(o.quiet_ms, 0) && d <= 600000;
            } else if (a == "--inflight") {
                ok = u32(o.inflight, 1);
            } else if (a == "--addr-span") {
                ok = u32(o.addr_span, 1) && d <= 60000;
            } else {
                std::fprintf(stderr, "loadgen: unknown option %s\n",
                             a.c_str());
                return false;
            }
        } else {
            std::fprintf(stderr, "loadgen: unknown option or bad value "
                         "%s %s\n", a.c_str(), v.c_str());
            return false;
        }
        if (!ok) {
            std::fprintf(stderr, "loadgen: bad value for %s: %s\n",
                         a.c_str(), v.c_str());
            return false;
        }
    }
    if (o.port == 0) {
        std::fprintf(stderr, "loadgen: --port is required\n");
        return false;
    }
    if (o.publishers > o.members) {
        std::fprintf(stderr, "loadgen: --publishers %u exceeds --members "
                     "%u\n", o.publishers, o.members);
        return false;
    }
    if (o.publishers == 0) {
        o.publishers = o.members;
    }
    if (o.path.empty()) {
        o.path = o.target == "rooms" ? "/ws?room={room}&name={name}"
                                     : "/sub/{room}";
    }
    if (o.tag.empty()) {
        static const char digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        uint64_t seed = now_ns() ^ (static_cast<uint64_t>(getpid()) << 20);
        for (int i = 0; i < 6; i++) {
            o.tag += digits[seed % 36];
            seed /= 36;
        }
    }
    return true;
}


// ---------------------------------------------------------------- stats

// Latency histogram in microseconds: exact below 256 us, then 128
// sub-buckets per power of two (< 1% error), up to 2^42 us.
constexpr size_t hist_exact = 256;
constexpr size_t hist_sub = 128;
constexpr size_t hist_buckets = hist_exact + 34 * hist_sub;


size_t hist_index(uint64_t us)
{
    if (us < hist_exact) {
        return static_cast<size_t>(us);
    }
    int msb = 63 - __builtin_clzll(us);
    int shift = msb - 7;
    size_t idx = hist_exact + static_cast<size_t>(msb - 8) * hist_sub
                 + static_cast<size_t>((us >> shift) - hist_sub);
    return std::min(idx, hist_buckets - 1);
}


uint64_t hist_value(size_t idx)
{
    if (idx < hist_exact) {
        return idx;
    }
    size_t k = idx - hist_exact;
    int msb = static_cast<int>(k / hist_sub) + 8;
    uint64_t sub = k % hist_sub + hist_sub;
    return sub << (msb - 7);
}


struct stats {
    uint64_t conns_ok = 0;
    uint64_t conns_failed = 0;
    uint64_t conns_closed = 0;
    uint64_t sent = 0;
    uint64_t expected = 0;
    uint64_t received = 0;
    uint64_t duplicates = 0;
    uint64_t out_of_order = 0;
    uint64_t misrouted = 0;
    uint64_t other_frames = 0;
    uint64_t max_send_lag_ns = 0;
    uint64_t first_recv_ns = 0;
    uint64_t last_recv_ns = 0;
    uint64_t max_latency_ns = 0;
    uint64_t cpu_ns = 0;
    uint64_t maxrss_kb = 0;
    uint64_t wire_bytes = 0;       // frames of the deliveries, headers too
    uint64_t text_bytes = 0;       // their messages, inflated
    uint64_t inflated = 0;         // deliveries that came compressed
    uint64_t deflate_conns = 0;    // connections that negotiated it
    uint64_t hist[hist_buckets] = {};

    void merge(const stats& s)
    {
        conns_ok += s.conns_ok;
        conns_failed += s.conns_failed;
        conns_closed += s.conns_closed;
        sent += s.sent;
        expected += s.expected;
        received += s.received;
        duplicates += s.duplicates;
        out_of_order += s.out_of_order;
        misrouted += s.misrouted;
        other_frames += s.other_frames;
        max_send_lag_ns = std::max(max_send_lag_ns, s.max_send_lag_ns);
        if (s.first_recv_ns != 0
            && (first_recv_ns == 0 || s.first_recv_ns < first_recv_ns))
        {
            first_recv_ns = s.first_recv_ns;
        }
        last_recv_ns = std::max(last_recv_ns, s.last_recv_ns);
        max_latency_ns = std::max(max_latency_ns, s.max_latency_ns);
        cpu_ns += s.cpu_ns;
        maxrss_kb += s.maxrss_kb;
        wire_bytes += s.wire_bytes;
        text_bytes += s.text_bytes;
        inflated += s.inflated;
        deflate_conns += s.deflate_conns;
        for (size_t i = 0; i < hist_buckets; i++) {
            hist[i] += s.hist[i];
        }
    }

    // latency in ms at quantile q (0..1)
    double quantile_ms(double q) const
    {
        uint64_t total = 0;
        for (auto h : hist) {
            total += h;
        }
        if (total == 0) {
            return 0;
        }
        auto want = static_cast<uint64_t>(std::ceil(q * total));
        want = std::max<uint64_t>(want, 1);
        uint64_t seen = 0;
        for (size_t i = 0; i < hist_buckets; i++) {
            seen += hist[i];
            if (seen >= want) {
                return hist_value(i) / 1000.0;
            }
        }
        return max_latency_ns / 1e6;
    }
};


// ---------------------------------------------------------------- shape

struct shape {
    uint32_t total = 0;      // connections over all workers
    uint32_t workers = 1;    // procs * threads
    uint64_t msgs = 0;       // messages per publisher (fanout)
    uint32_t pubs = 1;       // publishers per room (fanout)
    bool fanout = true;
};


std::string room_code(const options& o, uint32_t room)
{
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%s-%05u", o.tag.c_str(), room);
    return buf;
}


std::string request_path(const options& o, uint32_t gidx, uint32_t room)
{
    char name[32];
    std::snprintf(name, sizeof(name), "u%u", gidx);
    std::string out;
    std::string_view t = o.path;
    for (size_t i = 0; i < t.size();) {
        if (t.compare(i, 6, "{room}") == 0) {
            out += room_code(o, room);
            i += 6;
        } else if (t.compare(i, 6, "{name}") == 0) {
            out += name;
            i += 6;
        } else if (t.compare(i, 3, "{i}") == 0) {
            out += std::to_string(gidx);
            i += 3;
        } else {
            out += t[i++];
        }
    }
    return out;
}


// ---------------------------------------------------------------- worker

struct proc_ctl {
    std::atomic<uint32_t> ready{0};
    std::atomic<uint64_t> go_ns{0};
    std::atomic<bool> stop{false};
    uint64_t hard_deadline_ns = 0;
};


enum class cstate : uint8_t { idle, connecting, upgrading, open, closed };


struct conn {
    int fd = -1;
    uint32_t gidx = 0;
    uint32_t room = 0;
    cstate st = cstate::idle;
    bool resolved = false;
    bool want_out = false;
    bool publisher = false;
    uint32_t member = 0;           // index in its room; senders: < pubs
    bool done = false;
    bool deflate = false;          // negotiated
    bool frag_rsv1 = false;
    uint8_t frag_op = 0;
    uint64_t frag_wire = 0;
    uint64_t got = 0;
    uint32_t next_seq = 0;
    std::string out;
    size_t out_off = 0;
    std::string in;
    std::string frag;
    std::vector<uint64_t> seen;      // per sender: bits_ words of seqs
    std::vector<uint32_t> max_seq;   // per sender: highest seq + 1
};


class worker {
public:
    worker(const options& o, const shape& sh, proc_ctl& ctl, uint32_t wid)
        : o_(o), sh_(sh), ctl_(ctl), wid_(wid)
    {
        for (uint32_t g = wid; g < sh.total; g += sh.workers) {
            conn c;
            c.gidx = g;
            c.room = g / o.members;
            c.member = g % o.members;
            c.publisher = sh.fanout && c.member < sh.pubs;
            conns_.push_back(std::move(c));
        }
        rng_ = 0x9e3779b97f4a7c15ull ^ (static_cast<uint64_t>(wid) << 32)
               ^ now_ns();
        if (sh.fanout) {
            bits_ = (sh.msgs + 63) / 64;
        }
    }

    void run();

    stats st_;

private:
    void connect_phase();
    void start_connect(conn& c);
    void on_event(conn& c, uint32_t ev);
    void on_readable(conn& c);
    void on_upgrade_data(conn& c);
    size_t parse_frames(conn& c, const char* p, size_t n);
    void on_message(conn& c, std::string_view m);
    void queue_frame(conn& c, uint8_t op, std::string_view payload);
    void flush(conn& c);
    void set_interest(conn& c, bool want_out);
    void resolve(conn& c, bool ok);
    void drop(conn& c);
    void poll_once(int timeout_ms);
    void send_due(uint64_t now);
    uint64_t sched_ns(const conn& c, uint32_t seq) const;
    void deliver(conn& c, std::string_view m, bool rsv1, uint64_t wire);
    bool compress(std::string_view in, std::string& out);
    void english_text(std::string& out);

    const options& o_;
    const shape& sh_;
    proc_ctl& ctl_;
    uint32_t wid_;
    int ep_ = -1;
    std::vector<conn> conns_;
    std::vector<uint32_t> pubs_;
    uint64_t rng_ = 0;
    uint64_t bits_ = 0;
    uint64_t go_ = 0;
    uint64_t last_frame_ns_ = 0;
    uint32_t inflight_ = 0;
    uint32_t receivers_ = 0;
    uint32_t receivers_done_ = 0;
    std::vector<char> buf_ = std::vector<char>(256 * 1024);
    std::string pad_;
    uint64_t wire_ = 0;            // of the message being delivered
    bool compressed_ = false;      // it came compressed
    z_stream zin_{};
    z_stream zout_{};
    bool zinit_ = false;
    std::string zbuf_;
    std::string text_;
};


void worker::resolve(conn& c, bool ok)
{
    if (c.resolved) {
        return;
    }
    c.resolved = true;
    inflight_--;
    if (ok) {
        st_.conns_ok++;
    } else {
        st_.conns_failed++;
    }
}


void worker::drop(conn& c)
{
    if (c.st == cstate::closed) {
        return;
    }
    if (c.resolved && c.st == cstate::open) {
        st_.conns_closed++;
    }
    resolve(c, false);
    if (c.fd >= 0) {
        close(c.fd);
        c.fd = -1;
    }
    c.st = cstate::closed;
    c.out.clear();
    c.out.shrink_to_fit();
    c.in.clear();
    c.in.shrink_to_fit();
}


void worker::set_interest(conn& c, bool want_out)
{
    if (c.fd < 0 || c.want_out == want_out) {
        return;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0u);
    ev.data.u32 = static_cast<uint32_t>(&c - conns_.data());
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = want_out;
}


void worker::start_connect(conn& c)
{
    inflight_++;
    c.st = cstate::connecting;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c.st = cstate::closed;
        resolve(c, false);
        return;
    }
    c.fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(static_cast<uint16_t>(o_.port));
    inet_pton(AF_INET, o_.host.c_str(), &dst.sin_addr);

    // spread source addresses over 127.0.0.1, .2, ... so that more than
    // one ephemeral port range of connections reach one server port
    if ((ntohl(dst.sin_addr.s_addr) >> 24) == 127) {
        sockaddr_in src{};
        src.sin_family = AF_INET;
        src.sin_addr.s_addr = htonl(0x7f000001u + c.gidx / o_.addr_span);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                   sizeof(one));
        if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
            drop(c);
            return;
        }
    }

    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    ev.data.u32 = static_cast<uint32_t>(&c - conns_.data());
    c.want_out = true;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
        drop(c);
        return;
    }
    int rc = connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
    if (rc != 0 && errno != EINPROGRESS) {
        drop(c);
    }
}


void worker::queue_frame(conn& c, uint8_t op, std::string_view payload)
{
    uint8_t hdr[14];
    size_t h = 0;
    size_t n = payload.size();
    hdr[h++] = static_cast<uint8_t>(0x80 | op);
    if (n < 126) {
        hdr[h++] = static_cast<uint8_t>(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = static_cast<uint8_t>(n >> 8);
        hdr[h++] = static_cast<uint8_t>(n);
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) {
            hdr[h++] = static_cast<uint8_t>(static_cast<uint64_t>(n)
                                            >> (8 * i));
        }
    }
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    uint8_t key[4];
    std::memcpy(key, &rng_, 4);
    std::memcpy(hdr + h, key, 4);
    h += 4;
    c.out.append(reinterpret_cast<char*>(hdr), h);
    size_t base = c.out.size();
    c.out.append(payload);
    for (size_t i = 0; i < n; i++) {
        c.out[base + i] = static_cast<char>(c.out[base + i] ^ key[i & 3]);
    }
}


void worker::flush(conn& c)
{
    if (c.fd < 0) {
        return;
    }
    for (int i = 0; i < 64 && c.out_off < c.out.size(); i++) {
        ssize_t n = send(c.fd, c.out.data() + c.out_off,
                         c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c.out_off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            break;
        }
        drop(c);
        return;
    }
    if (c.out_off == c.out.size()) {
        c.out.clear();
        c.out_off = 0;
        set_interest(c, false);
    } else {
        set_interest(c, true);
    }
}


void worker::on_event(conn& c, uint32_t ev)
{
    if (c.st == cstate::closed) {
        return;
    }
    if (c.st == cstate::connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
            drop(c);
            return;
        }
        if (!(ev & EPOLLOUT)) {
            return;
        }
        c.st = cstate::upgrading;
        std::string req = "GET " + request_path(o_, c.gidx, c.room)
            + " HTTP/1.1\r\nHost: " + o_.host + ":"
            + std::to_string(o_.port)
            + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n"
            + std::string(o_.deflate
                          ? "Sec-WebSocket-Extensions: permessage-deflate; "
                            "client_max_window_bits\r\n"
                          : "")
            + "\r\n";
        c.out = std::move(req);
        c.out_off = 0;
        flush(c);
        return;
    }
    if (ev & EPOLLOUT) {
        flush(c);
        if (c.st == cstate::closed) {
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        on_readable(c);
    }
}


void worker::on_readable(conn& c)
{
    for (int i = 0; i < 16 && c.fd >= 0; i++) {
        ssize_t n = recv(c.fd, buf_.data(), buf_.size(), 0);
        if (n == 0) {
            drop(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            drop(c);
            return;
        }
        auto len = static_cast<size_t>(n);
        if (c.st == cstate::upgrading) {
            c.in.append(buf_.data(), len);
            on_upgrade_data(c);
        } else if (c.in.empty()) {
            size_t used = parse_frames(c, buf_.data(), len);
            if (c.st != cstate::closed && used < len) {
                c.in.assign(buf_.data() + used, len - used);
            }
        } else {
            c.in.append(buf_.data(), len);
            size_t used = parse_frames(c, c.in.data(), c.in.size());
            if (c.st != cstate::closed) {
                c.in.erase(0, used);
            }
        }
        if (c.st == cstate::closed) {
            return;
        }
        if (!c.out.empty()) {
            flush(c);
        }
        if (len < buf_.size()) {
            return;
        }
    }
}


void worker::on_upgrade_data(conn& c)
{
    auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) {
        if (c.in.size() > 16384) {
            drop(c);
        }
        return;
    }
    if (c.in.compare(0, 12, "HTTP/1.1 101") != 0) {
        drop(c);
        return;
    }
    c.st = cstate::open;
    if (o_.deflate) {
        std::string head = c.in.substr(0, end);
        for (auto& ch : head) {
            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(
                ch)));
        }
        auto at = head.find("\r\nsec-websocket-extensions:");
        if (at != std::string::npos
            && head.find("permessage-deflate", at) != std::string::npos)
        {
            c.deflate = true;
            st_.deflate_conns++;
        }
    }
    if (o_.target == "nchan") {
        resolve(c, true);
    }
    std::string rest = c.in.substr(end + 4);
    c.in.clear();
    size_t used = parse_frames(c, rest.data(), rest.size());
    if (c.st != cstate::closed && used < rest.size()) {
        c.in = rest.substr(used);
    }
}


size_t worker::parse_frames(conn& c, const char* p, size_t n)
{
    size_t off = 0;
    while (c.st != cstate::closed && n - off >= 2) {
        auto b0 = static_cast<uint8_t>(p[off]);
        auto b1 = static_cast<uint8_t>(p[off + 1]);
        bool fin = b0 & 0x80;
        bool rsv1 = b0 & 0x40;
        uint8_t op = b0 & 0x0f;
        bool masked = b1 & 0x80;
        uint64_t len = b1 & 0x7f;
        size_t hdr = 2;
        if (len == 126) {
            if (n - off < 4) {
                break;
            }
            len = (static_cast<uint64_t>(static_cast<uint8_t>(p[off + 2]))
                   << 8)
                  | static_cast<uint8_t>(p[off + 3]);
            hdr = 4;
        } else if (len == 127) {
            if (n - off < 10) {
                break;
            }
            len = 0;
            for (int i = 0; i < 8; i++) {
                len = (len << 8) | static_cast<uint8_t>(p[off + 2 + i]);
            }
            hdr = 10;
        }
        if (masked || len > (64u << 20)) {
            drop(c);
            break;
        }
        if (n - off - hdr < len) {
            break;
        }
        std::string_view payload(p + off + hdr, static_cast<size_t>(len));
        off += hdr + static_cast<size_t>(len);
        uint64_t wire = hdr + len;
        switch (op) {
        case 0x0:
            c.frag.append(payload);
            c.frag_wire += wire;
            if (fin) {
                std::string m = std::move(c.frag);
                c.frag.clear();
                deliver(c, m, c.frag_rsv1, c.frag_wire);
            }
            break;
        case 0x1:
        case 0x2:
            if (fin) {
                deliver(c, payload, rsv1, wire);
            } else {
                c.frag.assign(payload);
                c.frag_op = op;
                c.frag_rsv1 = rsv1;
                c.frag_wire = wire;
            }
            break;
        case 0x8:
            queue_frame(c, 0x8, payload.substr(0, std::min<size_t>(
                                                        payload.size(), 2)));
            flush(c);
            drop(c);
            break;
        case 0x9:
            queue_frame(c, 0xA, payload);
            break;
        default:
            break;
        }
    }
    return off;
}


// A whole message: inflated first if it came compressed (RSV1); the
// server compresses every message on its own, so the stream is reset.
void worker::deliver(conn& c, std::string_view m, bool rsv1, uint64_t wire)
{
    wire_ = wire;
    compressed_ = rsv1;
    if (!rsv1) {
        on_message(c, m);
        return;
    }
    if (!c.deflate) {
        drop(c);
        return;
    }
    static const unsigned char tail[4] = {0x00, 0x00, 0xff, 0xff};
    inflateReset(&zin_);
    zbuf_.resize(std::max<size_t>(4 * m.size() + 256, 4096));
    size_t have = 0;
    int rc = Z_OK;
    for (int part = 0; part < 2 && rc != Z_STREAM_END; part++) {
        zin_.next_in = part == 0
            ? reinterpret_cast<Bytef*>(const_cast<char*>(m.data()))
            : const_cast<Bytef*>(tail);
        zin_.avail_in = static_cast<uInt>(part == 0 ? m.size() : 4);
        for (int guard = 0; guard < 64; guard++) {
            if (have == zbuf_.size()) {
                zbuf_.resize(2 * zbuf_.size());
            }
            zin_.next_out = reinterpret_cast<Bytef*>(zbuf_.data() + have);
            zin_.avail_out = static_cast<uInt>(zbuf_.size() - have);
            rc = inflate(&zin_, Z_SYNC_FLUSH);
            have = zbuf_.size() - zin_.avail_out;
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                break;
            }
            if (zin_.avail_in == 0 && zin_.avail_out != 0) {
                break;
            }
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
            st_.other_frames++;
            return;
        }
    }
    on_message(c, std::string_view(zbuf_.data(), have));
}


// A compressed message payload as permessage-deflate sends it.
bool worker::compress(std::string_view in, std::string& out)
{
    deflateReset(&zout_);
    out.resize(in.size() + 64);
    zout_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zout_.avail_in = static_cast<uInt>(in.size());
    zout_.next_out = reinterpret_cast<Bytef*>(out.data());
    zout_.avail_out = static_cast<uInt>(out.size());
    int rc = deflate(&zout_, Z_SYNC_FLUSH);
    size_t n = out.size() - zout_.avail_out;
    if (rc != Z_OK || zout_.avail_in != 0 || n < 4) {
        return false;
    }
    out.resize(n - 4);   // the trailing 00 00 ff ff
    return true;
}


// English-like words up to o_.payload bytes (letters, spaces and
// punctuation only: nothing to escape in JSON).
void worker::english_text(std::string& out)
{
    static const char* const words[] = {
        "the", "and", "you", "that", "was", "for", "are", "with", "his",
        "they", "this", "have", "from", "one", "had", "word", "but", "not",
        "what", "all", "were", "when", "your", "can", "said", "there",
        "use", "each", "which", "she", "how", "their", "will", "other",
        "about", "out", "many", "then", "them", "these", "some", "would",
        "make", "like", "into", "time", "has", "look", "two", "more",
        "write", "see", "number", "way", "could", "people", "than",
        "first", "water", "been", "call", "who", "now", "find", "long",
        "down", "day", "did", "get", "come", "made", "may", "part",
        "meeting", "tonight", "station", "weather", "tomorrow", "game",
        "ready", "team", "round", "score", "nice", "thanks", "everyone",
        "sorry", "late", "coffee", "train", "maybe", "sounds", "good",
    };
    constexpr size_t nwords = sizeof(words) / sizeof(words[0]);
    out.clear();
    bool start = true;
    while (out.size() < o_.payload) {
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        std::string w = words[rng_ % nwords];
        if (start) {
            w[0] = static_cast<char>(std::toupper(
                static_cast<unsigned char>(w[0])));
            start = false;
        }
        if (!out.empty()) {
            out += ' ';
        }
        out += w;
        if ((rng_ >> 20) % 9 == 0) {
            out += (rng_ >> 30) % 3 == 0 ? "?" : (rng_ >> 30) % 3 == 1
                                                   ? "." : ",";
            start = out.back() != ',';
        }
    }
    out.resize(o_.payload);
}


// Reads the unsigned integer that follows key (e.g. "\"bs\":") in m.
bool find_uint(std::string_view m, std::string_view key, uint64_t& out)
{
    auto at = m.find(key);
    if (at == std::string_view::npos) {
        return false;
    }
    size_t i = at + key.size();
    while (i < m.size() && m[i] == ' ') {
        i++;
    }
    if (i >= m.size() || m[i] < '0' || m[i] > '9') {
        return false;
    }
    uint64_t v = 0;
    for (int k = 0; k < 20 && i < m.size() && m[i] >= '0' && m[i] <= '9';
         k++, i++)
    {
        v = v * 10 + static_cast<uint64_t>(m[i] - '0');
    }
    out = v;
    return true;
}


void worker::on_message(conn& c, std::string_view m)
{
    last_frame_ns_ = now_ns();
    if (!c.resolved) {
        // rooms: the first frame must be the welcome
        if (m.find("\"welcome\"") == std::string_view::npos) {
            drop(c);
        } else {
            resolve(c, true);
        }
        return;
    }
    uint64_t seq = 0;
    uint64_t bt = 0;
    uint64_t br = 0;
    uint64_t bp = 0;
    if (!find_uint(m, "\"bs\":", seq) || !find_uint(m, "\"bt\":", bt)) {
        st_.other_frames++;
        return;
    }
    uint64_t now = now_ns();
    if (!sh_.fanout || !find_uint(m, "\"br\":", br) || br != c.room
        || !find_uint(m, "\"bp\":", bp) || bp >= sh_.pubs
        || seq >= sh_.msgs)
    {
        st_.misrouted++;
        return;
    }
    if (c.seen.empty()) {
        c.seen.assign(bits_ * sh_.pubs, 0);
        c.max_seq.assign(sh_.pubs, 0);
    }
    uint64_t& word = c.seen[bp * bits_ + seq / 64];
    uint64_t bit = 1ull << (seq % 64);
    if (word & bit) {
        st_.duplicates++;
        return;
    }
    word |= bit;
    st_.received++;
    st_.wire_bytes += wire_;
    st_.text_bytes += m.size();
    st_.inflated += compressed_ ? 1 : 0;
    // one sender's messages arrive in the order it sent them
    uint32_t& top = c.max_seq[bp];
    if (seq + 1 < top) {
        st_.out_of_order++;
    }
    top = std::max(top, static_cast<uint32_t>(seq + 1));
    c.got++;
    uint64_t lat = now > bt ? now - bt : 0;
    st_.hist[hist_index(lat / 1000)]++;
    st_.max_latency_ns = std::max(st_.max_latency_ns, lat);
    if (st_.first_recv_ns == 0) {
        st_.first_recv_ns = now;
    }
    st_.last_recv_ns = now;
    if (c.got == sh_.msgs * sh_.pubs && !c.done) {
        c.done = true;
        receivers_done_++;
    }
}


uint64_t worker::sched_ns(const conn& c, uint32_t seq) const
{
    // the R x N publishers are spread evenly over a period (sender k of
    // room r at (r N + k) / (R N) of it), so that they do not all fire in
    // the same millisecond
    double period = 1e9 / o_.rate;
    double senders = static_cast<double>(o_.rooms) * sh_.pubs;
    double phase = (static_cast<double>(c.room % o_.rooms) * sh_.pubs
                    + c.member) / senders;
    return go_ + static_cast<uint64_t>((seq + phase) * period);
}


void worker::send_due(uint64_t now)
{
    char head[160];
    for (uint32_t idx : pubs_) {
        conn& c = conns_[idx];
        if (c.st != cstate::open) {
            continue;
        }
        bool queued = false;
        while (c.next_seq < sh_.msgs) {
            uint64_t due = sched_ns(c, c.next_seq);
            if (due > now) {
                break;
            }
            uint64_t t = now_ns();
            st_.max_send_lag_ns = std::max(st_.max_send_lag_ns,
                                           t > due ? t - due : 0);
            int hl = std::snprintf(
                head, sizeof(head),
                "{\"type\":\"chat\",\"data\":{\"br\":%u,\"bp\":%u,"
                "\"bs\":%u,\"bt\":%" PRIu64 ",\"text\":\"",
                c.room, c.member, c.next_seq, t);
            std::string msg(head, static_cast<size_t>(hl));
            if (o_.english) {
                english_text(text_);
                msg += text_;
            } else {
                msg += pad_;
            }
            msg += "\"}}";
            if (c.deflate && compress(msg, zbuf_)) {
                queue_frame(c, 0x1 | 0x40, zbuf_);
            } else {
                queue_frame(c, 0x1, msg);
            }
            c.next_seq++;
            st_.sent++;
            queued = true;
        }
        if (queued) {
            flush(c);
        }
    }
}


void worker::poll_once(int timeout_ms)
{
    epoll_event evs[512];
    int n = epoll_wait(ep_, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t idx = evs[i].data.u32;
        if (idx < conns_.size()) {
            on_event(conns_[idx], evs[i].events);
        }
    }
}


void worker::connect_phase()
{
    uint64_t deadline = now_ns()
        + static_cast<uint64_t>(o_.connect_timeout * 1e9);
    size_t next = 0;
    for (uint64_t iter = 0; iter < 100000000ull; iter++) {
        while (next < conns_.size() && inflight_ < o_.inflight) {
            start_connect(conns_[next++]);
        }
        if (next == conns_.size() && inflight_ == 0) {
            break;
        }
        if (now_ns() > deadline) {
            for (auto& c : conns_) {
                if (!c.resolved) {
                    drop(c);
                }
            }
            break;
        }
        poll_once(10);
    }
}


void worker::run()
{
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    pad_.assign(o_.payload, 'x');
    if (o_.deflate && !zinit_) {
        if (inflateInit2(&zin_, -MAX_WBITS) != Z_OK
            || deflateInit2(&zout_, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                            -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        {
            std::fputs("loadgen: zlib init failed\n", stderr);
            std::exit(2);
        }
        zinit_ = true;
    }
    connect_phase();

    // let the join traffic (welcome, state, backfill) die down: ready once
    // no frame arrived for --quiet-ms, within the connect timeout
    uint64_t quiet = static_cast<uint64_t>(o_.quiet_ms) * 1000000ull;
    uint64_t limit = now_ns()
        + static_cast<uint64_t>(o_.connect_timeout * 1e9);
    while (now_ns() < limit && now_ns() - last_frame_ns_ < quiet) {
        poll_once(20);
    }

    for (size_t i = 0; i < conns_.size(); i++) {
        if (conns_[i].publisher) {
            pubs_.push_back(static_cast<uint32_t>(i));
        }
    }
    if (sh_.fanout) {
        for (auto& c : conns_) {
            if (c.st == cstate::open) {
                receivers_++;
            }
        }
        // every member of a room, the publishers included, expects every
        // message of every sender of the room (also those on failed
        // connections: loss)
        st_.expected = static_cast<uint64_t>(conns_.size()) * sh_.msgs
                       * sh_.pubs;
    }
    ctl_.ready++;

    // wait for the start signal, answering pings meanwhile
    while (ctl_.go_ns.load() == 0 && !ctl_.stop.load()
           && now_ns() < ctl_.hard_deadline_ns)
    {
        poll_once(20);
    }
    go_ = ctl_.go_ns.load();
    uint64_t cpu0 = cpu_ns_self();

    if (sh_.fanout && go_ != 0) {
        uint64_t send_end = go_
            + static_cast<uint64_t>(o_.duration * 1e9);
        for (;;) {
            uint64_t now = now_ns();
            if (now >= send_end || now >= ctl_.hard_deadline_ns) {
                break;
            }
            send_due(now);
            uint64_t next = send_end;
            for (uint32_t idx : pubs_) {
                const conn& c = conns_[idx];
                if (c.st == cstate::open && c.next_seq < sh_.msgs) {
                    next = std::min(next, sched_ns(c, c.next_seq));
                }
            }
            now = now_ns();
            int wait_ms = next > now
                ? static_cast<int>((next - now + 999999) / 1000000) : 0;
            poll_once(std::min(wait_ms, 50));
        }
        send_due(send_end);
        uint64_t drain_end = send_end
            + static_cast<uint64_t>(o_.drain * 1e9);
        while (receivers_done_ < receivers_ && now_ns() < drain_end
               && now_ns() < ctl_.hard_deadline_ns)
        {
            poll_once(10);
        }
    } else {
        while (!ctl_.stop.load() && now_ns() < ctl_.hard_deadline_ns) {
            poll_once(50);
        }
    }

    st_.cpu_ns = cpu_ns_self() - cpu0;  // whole process: summed once
    for (auto& c : conns_) {
        if (c.fd >= 0) {
            close(c.fd);
            c.fd = -1;
        }
    }
    close(ep_);
}


// ---------------------------------------------------------------- process

bool write_all(int fd, const void* p, size_t n)
{
    auto* b = static_cast<const char*>(p);
    for (int i = 0; i < 100000 && n > 0; i++) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        b += w;
        n -= static_cast<size_t>(w);
    }
    return n == 0;
}


// Reads exactly n bytes from fd before deadline (CLOCK_MONOTONIC ns).
bool read_until(int fd, void* p, size_t n, uint64_t deadline)
{
    auto* b = static_cast<char*>(p);
    for (int i = 0; i < 1000000 && n > 0; i++) {
        uint64_t now = now_ns();
        if (now >= deadline) {
            return false;
        }
        pollfd pfd{fd, POLLIN, 0};
        int rc = poll(&pfd, 1, static_cast<int>((deadline - now) / 1000000)
                                   + 1);
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            return false;
        }
        ssize_t r = read(fd, b, n);
        if (r <= 0) {
            return false;
        }
        b += r;
        n -= static_cast<size_t>(r);
    }
    return n == 0;
}


bool read_all(int fd, void* p, size_t n, int timeout_ms)
{
    return read_until(fd, p, n,
                      now_ns() + static_cast<uint64_t>(timeout_ms) * 1000000);
}


// Reads one '\n'-terminated line from fd within timeout_ms.
bool read_line(int fd, std::string& line, int timeout_ms)
{
    line.clear();
    uint64_t deadline = now_ns() + static_cast<uint64_t>(timeout_ms) * 1000000;
    for (int i = 0; i < 4096; i++) {
        char ch = 0;
        if (!read_until(fd, &ch, 1, deadline)) {
            return false;
        }
        if (ch == '\n') {
            return true;
        }
        line += ch;
    }
    return false;
}


// One worker process: --threads epoll threads.  Talks to the controller
// over two pipes: "ready OK FAILED\n" up, "go NS\n" and "stop\n" down,
// then the merged stats up as raw bytes.
int worker_process(const options& o, const shape& sh, uint32_t proc,
                   int up, int down)
{
    proc_ctl ctl;
    double budget = o.connect_timeout + o.settle + o.duration + o.drain
                    + 120.0;
    ctl.hard_deadline_ns = now_ns() + static_cast<uint64_t>(budget * 1e9);

    std::vector<std::unique_ptr<worker>> ws;
    for (uint32_t t = 0; t < o.threads; t++) {
        ws.push_back(std::make_unique<worker>(o, sh, ctl,
                                              proc * o.threads + t));
    }
    std::vector<std::thread> th;
    for (auto& w : ws) {
        th.emplace_back([&w] { w->run(); });
    }
    while (ctl.ready.load() < o.threads && now_ns() < ctl.hard_deadline_ns) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    uint64_t ok = 0;
    uint64_t failed = 0;
    for (auto& w : ws) {
        ok += w->st_.conns_ok;
        failed += w->st_.conns_failed;
    }
    char line[128];
    int n = std::snprintf(line, sizeof(line), "ready %" PRIu64 " %" PRIu64
                          "\n", ok, failed);
    write_all(up, line, static_cast<size_t>(n));

    std::string cmd;
    int wait_ms = static_cast<int>(budget * 1000);
    if (read_line(down, cmd, wait_ms) && cmd.rfind("go ", 0) == 0) {
        ctl.go_ns = std::strtoull(cmd.c_str() + 3, nullptr, 10);
        if (!sh.fanout) {
            read_line(down, cmd, wait_ms);
        }
    }
    ctl.stop = true;
    for (auto& t : th) {
        t.join();
    }
    auto total = std::make_unique<stats>();
    for (auto& w : ws) {
        total->merge(w->st_);
    }
    // every thread measured the process CPU; keep one copy
    total->cpu_ns = ws.empty() ? 0 : ws.front()->st_.cpu_ns;
    for (auto& w : ws) {
        total->cpu_ns = std::max(total->cpu_ns, w->st_.cpu_ns);
    }
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    total->maxrss_kb = static_cast<uint64_t>(ru.ru_maxrss);
    write_all(up, total.get(), sizeof(stats));
    return 0;
}


// ---------------------------------------------------------------- /proc

struct proc_sample {
    uint64_t ticks = 0;    // utime + stime
    uint64_t rss_kb = 0;
    uint64_t pss_kb = 0;
    bool alive = false;
};


proc_sample read_proc(int pid, bool with_pss)
{
    proc_sample s;
    char path[64];
    std::snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    std::ifstream f(path);
    std::string all;
    if (!std::getline(f, all)) {
        return s;
    }
    auto rp = all.rfind(')');
    if (rp == std::string::npos) {
        return s;
    }
    std::stringstream ss(all.substr(rp + 2));
    std::string field;
    // fields after the comm: state(3) ... utime(14) stime(15) ... rss(24)
    std::vector<std::string> fs;
    while (ss >> field && fs.size() < 24) {
        fs.push_back(field);
    }
    if (fs.size() < 22) {
        return s;
    }
    s.ticks = std::strtoull(fs[11].c_str(), nullptr, 10)
              + std::strtoull(fs[12].c_str(), nullptr, 10);
    s.rss_kb = std::strtoull(fs[21].c_str(), nullptr, 10)
               * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) / 1024;
    s.alive = fs[0] != "Z" && fs[0] != "X";
    if (with_pss) {
        std::snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pid);
        std::ifstream sm(path);
        std::string line;
        while (std::getline(sm, line)) {
            if (line.rfind("Pss:", 0) == 0) {
                s.pss_kb = std::strtoull(line.c_str() + 4, nullptr, 10);
                break;
            }
        }
    }
    return s;
}


struct sampler {
    std::vector<pid_ref> pids;
    std::vector<uint64_t> peak_rss_kb;
    std::mutex mu;
    std::atomic<bool> stop{false};

    std::vector<proc_sample> mark()
    {
        std::vector<proc_sample> out;
        std::lock_guard<std::mutex> lk(mu);
        for (size_t i = 0; i < pids.size(); i++) {
            out.push_back(read_proc(pids[i].pid, true));
            peak_rss_kb[i] = std::max(peak_rss_kb[i], out.back().rss_kb);
        }
        return out;
    }

    void loop()
    {
        // bounded: at most a day of 1-second samples
        for (int i = 0; i < 86400 && !stop.load(); i++) {
            {
                std::lock_guard<std::mutex> lk(mu);
                for (size_t k = 0; k < pids.size(); k++) {
                    auto s = read_proc(pids[k].pid, false);
                    peak_rss_kb[k] = std::max(peak_rss_kb[k], s.rss_kb);
                }
            }
            for (int k = 0; k < 20 && !stop.load(); k++) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        }
    }
};


std::string jstr(const std::string& s)
{
    std::string o = "\"";
    for (char ch : s) {
        if (ch == '"' || ch == '\\') {
            o += '\\';
        }
        o += ch;
    }
    return o + "\"";
}


std::string fmt(double v, int prec = 3)
{
    char b[64];
    std::snprintf(b, sizeof(b), "%.*f", prec, v);
    return b;
}


}  // namespace


int main(int argc, char** argv)
{
    options o;
    if (!parse_options(argc, argv, o)) {
        usage();
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);

    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    shape sh;
    sh.fanout = o.workload == "fanout";
    sh.workers = o.procs * o.threads;
    uint64_t total = sh.fanout ? static_cast<uint64_t>(o.rooms) * o.members
                               : o.conns;
    if (total > 4000000) {
        std::fprintf(stderr, "loadgen: too many connections\n");
        return 2;
    }
    sh.total = static_cast<uint32_t>(total);
    sh.msgs = sh.fanout ? static_cast<uint64_t>(std::floor(o.rate
                                                           * o.duration))
                        : 0;
    sh.pubs = sh.fanout ? o.publishers : 0;
    // the receivers' seen-bits: one per message of every sender, per
    // connection
    double seen_bytes = static_cast<double>(total) * sh.pubs
                        * static_cast<double>((sh.msgs + 63) / 64) * 8;
    if (seen_bytes > 2e9) {
        std::fprintf(stderr, "loadgen: %.1f GB to track every message of "
                     "every sender: fewer publishers or a shorter run\n",
                     seen_bytes / 1e9);
        return 2;
    }
    uint64_t per_proc = (total + o.procs - 1) / o.procs;
    if (per_proc + 64 > rl.rlim_cur) {
        std::fprintf(stderr,
                     "loadgen: %" PRIu64 " connections per process exceed "
                     "the open-files limit %llu: use --procs %" PRIu64 "\n",
                     per_proc, static_cast<unsigned long long>(rl.rlim_cur),
                     (total + rl.rlim_cur - 1000) / (rl.rlim_cur - 1000));
        return 2;
    }

    sampler smp;
    smp.pids = o.pids;
    smp.peak_rss_kb.assign(o.pids.size(), 0);
    auto base = smp.mark();
    std::thread smp_thread([&smp] { smp.loop(); });

    struct child {
        int pid = -1;
        int up = -1;
        int down = -1;
    };
    std::vector<child> kids;
    for (uint32_t p = 0; p < o.procs; p++) {
        int up[2];
        int down[2];
        if (pipe(up) != 0 || pipe(down) != 0) {
            std::perror("loadgen: pipe");
            return 1;
        }
        std::fflush(nullptr);
        pid_t pid = fork();
        if (pid < 0) {
            std::perror("loadgen: fork");
            return 1;
        }
        if (pid == 0) {
            close(up[0]);
            close(down[1]);
            for (auto& k : kids) {
                close(k.up);
                close(k.down);
            }
            int rc = worker_process(o, sh, p, up[1], down[0]);
            std::fflush(nullptr);
            _exit(rc);
        }
        close(up[1]);
        close(down[0]);
        kids.push_back({pid, up[0], down[1]});
    }

    // all connected?
    uint64_t ok = 0;
    uint64_t failed = 0;
    int ready_ms = static_cast<int>((o.connect_timeout + 30) * 1000);
    bool all_ready = true;
    uint64_t t_connect0 = now_ns();
    for (auto& k : kids) {
        std::string line;
        if (!read_line(k.up, line, ready_ms)) {
            all_ready = false;
            continue;
        }
        unsigned long long a = 0;
        unsigned long long b = 0;
        if (std::sscanf(line.c_str(), "ready %llu %llu", &a, &b) == 2) {
            ok += a;
            failed += b;
        }
    }
    double connect_s = (now_ns() - t_connect0) / 1e9;
    if (!o.quiet) {
        std::fprintf(stderr, "loadgen: %" PRIu64 " connected, %" PRIu64
                     " failed in %.1f s\n", ok, failed, connect_s);
    }
    sleep_until_ns(now_ns() + static_cast<uint64_t>(o.settle * 1e9));
    auto opened = smp.mark();
    if (!o.sampled.empty()) {
        // a probe of the caller's may join and leave now (bench/compare)
        if (FILE* f = std::fopen(o.sampled.c_str(), "w")) {
            std::fclose(f);
        }
    }

    uint64_t go = now_ns() + 100000000ull;
    std::string gol = "go " + std::to_string(go) + "\n";
    for (auto& k : kids) {
        write_all(k.down, gol.data(), gol.size());
    }
    sleep_until_ns(go);
    auto started = smp.mark();
    auto kid_ticks = [&kids] {
        uint64_t t = 0;
        for (auto& k : kids) {
            t += read_proc(k.pid, false).ticks;
        }
        return t;
    };
    uint64_t self_started = kid_ticks();
    // the sending window alone, [go, go + D]: the CPU shares of the
    // processes while the load is on, before any drain
    std::vector<proc_sample> sent;
    uint64_t self_sent = self_started;
    std::vector<proc_sample> held;
    if (sh.fanout) {
        sleep_until_ns(go + static_cast<uint64_t>(o.duration * 1e9));
        sent = smp.mark();
        self_sent = kid_ticks();
    } else {
        sleep_until_ns(go + static_cast<uint64_t>(o.duration * 1e9));
        held = smp.mark();
        for (auto& k : kids) {
            write_all(k.down, "stop\n", 5);
        }
    }

    auto st = std::make_unique<stats>();
    bool all_reported = all_ready;
    int stats_ms = static_cast<int>((o.duration + o.drain + 60) * 1000);
    for (auto& k : kids) {
        auto s = std::make_unique<stats>();
        if (read_all(k.up, s.get(), sizeof(stats), stats_ms)) {
            st->merge(*s);
        } else {
            all_reported = false;
            kill(k.pid, SIGKILL);
        }
    }
    uint64_t end = now_ns();
    auto ended = smp.mark();
    smp.stop = true;
    smp_thread.join();
    for (auto& k : kids) {
        int status = 0;
        waitpid(k.pid, &status, 0);
        close(k.up);
        close(k.down);
    }

    // ------------------------------------------------------------ report
    double tck = static_cast<double>(sysconf(_SC_CLK_TCK));
    auto cpu_between = [tck](uint64_t from, uint64_t to) {
        return to >= from ? (to - from) / tck : 0.0;
    };
    double window_s = (end - go) / 1e9;
    uint64_t rss_base = 0;
    uint64_t rss_open = 0;
    uint64_t pss_base = 0;
    uint64_t pss_open = 0;
    uint64_t rss_peak = 0;
    double cpu_s = 0;
    std::map<std::string, double> cpu_by;
    std::map<std::string, double> send_cpu_by;
    std::map<std::string, uint64_t> rss_by;
    for (size_t i = 0; i < o.pids.size(); i++) {
        rss_base += base[i].rss_kb;
        pss_base += base[i].pss_kb;
        rss_open += opened[i].rss_kb;
        pss_open += opened[i].pss_kb;
        rss_peak += smp.peak_rss_kb[i];
        const auto& e = sh.fanout ? ended[i] : held[i];
        double c = cpu_between(started[i].ticks, e.ticks);
        cpu_s += c;
        cpu_by[o.pids[i].label] += c;
        if (sh.fanout) {
            send_cpu_by[o.pids[i].label] += cpu_between(started[i].ticks,
                                                        sent[i].ticks);
        }
        rss_by[o.pids[i].label] += smp.peak_rss_kb[i];
    }
    uint64_t lost = st->expected > st->received
                    ? st->expected - st->received : 0;
    double deliver_s = st->last_recv_ns > go ? (st->last_recv_ns - go) / 1e9
                                             : 0;
    double rate_s = deliver_s > 0 ? st->received / deliver_s : 0;
    double us_per = st->received ? cpu_s * 1e6 / st->received : 0;
    double self_cpu = st->cpu_ns / 1e9;
    double self_us_per = st->received ? self_cpu * 1e6 / st->received : 0;
    double rss_per_conn = ok ? (static_cast<double>(rss_open) - rss_base)
                               * 1024.0 / ok : 0;
    double pss_per_conn = ok ? (static_cast<double>(pss_open) - pss_base)
                               * 1024.0 / ok : 0;

    std::string j = "{\"bench\":\"loadgen\",\"target\":" + jstr(o.target)
        + ",\"workload\":" + jstr(o.workload)
        + ",\"rooms\":" + std::to_string(sh.fanout ? o.rooms : 0)
        + ",\"members\":" + std::to_string(sh.fanout ? o.members : 0)
        + ",\"publishers\":" + std::to_string(sh.pubs)
        + ",\"rate\":" + fmt(sh.fanout ? o.rate : 0)
        + ",\"duration\":" + fmt(o.duration)
        + ",\"procs\":" + std::to_string(o.procs)
        + ",\"threads\":" + std::to_string(o.threads)
        + ",\"payload\":" + std::to_string(o.payload)
        + ",\"text\":" + jstr(o.english ? "english" : "pad")
        + ",\"deflate\":" + (o.deflate ? "true" : "false")
        + ",\"deflate_conns\":" + std::to_string(st->deflate_conns)
        + ",\"inflated\":" + std::to_string(st->inflated)
        + ",\"wire_bytes_per_delivery\":"
        + fmt(st->received ? static_cast<double>(st->wire_bytes)
                             / st->received : 0, 1)
        + ",\"text_bytes_per_delivery\":"
        + fmt(st->received ? static_cast<double>(st->text_bytes)
                             / st->received : 0, 1)
        + ",\"tag\":" + jstr(o.tag)
        + ",\"complete\":" + (all_reported ? "true" : "false")
        + ",\"conns\":" + std::to_string(sh.total)
        + ",\"conns_ok\":" + std::to_string(ok)
        + ",\"conns_failed\":" + std::to_string(failed)
        + ",\"conns_closed\":" + std::to_string(st->conns_closed)
        + ",\"connect_s\":" + fmt(connect_s)
        + ",\"sent\":" + std::to_string(st->sent)
        + ",\"published_per_s\":" + fmt(st->sent / o.duration, 1)
        + ",\"expected\":" + std::to_string(st->expected)
        + ",\"received\":" + std::to_string(st->received)
        + ",\"lost\":" + std::to_string(lost)
        + ",\"duplicates\":" + std::to_string(st->duplicates)
        + ",\"out_of_order\":" + std::to_string(st->out_of_order)
        + ",\"misrouted\":" + std::to_string(st->misrouted)
        + ",\"other_frames\":" + std::to_string(st->other_frames)
        + ",\"max_send_lag_ms\":" + fmt(st->max_send_lag_ns / 1e6)
        + ",\"latency_ms\":{\"p50\":" + fmt(st->quantile_ms(0.5))
        + ",\"p90\":" + fmt(st->quantile_ms(0.9))
        + ",\"p99\":" + fmt(st->quantile_ms(0.99))
        + ",\"p999\":" + fmt(st->quantile_ms(0.999))
        + ",\"max\":" + fmt(st->max_latency_ns / 1e6) + "}"
        + ",\"delivered_per_s\":" + fmt(rate_s, 1)
        + ",\"window_s\":" + fmt(window_s)
        + ",\"server_cpu_s\":" + fmt(cpu_s)
        + ",\"server_cpu_us_per_delivery\":" + fmt(us_per)
        + ",\"server_rss_base_kb\":" + std::to_string(rss_base)
        + ",\"server_rss_open_kb\":" + std::to_string(rss_open)
        + ",\"server_rss_peak_kb\":" + std::to_string(rss_peak)
        + ",\"server_pss_base_kb\":" + std::to_string(pss_base)
        + ",\"server_pss_open_kb\":" + std::to_string(pss_open)
        + ",\"server_rss_bytes_per_conn\":" + fmt(rss_per_conn, 1)
        + ",\"server_pss_bytes_per_conn\":" + fmt(pss_per_conn, 1)
        + ",\"self_cpu_s\":" + fmt(self_cpu)
        + ",\"self_cpu_send_s\":" + fmt(cpu_between(self_started,
                                                     self_sent))
        + ",\"self_cpu_us_per_delivery\":" + fmt(self_us_per)
        + ",\"self_rss_peak_kb\":" + std::to_string(st->maxrss_kb)
        + ",\"servers\":[";
    for (size_t i = 0; i < o.pids.size(); i++) {
        const auto& e = sh.fanout ? ended[i] : held[i];
        double c = cpu_between(started[i].ticks, e.ticks);
        double cs = sh.fanout ? cpu_between(started[i].ticks, sent[i].ticks)
                              : c;
        j += std::string(i ? "," : "") + "{\"label\":"
             + jstr(o.pids[i].label) + ",\"pid\":"
             + std::to_string(o.pids[i].pid) + ",\"cpu_s\":" + fmt(c)
             + ",\"cpu_send_s\":" + fmt(cs)
             + ",\"rss_base_kb\":" + std::to_string(base[i].rss_kb)
             + ",\"rss_open_kb\":" + std::to_string(opened[i].rss_kb)
             + ",\"rss_peak_kb\":" + std::to_string(smp.peak_rss_kb[i])
             + ",\"alive\":" + (e.alive ? "true" : "false") + "}";
    }
    j += "]}";

    if (!o.quiet) {
        std::printf("target %s, workload %s, %s\n", o.target.c_str(),
                    o.workload.c_str(),
                    sh.fanout
                        ? (std::to_string(o.rooms) + " rooms x "
                           + std::to_string(o.members) + " members, "
                           + std::to_string(sh.pubs) + " publishing "
                           + fmt(o.rate, 1) + " msg/s each, "
                           + fmt(o.duration, 1) + " s").c_str()
                        : (std::to_string(o.conns) + " connections held "
                           + fmt(o.duration, 1) + " s").c_str());
        std::printf("  %-28s %" PRIu64 " ok, %" PRIu64 " failed, %" PRIu64
                    " closed by server (%.1f s to connect)\n",
                    "connections", ok, failed, st->conns_closed, connect_s);
        if (sh.fanout) {
            std::printf("  %-28s %" PRIu64 " sent, %" PRIu64
                        " expected, %" PRIu64 " received, %" PRIu64
                        " lost\n", "messages / deliveries", st->sent,
                        st->expected, st->received, lost);
            std::printf("  %-28s %" PRIu64 " duplicates, %" PRIu64
                        " out of order, %" PRIu64 " misrouted\n",
                        "ordering", st->duplicates, st->out_of_order,
                        st->misrouted);
            std::printf("  %-28s p50 %s  p90 %s  p99 %s  p99.9 %s  max %s"
                        "\n", "latency ms",
                        fmt(st->quantile_ms(0.5)).c_str(),
                        fmt(st->quantile_ms(0.9)).c_str(),
                        fmt(st->quantile_ms(0.99)).c_str(),
                        fmt(st->quantile_ms(0.999)).c_str(),
                        fmt(st->max_latency_ns / 1e6).c_str());
            std::printf("  %-28s %.1f (max send lag %.3f ms)\n",
                        "delivered msg/s", rate_s,
                        st->max_send_lag_ns / 1e6);
            std::printf("  %-28s %.3f s (%.3f us/delivery)\n",
                        "server CPU", cpu_s, us_per);
        } else {
            std::printf("  %-28s %.3f s over the hold\n", "server CPU",
                        cpu_s);
        }
        std::printf("  %-28s base %" PRIu64 " KiB, open %" PRIu64
                    " KiB, peak %" PRIu64 " KiB; %.0f B/conn (PSS %.0f)\n",
                    "server RSS", rss_base, rss_open, rss_peak,
                    rss_per_conn, pss_per_conn);
        for (auto& [label, c] : cpu_by) {
            std::printf("    %-26s cpu %.3f s (%.0f%% of a core while "
                        "sending), peak RSS %" PRIu64 " KiB\n",
                        label.c_str(), c,
                        100 * send_cpu_by[label] / o.duration,
                        rss_by[label]);
        }
        std::printf("  %-28s cpu %.3f s (%.3f us/delivery), peak RSS %"
                    PRIu64 " KiB\n", "loadgen (all procs)", self_cpu,
                    self_us_per, st->maxrss_kb);
    }
    std::printf("%s\n", j.c_str());
    if (!o.json_out.empty()) {
        std::ofstream f(o.json_out, std::ios::app);
        f << j << "\n";
    }
    if (!all_reported) {
        return 1;
    }
    return 0;
}
