#!/usr/bin/perl

# Room and name churn (SPEC 3: "memory freed when a client leaves goes
# back to the system or to a bounded cache"; 4: presence is global): many
# distinct rooms, each joined by a client of a distinct name that leaves
# once welcomed, from several clients in parallel.  Afterwards:
# - GET /rooms is [] and Redis holds no presence, no member count and
#   no per-server room list for any of them (docs/redis.md, "Keys");
# - the worker's and the sidecar's RSS are back near their baseline
#   (taken after a warm-up churn of the same kind), i.e. nothing is kept
#   per room that was left;
# - what Redis keeps for a while (a room's seq, epoch, presence version
#   and history of kept types: its `state` envelopes are not kept; and
#   the version of its count in the room index) is counted and printed,
#   every key of it expires (SPEC 4: room_ttl, 20 s here), and Redis is
#   then back near its baseline: nothing is left for rooms nobody uses.
#
# ROOMS_CHURN sets the number of rooms (default 100000).  The run is
# bounded in time: the clients stop at the deadline, and the test then
# checks what was done, and says so.

use strict;
use warnings;

use JSON::PP ();
use POSIX qw(_exit);
use Socket qw(PF_INET SOCK_STREAM inet_aton pack_sockaddr_in);
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(wait_until http_get proc_cpu proc_rss redis_command);

my $ROOMS = $ENV{ROOMS_CHURN} || 100_000;
my $PARALLEL = 8;           # client processes, each one join at a time
my $WARMUP = 2000;
my $DEADLINE = 150;         # seconds for the whole churn

my $t = Rooms::Test->new;
$t->start_redis;
my $ROOM_TTL = 20;
$t->start_sidecar(undef, log_level => 'warn',
    args => [ '--room-ttl', $ROOM_TTL ]);
my $port = $t->start_nginx(workers => 1, log_level => 'warn');

my ($worker) = $t->workers;
my $sidecar = $t->pid('sidecar');
my $redis = $t->pid('redis');
ok($worker, "one worker ($worker)");

sub redis { redis_command($t->redis_port, @_) }

# an integer computed in Redis (":N" reply)
sub redis_int {
    my ($script, @args) = @_;
    my $r = redis('EVAL', $script, 0, @args);
    return $r =~ /^:(-?\d+)/ ? $1 : "?($r)";
}

sub count_keys {
    my ($pattern) = @_;
    return redis_int("return #redis.call('keys', ARGV[1])", $pattern);
}

sub key_bytes {
    my ($pattern) = @_;
    return redis_int(<<'EOF', $pattern);
local n = 0
for _, k in ipairs(redis.call('keys', ARGV[1])) do
    n = n + (redis.call('memory', 'usage', k) or 0)
end
return n
EOF
}

sub used_memory {
    return redis_int("return tonumber(string.match("
        . "redis.call('info', 'memory'), 'used_memory:(%d+)'))");
}

# One join and leave, as lean as it can be (the client processes are
# the bottleneck): connect, the upgrade with a fixed key, the 101 and the
# welcome frame, close.  True if the welcome came within 10 s.
my $KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

sub join_leave {
    my ($room, $name) = @_;

    socket(my $s, PF_INET, SOCK_STREAM, 0) or return 0;
    connect($s, pack_sockaddr_in($port, inet_aton('127.0.0.1')))
        or return 0;

    my $req = "GET /ws?room=$room&name=$name HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: $KEY\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
    syswrite($s, $req) == length $req or return 0;

    my $buf = '';
    my $deadline = time + 10;
    while ($buf !~ /\r\n\r\n\x81.{1,3}\{"type":"welcome"/s) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        my $rin = '';
        vec($rin, fileno $s, 1) = 1;
        select($rin, undef, undef, $left) or return 0;
        sysread($s, $buf, 4096, length $buf) or return 0;
    }

    close $s;

    return $buf =~ m{^HTTP/1\.1 101 } ? 1 : 0;
}

# $n rooms from $first, joined and left by $PARALLEL processes, each one
# room at a time; returns (joined, failures, seconds).
sub churn {
    my ($prefix, $first, $n, $deadline) = @_;

    my $start = time;
    my @kids;

    for my $k (0 .. $PARALLEL - 1) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork() // die "fork: $!";

        if ($pid == 0) {
            close $r;
            my ($ok, $bad) = (0, 0);
            for (my $i = $first + $k; $i < $first + $n; $i += $PARALLEL) {
                last if time > $deadline;
                if (join_leave(sprintf('%s%06d', $prefix, $i), "n$i")) {
                    $ok++;
                } else {
                    $bad++;
                }
            }
            print {$w} "$ok $bad\n";
            close $w;
            _exit(0);
        }

        close $w;
        push @kids, [ $pid, $r ];
    }

    my ($ok, $bad) = (0, 0);
    for my $kid (@kids) {
        my ($pid, $r) = @$kid;
        my $line = <$r> // "0 0\n";
        waitpid($pid, 0);
        my ($o, $b) = split ' ', $line;
        $ok += $o;
        $bad += $b;
    }

    return ($ok, $bad, time - $start);
}

sub rooms_list {
    my ($status, undef, $body) = http_get($port, '/rooms');
    return unless defined $status && $status == 200;
    return eval { JSON::PP::decode_json($body) };
}

# the process's RSS once the leaves are done: /rooms empty
sub settled {
    wait_until(sub { my $l = rooms_list(); $l && !@$l },
        timeout => 30, interval => 0.2);
    sleep 0.5;
    return (proc_rss($worker), proc_rss($sidecar));
}

