// floor: the physical floor of WebSocket fan-out on this machine.
//
// A bare epoll server that speaks just enough of ngx_rooms' client
// protocol for the load generator's rooms target, with no rooms logic:
// no sidecar, no Redis, no JSON parser, no history, no presence, no
// limits.  What it does:
//
//   - accepts GET /anything?room=R&name=N with a WebSocket upgrade
//     (Sec-WebSocket-Accept computed from the key), joins the connection
//     to room R (the query value as is), and sends a welcome as the first
//     frame;
//   - for every text message a client sends, writes one frame to every
//     member of its room, the sender included, one send() per delivery
//     (as an nginx worker sends one frame per member): the message as
//     ngx_rooms relays it, i.e. with "from" and "from_id" added to its
//     data and "id" and "ts" after it, so that the frames have the same
//     size on the wire; answers pings and closes.
//
// --threads T epoll threads, each with its own SO_REUSEPORT listener (the
// kernel spreads the connections, as over nginx workers); a message is
// written by the thread that read it, to members of any thread.  A room's
// ids are assigned atomically but two senders' messages may reach two
// members in different orders: per-sender order holds, per-room order is
// not kept (ngx_rooms keeps it; here it would cost the lock that is the
// point of leaving it out).  A yardstick for docs/benchmarks.md, not a
// server.
//
//   floor --port PORT [--host 127.0.0.1] [--threads 1]

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

// ---------------------------------------------------------------- SHA-1

// FIPS 180-4 SHA-1 of a short message (the handshake key + GUID).
std::array<uint8_t, 20> sha1(std::string_view msg)
{
    uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u,
                     0xc3d2e1f0u};
    std::string m(msg);
    uint64_t bits = static_cast<uint64_t>(msg.size()) * 8;
    m += '\x80';
    while (m.size() % 64 != 56) {
        m += '\0';
    }
    for (int i = 7; i >= 0; i--) {
        m += static_cast<char>(bits >> (8 * i));
    }
    auto rol = [](uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
    for (size_t blk = 0; blk < m.size(); blk += 64) {
        uint32_t w[80];
        for (int t = 0; t < 16; t++) {
            const auto* p = reinterpret_cast<const uint8_t*>(m.data() + blk
                                                             + 4 * t);
            w[t] = (static_cast<uint32_t>(p[0]) << 24)
                   | (static_cast<uint32_t>(p[1]) << 16)
                   | (static_cast<uint32_t>(p[2]) << 8) | p[3];
        }
        for (int t = 16; t < 80; t++) {
            w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int t = 0; t < 80; t++) {
            uint32_t f;
            uint32_t k;
            if (t < 20) {
                f = (b & c) | (~b & d);
                k = 0x5a827999u;
            } else if (t < 40) {
                f = b ^ c ^ d;
                k = 0x6ed9eba1u;
            } else if (t < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8f1bbcdcu;
            } else {
                f = b ^ c ^ d;
                k = 0xca62c1d6u;
            }
            uint32_t tmp = rol(a, 5) + f + e + k + w[t];
            e = d;
            d = c;
            c = rol(b, 30);
            b = a;
            a = tmp;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    std::array<uint8_t, 20> out{};
    for (int i = 0; i < 20; i++) {
        out[i] = static_cast<uint8_t>(h[i / 4] >> (24 - 8 * (i % 4)));
    }
    return out;
}


std::string base64(const uint8_t* p, size_t n)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = static_cast<uint32_t>(p[i]) << 16;
        if (i + 1 < n) {
            v |= static_cast<uint32_t>(p[i + 1]) << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        out += abc[(v >> 18) & 63];
        out += abc[(v >> 12) & 63];
        out += i + 1 < n ? abc[(v >> 6) & 63] : '=';
        out += i + 2 < n ? abc[v & 63] : '=';
    }
    return out;
}


// RFC 6455 4.2.2: base64(SHA-1(key + GUID))
std::string accept_key(std::string_view key)
{
    std::string s(key);
    s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    auto d = sha1(s);
    return base64(d.data(), d.size());
}


// ---------------------------------------------------------------- rooms

struct room;


struct conn {
    int fd = -1;
    int ep = -1;                  // the owning thread's epoll
    bool open = false;            // upgraded
    bool dead = false;            // closed, freed after the event batch
    room* rm = nullptr;
    std::string name;
    std::string id;
    std::string in;
    std::mutex out_mu;            // out is written by any thread
    std::string out;
    bool want_out = false;
};


struct room {
    std::shared_mutex mu;         // members: shared to deliver
    std::vector<conn*> members;
    std::atomic<uint64_t> last_id{0};
};


std::mutex registry_mu;
std::unordered_map<std::string, std::unique_ptr<room>> registry;
std::atomic<uint32_t> conn_count{0};
std::string id_token;


std::string server_frame(uint8_t op, std::string_view payload)
{
    std::string f;
    size_t n = payload.size();
    f += static_cast<char>(0x80 | op);
    if (n < 126) {
        f += static_cast<char>(n);
    } else if (n < 65536) {
        f += static_cast<char>(126);
        f += static_cast<char>(n >> 8);
        f += static_cast<char>(n);
    } else {
        f += static_cast<char>(127);
        for (int i = 7; i >= 0; i--) {
            f += static_cast<char>(static_cast<uint64_t>(n) >> (8 * i));
        }
    }
    f += payload;
    return f;
}


// One delivery: one send(), the rest (if the socket is full) queued for
// the owning thread's EPOLLOUT.
void deliver(conn& c, std::string_view frame)
{
    std::lock_guard<std::mutex> lk(c.out_mu);
    size_t done = 0;
    if (c.out.empty()) {
        ssize_t n = send(c.fd, frame.data(), frame.size(),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            done = static_cast<size_t>(n);
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return;  // the owner sees the error on its next read
        }
    }
    if (done == frame.size()) {
        return;
    }
    c.out.append(frame.substr(done));
    if (!c.want_out) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
        ev.data.ptr = &c;
        epoll_ctl(c.ep, EPOLL_CTL_MOD, c.fd, &ev);
        c.want_out = true;
    }
}


