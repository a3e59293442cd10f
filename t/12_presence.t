#!/usr/bin/perl

# Global presence (SPEC 2.3, 4): two stacks on one Redis; the state on
# both lists the players of both, identical bytes on both; a leave on one
# is seen on the other; GET /rooms gives global counts, largest first, and
# [] when empty; a killed sidecar's players are removed by the survivor
# within the heartbeat window.

use strict;
use warnings;

use JSON::PP;
use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(http_get wait_until);

my $INTERVAL = 200;
my $TTL = 1000;

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $redis = $ta->start_redis;
my @args = (args => [ '--heartbeat-interval-ms', $INTERVAL,
    '--heartbeat-ttl-ms', $TTL ]);
$ta->start_sidecar($redis, @args);
$tb->start_sidecar($redis, @args);
$ta->start_nginx;
$tb->start_nginx;

sub rooms_of {
    my ($t) = @_;
    my ($status, $head, $body) = http_get($t->port, '/rooms');
    return undef unless defined $status && $status == 200;
    return eval { decode_json($body) };
}

is_deeply(rooms_of($ta), [], 'GET /rooms: [] when there are no rooms');

sub names { [ map { $_->{name} } @{ $_[0]{data}{players} } ] }

sub join_room {
    my ($t, $room, $name) = @_;
    my $c = $t->connect($room, $name);
    ref $c or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    my $w = $c->recv_json(5);
    is($w->{type}, 'welcome', "$name: welcome");
    return ($c, $w->{data}{you}{id});
}

my ($a1, $a1_id) = join_room($ta, 'PRES', 'a1');
my ($b1, $b1_id) = join_room($tb, 'PRES', 'b1');
my ($b2, $b2_id) = join_room($tb, 'PRES', 'b2');
my ($o1) = join_room($ta, 'OTHER', 'o1');

my %last;
for ([a1 => $a1], [b1 => $b1], [b2 => $b2]) {
    my ($who, $c) = @$_;
    my $s = $c->wait_for(type => 'state', timeout => 5,
        match => sub { @{ names($_[0]) } == 3 });
    is_deeply($s && names($s), [qw(a1 b1 b2)],
        "$who: state lists the players of both stacks in join order");
    $last{$who} = $s;
}
is_deeply($last{a1}, $last{b1}, 'the state is identical on both stacks');
is_deeply([ map { $_->{id} } @{ $last{a1}{data}{players} } ],
    [ $a1_id, $b1_id, $b2_id ], 'player ids as in each welcome');

my $want = [ { code => 'PRES', count => 3 }, { code => 'OTHER', count => 1 } ];
ok(wait_until(sub {
    my $r = rooms_of($tb);
    return $r && JSON::PP->new->canonical->encode($r)
        eq JSON::PP->new->canonical->encode($want);
}, timeout => 5), 'GET /rooms on b: global counts, largest first')
    or diag(explain(rooms_of($tb)));
is_deeply(rooms_of($ta), $want, 'GET /rooms on a: the same');

# A leave on b is seen on a.
$b1->close;
my $s = $a1->wait_for(type => 'state', timeout => 5,
    match => sub { @{ names($_[0]) } == 2 });
is_deeply($s && names($s), [qw(a1 b2)], 'a1: b1 left (closed on stack b)');

# b's sidecar dies: its players are removed by a within the window.
# The window holds for a reaper that has looked at b before b's alive key
# expired (docs/redis.md "Presence"): a reaper that just started has no
# record of its looks (`watch`), and an expired key is then only a
# suspicion, confirmed a TTL later.  On a loaded machine this test can
# get here within b's first beats, before a's first look: wait for it.
my $watch = 'server:{' . $tb->server_id . '}:watch';
ok(wait_until(sub {
    Rooms::Test::redis_command($ta->redis_port, 'EXISTS', $watch) eq ':1'
}, timeout => 5), "a watches b's heartbeat");
my $t0 = time;
$tb->kill_proc('sidecar');
$s = $a1->wait_for(type => 'state', timeout => 10,
    match => sub { @{ names($_[0]) } == 1 });
my $took = time - $t0;
is_deeply($s && names($s), ['a1'], "a1: b2 removed after b's sidecar died");
my $window = ($TTL + 2 * $INTERVAL) / 1000 + 0.5;
cmp_ok($took, '<', $window, sprintf(
    'removed in %.2fs (ttl %dms, heartbeat %dms)', $took, $TTL, $INTERVAL));
diag(sprintf('dead sidecar detected after %.2fs', $took));

my $r = rooms_of($ta) || [];
is_deeply([ sort { $a->{code} cmp $b->{code} } @$r ],
    [ { code => 'OTHER', count => 1 }, { code => 'PRES', count => 1 } ],
    'GET /rooms: counts follow (ties in any order)')
    or diag(explain($r));

$_->close for $a1, $o1;
ok(wait_until(sub { my $r = rooms_of($ta); $r && !@$r }, timeout => 5),
    'GET /rooms: [] after everyone left');

$b2->close;
$ta->finish;