# warm-up: allocators and Redis reach their working size
my ($w_ok) = churn('W', 0, $WARMUP, time + 60);
is($w_ok, $WARMUP, "warm-up: $WARMUP rooms joined and left");

my ($rss_w0, $rss_s0) = settled();
my $mem0 = used_memory();
my ($cpu_w0, $cpu_s0, $cpu_r0) = map { proc_cpu($_) } $worker, $sidecar,
    $redis;
diag("baseline: worker RSS $rss_w0 KiB, sidecar RSS $rss_s0 KiB, "
    . "Redis used_memory $mem0 bytes");

my ($ok, $bad, $took) = churn('R', 0, $ROOMS, time + $DEADLINE);
my @cpu = map { proc_cpu($_) } $worker, $sidecar, $redis;

diag(sprintf('churn: %d rooms joined and left (%d failed) in %.1f s, '
    . '%.0f joins/s, %d client processes; CPU: worker %.1f s, sidecar '
    . '%.1f s, Redis %.1f s', $ok, $bad, $took, $ok / ($took || 1),
    $PARALLEL, $cpu[0] - $cpu_w0, $cpu[1] - $cpu_s0, $cpu[2] - $cpu_r0));
is($bad, 0, 'churn: every join was welcomed');
cmp_ok($ok, '>=', $ROOMS, "churn: all $ROOMS rooms done before the "
    . "${DEADLINE}s deadline") or diag("only $ok rooms: the machine is "
    . 'slower than the deadline allows; the checks below cover those');

my $list = wait_until(sub { my $l = rooms_list(); $l && !@$l ? $l : 0 },
    timeout => 30, interval => 0.2);
ok($list && !@$list, 'GET /rooms is [] once they left');

my ($rss_w, $rss_s) = settled();
my $mem = used_memory();

diag(sprintf('after the churn: worker RSS %d KiB (%+d), sidecar RSS %d '
    . 'KiB (%+d), Redis used_memory %d bytes (%+.1f MB, %.0f bytes a room)',
    $rss_w, $rss_w - $rss_w0, $rss_s, $rss_s - $rss_s0, $mem, ($mem - $mem0)
    / 1e6, ($mem - $mem0) / ($ok || 1)));

Rooms::Test::mem_cmp_ok($rss_w - $rss_w0, '<', 2048, 'the worker keeps nothing per room '
    . 'left (RSS within 2 MiB of the baseline)');
Rooms::Test::mem_cmp_ok($rss_s - $rss_s0, '<', 4096, 'the sidecar keeps nothing per room '
    . 'left (RSS within 4 MiB of the baseline)');

# Redis: nobody is present anywhere

my $server_rooms = 'server:{' . $t->server_id . '}:rooms';
is(count_keys('room:{R*}:presence'), 0, 'Redis: no presence left');
is(count_keys('room:{R*}:senders'), 0, 'Redis: no senders entry left');
is(redis_int(<<'EOF'), 0, 'Redis: the room index is empty (16 buckets)');
local n = 0
for b = 0, 15 do
    n = n + redis.call('zcard', 'rooms:{b' .. b .. '}')
end
return n
EOF
is(redis_int("return redis.call('scard', ARGV[1])", $server_rooms), 0,
    "Redis: $server_rooms is empty");

# what stays until room_ttl after the room's last use

my @kept;
for my $kind (qw(seq epoch history trimmed pv)) {
    my $n = count_keys("room:{R*}:$kind");
    next unless $n;
    push @kept, sprintf('%s %d keys, %d bytes', $kind, $n,
        key_bytes("room:{R*}:$kind"));
}
my $versions = count_keys('rooms:{b*}:v:R*');
push @kept, sprintf('room index versions %d keys, %d bytes', $versions,
    key_bytes('rooms:{b*}:v:R*')) if $versions;
diag('Redis keeps for room_ttl after their last use: '
    . (@kept ? join('; ', @kept) : 'nothing'));
# the keys matching a pattern that have no TTL
sub without_ttl {
    my ($pattern) = @_;
    return redis_int(<<'EOF', $pattern);
local n = 0
for _, k in ipairs(redis.call('keys', ARGV[1])) do
    if redis.call('pttl', k) < 0 then
        n = n + 1
    end
end
return n
EOF
}
is(without_ttl('rooms:{b*}:v:R*'), 0, 'the room index versions expire');
is(without_ttl('room:{R*}:*'), 0, 'every key of those rooms expires');
my $other = redis_int(<<'EOF');
local n = 0
for _, k in ipairs(redis.call('keys', 'room:{R*}:*')) do
    local kind = string.match(k, '}:(%a+)$')
    if kind ~= 'seq' and kind ~= 'epoch' and kind ~= 'history'
        and kind ~= 'trimmed' and kind ~= 'pv' then
        n = n + 1
    end
end
return n
EOF
is($other, 0, 'Redis: no other key of those rooms is left');

# room_ttl after the last room was left, nothing of them is left
my $expired = wait_until(sub { count_keys('room:{R*}:*') == 0
        && count_keys('rooms:{b*}:v:R*') == 0 },
    timeout => $ROOM_TTL + 30, interval => 0.5);
ok($expired, "Redis: every key of those rooms gone after room_ttl");
my $mem_end = used_memory();
diag(sprintf('once expired: Redis used_memory %d bytes (%+.1f MB from the '
    . 'baseline)', $mem_end, ($mem_end - $mem0) / 1e6));
cmp_ok($mem_end - $mem0, '<', 2e6,
    'Redis used_memory back within 2 MB of its baseline');

$t->finish;