void flush(conn& c)
{
    std::lock_guard<std::mutex> lk(c.out_mu);
    while (!c.out.empty()) {
        ssize_t n = send(c.fd, c.out.data(), c.out.size(),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0) {
            return;
        }
        c.out.erase(0, static_cast<size_t>(n));
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.ptr = &c;
    epoll_ctl(c.ep, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = false;
}


// The message as ngx_rooms relays it: {"type":..,"data":{..,"from":NAME,
// "from_id":ID},"id":N,"ts":MS}; anything not ending in "}}" as is.
void broadcast(conn& from, std::string_view msg)
{
    room& r = *from.rm;
    std::string relayed(msg);
    if (msg.size() >= 2 && msg.substr(msg.size() - 2) == "}}") {
        timespec ts{};
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = static_cast<uint64_t>(ts.tv_sec) * 1000
                      + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
        relayed.resize(msg.size() - 2);
        relayed += ",\"from\":\"" + from.name + "\",\"from_id\":\""
                   + from.id + "\"},\"id\":" + std::to_string(++r.last_id)
                   + ",\"ts\":" + std::to_string(ms) + "}";
    }
    std::string frame = server_frame(0x1, relayed);
    std::shared_lock<std::shared_mutex> lk(r.mu);
    for (conn* m : r.members) {
        deliver(*m, frame);
    }
}


room& find_room(const std::string& code)
{
    std::lock_guard<std::mutex> lk(registry_mu);
    auto& slot = registry[code];
    if (!slot) {
        slot = std::make_unique<room>();
    }
    return *slot;
}


void join(conn& c, room& r)
{
    std::unique_lock<std::shared_mutex> lk(r.mu);
    r.members.push_back(&c);
    c.rm = &r;
}


void leave(conn& c)
{
    if (c.rm == nullptr) {
        return;
    }
    std::unique_lock<std::shared_mutex> lk(c.rm->mu);
    auto& v = c.rm->members;
    for (size_t i = 0; i < v.size(); i++) {
        if (v[i] == &c) {
            v[i] = v.back();
            v.pop_back();
            break;
        }
    }
    c.rm = nullptr;
}


// ---------------------------------------------------------------- HTTP

// The value of query parameter key in the request target, as is.
std::string query_arg(std::string_view target, std::string_view key)
{
    auto q = target.find('?');
    while (q != std::string_view::npos) {
        std::string_view rest = target.substr(q + 1);
        if (rest.substr(0, key.size()) == key && rest.size() > key.size()
            && rest[key.size()] == '=')
        {
            rest = rest.substr(key.size() + 1);
            return std::string(rest.substr(0, rest.find('&')));
        }
        q = target.find('&', q + 1);
    }
    return "";
}


std::string header(std::string_view head, std::string_view name)
{
    size_t at = 0;
    while ((at = head.find("\r\n", at)) != std::string_view::npos) {
        at += 2;
        if (head.size() - at > name.size()
            && strncasecmp(head.data() + at, name.data(), name.size()) == 0
            && head[at + name.size()] == ':')
        {
            std::string_view v = head.substr(at + name.size() + 1);
            v = v.substr(0, v.find("\r\n"));
            while (!v.empty() && v.front() == ' ') {
                v.remove_prefix(1);
            }
            return std::string(v);
        }
    }
    return "";
}


// false: close the connection
bool on_upgrade(conn& c)
{
    auto end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) {
        return c.in.size() < 8192;
    }
    std::string_view head(c.in.data(), end + 2);
    std::string_view target;
    if (head.substr(0, 4) == "GET ") {
        target = head.substr(4, head.find(' ', 4) - 4);
    }
    std::string key = header(head, "Sec-WebSocket-Key");
    std::string code = query_arg(target, "room");
    c.name = query_arg(target, "name");
    if (key.empty() || code.empty()) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\n"
                                  "Content-Length: 0\r\n\r\n";
        send(c.fd, bad, sizeof(bad) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        return false;
    }
    c.in.erase(0, end + 4);
    char id[64];
    std::snprintf(id, sizeof(id), "%s.%d.%u", id_token.c_str(), getpid(),
                  ++conn_count);
    c.id = id;
    room& r = find_room(code);
    std::string welcome = "{\"type\":\"welcome\",\"data\":{\"room\":\""
        + code + "\",\"you\":{\"id\":\"" + c.id + "\",\"name\":\"" + c.name
        + "\"},\"last_id\":" + std::to_string(r.last_id.load()) + "}}";
    deliver(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: "
               + accept_key(key) + "\r\n\r\n" + server_frame(0x1, welcome));
    // a member once the welcome is out: broadcasts come after it
    join(c, r);
    c.open = true;
    return true;
}


// ---------------------------------------------------------------- frames

// Consumes the whole client frames in c.in; false: close.
bool on_frames(conn& c)
{
    size_t off = 0;
    std::string payload;
    bool ok = true;
    while (ok && c.in.size() - off >= 2) {
        const auto* p = reinterpret_cast<const uint8_t*>(c.in.data() + off);
        size_t avail = c.in.size() - off;
        bool fin = p[0] & 0x80;
        uint8_t op = p[0] & 0x0f;
        uint64_t len = p[1] & 0x7f;
        size_t hdr = 2;
        if (!(p[1] & 0x80)) {
            return false;  // client frames are masked
        }
        if (len == 126) {
            if (avail < 4) {
                break;
            }
            len = (static_cast<uint64_t>(p[2]) << 8) | p[3];
            hdr = 4;
        } else if (len == 127) {
            if (avail < 10) {
                break;
            }
            len = 0;
            for (int i = 0; i < 8; i++) {
                len = (len << 8) | p[2 + i];
            }
            hdr = 10;
        }
        if (len > (1u << 20)) {
            return false;
        }
        if (avail < hdr + 4 + len) {
            break;
        }
        const uint8_t* key = p + hdr;
        payload.assign(reinterpret_cast<const char*>(key + 4),
                       static_cast<size_t>(len));
        for (size_t i = 0; i < payload.size(); i++) {
            payload[i] = static_cast<char>(payload[i] ^ key[i & 3]);
        }
        off += hdr + 4 + static_cast<size_t>(len);
        if (!fin) {
            return false;  // no fragments: the load generator sends none
        }
        switch (op) {
        case 0x1:
            broadcast(c, payload);
            break;
        case 0x8:
            deliver(c, server_frame(0x8, payload.substr(0, 2)));
            ok = false;
            break;
        case 0x9:
            deliver(c, server_frame(0xA, payload));
            break;
        case 0xA:
            break;
        default:
            return false;
        }
    }
    c.in.erase(0, off);
    return ok;
}


// ---------------------------------------------------------------- threads

int listen_on(const std::string& host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1
        || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0
        || listen(fd, 4096) != 0)
    {
        close(fd);
        return -1;
    }
    return fd;
}


