#!/usr/bin/perl

# GET /rooms latency with many rooms (docs/redis.md "Presence"): one
# stack (Redis, sidecar, nginx with one worker) whose room index holds
# ROOMS rooms (default 10000), filled straight into Redis, then REQUESTS
# sequential GET /rooms (default 200); prints p50, p90, p99 and max in
# ms, the body size, and the time Redis spent per request.  The index is written in both layouts, the one
# sorted set `rooms` of earlier versions and the 16 buckets
# `rooms:{bN}` of now, so that the same script measures either build.
#
#   ROOMS_BUILD_DIR=$PWD/build ROOMS_NGINX=/usr/sbin/nginx \
#       perl -I t/lib bench/rooms_list.pl
#
# SIDECAR=path runs that sidecar binary instead of the build's (to
# compare two builds on one machine, one run after the other).

use strict;
use warnings;

use JSON::PP ();
use Test::More;
use Time::HiRes qw(time);

use lib 't/lib';
use Rooms::Test qw(http_get redis_command);

my $ROOMS = $ENV{ROOMS} || 10_000;
my $REQUESTS = $ENV{REQUESTS} || 200;
my $BUCKETS = 16;

# CRC16-XMODEM, as Redis Cluster and sidecar/src/cluster_map.cpp
sub crc16 {
    my ($s) = @_;
    my $crc = 0;
    for my $byte (unpack 'C*', $s) {
        $crc ^= $byte << 8;
        for (1 .. 8) {
            $crc = $crc & 0x8000 ? (($crc << 1) ^ 0x1021) & 0xffff
                : ($crc << 1) & 0xffff;
        }
    }
    return $crc;
}

my $t = Rooms::Test->new(name => 'rooms-list');
$t->start_redis;
$t->start_sidecar(undef, log_level => 'warn',
    $ENV{SIDECAR} ? (command => [ $ENV{SIDECAR} ]) : ());
my $port = $t->start_nginx(workers => 1, log_level => 'warn');

my (%by_bucket, @flat);
for my $i (1 .. $ROOMS) {
    my $code = sprintf 'R%05d', $i;
    my $count = 1 + $i % 50;
    push @{ $by_bucket{ crc16($code) % $BUCKETS } }, $count, $code;
    push @flat, $count, $code;
}
while (my @chunk = splice @flat, 0, 2000) {
    redis_command($t->redis_port, 'ZADD', 'rooms', @chunk);
}
for my $b (sort { $a <=> $b } keys %by_bucket) {
    my @list = @{ $by_bucket{$b} };
    while (my @chunk = splice @list, 0, 2000) {
        redis_command($t->redis_port, 'ZADD', "rooms:{b$b}", @chunk);
    }
}

my ($status, undef, $body) = http_get($port, '/rooms');
my $list = eval { JSON::PP::decode_json($body // '') } || [];
die "GET /rooms: status " . ($status // 'none') . ', ' . scalar(@$list)
    . " rooms, expected $ROOMS\n"
    unless ($status // 0) == 200 && @$list == $ROOMS;

redis_command($t->redis_port, 'CONFIG', 'RESETSTAT');
my @ms;
for (1 .. $REQUESTS) {
    my $t0 = time;
    my ($s) = http_get($port, '/rooms');
    die "GET /rooms failed\n" unless ($s // 0) == 200;
    push @ms, (time - $t0) * 1000;
}
@ms = sort { $a <=> $b } @ms;
my $at = sub { $ms[ int($_[0] * $#ms) ] };
printf "GET /rooms, %d rooms, %d requests, body %d bytes: p50 %.2f ms, "
    . "p90 %.2f ms, p99 %.2f ms, max %.2f ms\n", $ROOMS, $REQUESTS,
    length $body, $at->(0.5), $at->(0.9), $at->(0.99), $ms[-1];

# what Redis spent on them (its own measure, per GET /rooms)
my $cli = Rooms::Test::which('redis-cli');
my $stats = $cli ? `$cli -p @{[ $t->redis_port ]} INFO commandstats` : '';
if ($stats =~ /cmdstat_zrevrange:calls=(\d+),usec=(\d+)/) {
    printf "Redis: %.1f ZREVRANGE and %.0f us per GET /rooms\n",
        $1 / $REQUESTS, $2 / $REQUESTS;
}

$t->finish;
