#!/usr/bin/perl

# Every script and multi-key command the sidecar sends is in one hash
# slot (docs/redis.md "Redis Cluster"), checked by Redis itself: two
# stacks on a Redis in cluster mode that serves every slot, which refuses
# a command or script whose KEYS are in several slots (CROSSSLOT), as
# a cluster does.  Everything that touches presence, the room index and
# the server keys runs: joins, chat, ready, leaves, GET /rooms, a killed
# sidecar reaped by the other, a restarted one that registers its resumed
# players again and reaps its stale ones.  Redis then counts no error,
# the sidecars logged no failed script, and what each step should have
# done is seen in `state` and GET /rooms.  (A script that touches a key
# it did not declare is caught only by a cluster of several nodes; the
# unit test t/unit/sidecar_key_slots_test.cc checks that no script names
# a key.)

use strict;
use warnings;

use JSON::PP;
use Test::More;

use Rooms::Test qw(http_get wait_until);

my $cli = Rooms::Test::which('redis-cli')
    or plan skip_all => 'redis-cli not installed';

my $INTERVAL = 200;
my $TTL = 1000;

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $redis = $ta->start_redis(cluster => 1);
my @args = (args => [ '--heartbeat-interval-ms', $INTERVAL,
    '--heartbeat-ttl-ms', $TTL, '--resume-grace-ms', 300 ]);
for my $t ($ta, $tb) {
    $t->start_sidecar($redis, @args);
    $t->start_nginx;
}

sub redis_info {
    my ($section) = @_;
    my $out = `$cli -p @{[ $ta->redis_port ]} INFO $section 2>&1`;
    return $out;
}

sub rooms_of {
    my ($t) = @_;
    my ($status, undef, $body) = http_get($t->port, '/rooms');
    return undef unless defined $status && $status == 200;
    my $r = eval { decode_json($body) } or return undef;
    return { map { $_->{code} => $_->{count} } @$r };
}

sub rooms_are {
    my ($t, $want, $what) = @_;
    my $canon = JSON::PP->new->canonical;
    ok(wait_until(sub {
        my $r = rooms_of($t);
        return $r && $canon->encode($r) eq $canon->encode($want);
    }, timeout => 5), "GET /rooms: $what")
        or diag(explain(rooms_of($t)));
}

sub names { [ sort map { $_->{name} } @{ $_[0]{data}{players} } ] }

sub state_is {
    my ($c, $want, $what) = @_;
    my $s = $c->wait_for(type => 'state', timeout => 5,
        match => sub { join(',', @{ names($_[0]) }) eq join(',', @$want) });
    ok($s, "state: $what") or diag(explain($s));
    return $s;
}

sub join_room {
    my ($t, $room, $name) = @_;
    my $c = $t->connect($room, $name);
    ref $c or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    my $w = $c->recv_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome in $room");
    return $c;
}

like(redis_info('cluster'), qr/cluster_enabled:1/, 'Redis runs in cluster mode');

my $a1 = join_room($ta, 'SLOTA', 'a1');
my $b1 = join_room($tb, 'SLOTA', 'b1');
my $b2 = join_room($tb, 'SLOTB', 'b2');
state_is($a1, [qw(a1 b1)], 'a1 sees b1 of the other stack');

$a1->send_json({ type => 'chat', data => { text => 'hi' } });
my $m = $b1->wait_for(type => 'chat', timeout => 5);
is($m && $m->{data}{text}, 'hi', 'a chat goes through');
$b1->send_json({ type => 'agree', data => {} });
ok($a1->wait_for(type => 'state', timeout => 5, match => sub {
    grep { $_->{name} eq 'b1' && $_->{ready} } @{ $_[0]{data}{players} }
}), 'agree: b1 ready in the state');
rooms_are($ta, { SLOTA => 2, SLOTB => 1 }, 'global counts');

my $a2 = join_room($ta, 'SLOTB', 'a2');
rooms_are($tb, { SLOTA => 2, SLOTB => 2 }, 'a join counted');
$a2->close;
state_is($b2, ['b2'], 'a2 left');
rooms_are($tb, { SLOTA => 2, SLOTB => 1 }, 'a leave counted');

# b's sidecar killed: a reaps b's players, room by room
$tb->kill_proc('sidecar');
state_is($a1, ['a1'], "b's players reaped");
rooms_are($ta, { SLOTA => 1 }, "b's rooms out of the index");

# back: its workers resume b1 and b2, registered again, nobody stale
$tb->start_sidecar($redis, @args);
state_is($a1, [qw(a1 b1)], 'b1 registered again after the restart');
rooms_are($ta, { SLOTA => 2, SLOTB => 1 }, 'counts after the restart');
ok(wait_until(sub { -s $tb->sidecar_log && do {
    open my $fh, '<', $tb->sidecar_log or return 0;
    local $/;
    <$fh> =~ /cleared players=0 left by a previous run/;
} }, timeout => 5), 'the restarted sidecar reaped its stale players (none)');

$_->close for $a1, $b1, $b2;
rooms_are($ta, {}, 'empty once everyone left');

my $errors = redis_info('errorstats');
unlike($errors, qr/errorstat_/, 'Redis counted no error (no CROSSSLOT)')
    or diag($errors);
for my $t ($ta, $tb) {
    open my $fh, '<', $t->sidecar_log or die $t->sidecar_log . ": $!";
    my @failed = grep { /failed|CROSSSLOT|\[error\]/ } <$fh>;
    ok(!@failed, 'stack ' . $t->name . ': no script failed')
        or diag(join '', @failed);
}

$ta->finish;