// A thread's connections: owned here, freed once closed and out of the
// event batch that may still name them.
using conn_set = std::unordered_map<conn*, std::unique_ptr<conn>>;


void close_conn(conn& c, std::vector<conn*>& dead)
{
    if (c.dead) {
        return;
    }
    leave(c);  // no other thread can reach c after this
    close(c.fd);
    c.dead = true;
    dead.push_back(&c);
}


void on_readable(conn& c, std::vector<char>& buf, std::vector<conn*>& dead)
{
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c.fd, buf.data(), buf.size(), 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        if (n <= 0) {
            close_conn(c, dead);
            return;
        }
        c.in.append(buf.data(), static_cast<size_t>(n));
        bool was_open = c.open;
        bool ok = was_open ? on_frames(c) : on_upgrade(c);
        if (ok && !was_open && c.open && !c.in.empty()) {
            ok = on_frames(c);  // frames that came with the request
        }
        if (!ok) {
            close_conn(c, dead);
            return;
        }
        if (static_cast<size_t>(n) < buf.size()) {
            return;
        }
    }
}


void serve(int lfd)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event lev{};
    lev.events = EPOLLIN;
    lev.data.ptr = nullptr;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    std::vector<char> buf(64 * 1024);
    conn_set conns;
    std::vector<conn*> dead;
    epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            auto* c = static_cast<conn*>(evs[i].data.ptr);
            if (c == nullptr) {
                for (int k = 0; k < 64; k++) {
                    int fd = accept4(lfd, nullptr, nullptr,
                                     SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) {
                        break;
                    }
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    auto owned = std::make_unique<conn>();
                    conn* nc = owned.get();
                    conns.emplace(nc, std::move(owned));
                    nc->fd = fd;
                    nc->ep = ep;
                    epoll_event ev{};
                    ev.events = EPOLLIN | EPOLLRDHUP;
                    ev.data.ptr = nc;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            if (c->dead) {
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                flush(*c);
            }
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP
                                 | EPOLLERR))
            {
                on_readable(*c, buf, dead);
            }
        }
        for (conn* c : dead) {
            conns.erase(c);
        }
        dead.clear();
    }
}


}  // namespace


int main(int argc, char** argv)
{
    std::string host = "127.0.0.1";
    int port = 0;
    int threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--port") {
            port = std::atoi(argv[i + 1]);
        } else if (a == "--host") {
            host = argv[i + 1];
        } else if (a == "--threads") {
            threads = std::atoi(argv[i + 1]);
        } else {
            break;
        }
    }
    if (port <= 0 || port > 65535 || threads < 1 || threads > 64
        || argc % 2 == 0)
    {
        std::fputs("usage: floor --port PORT [--host ADDR] [--threads T]\n",
                   stderr);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    char tok[16];
    std::snprintf(tok, sizeof(tok), "%012llx",
                  static_cast<unsigned long long>(
                      (static_cast<uint64_t>(time(nullptr)) << 16
                       ^ static_cast<uint64_t>(getpid()))
                      & 0xffffffffffffull));
    id_token = tok;

    // every listener bound before the first accept, so that a client that
    // connects once the port answers finds them all
    std::vector<int> lfds;
    for (int t = 0; t < threads; t++) {
        int fd = listen_on(host, port);
        if (fd < 0) {
            std::perror("floor: listen");
            return 1;
        }
        lfds.push_back(fd);
    }
    std::vector<std::thread> th;
    for (int fd : lfds) {
        th.emplace_back(serve, fd);
    }
    // runs until SIGTERM or SIGINT (default action: exit)
    for (auto& t : th) {
        t.join();
    }
    return 0;
}
