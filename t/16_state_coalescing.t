#!/usr/bin/perl

# `state` coalescing (docs/redis.md "Presence and state"): 300 clients
# joining one room as fast as they connect make far fewer than 300 state
# envelopes, and the last one lists everybody; in a 2-player room the
# state after a join, a ready change and a leave still comes within about
# 100 ms; with throttling off (state_ms_per_player 0) a join is one state.

use strict;
use warnings;

use FindBin;
use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test;

my $PYTHON = '/usr/bin/python3';    # Debian's, with python3-websockets
my $BURST = "$FindBin::Bin/clients/state_burst.py";
my $N = 300;

sub names { [ map { $_->{name} } @{ $_[0]{data}{players} } ] }

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, log_level => 'info', args => [ '--rate-limit', 0 ]);
$t->start_nginx;

# Small room: each change is seen at once.

sub join_room {
    my ($room, $name) = @_;
    my $c = $t->connect($room, $name);
    ref $c or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    my $w = $c->recv_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome");
    return $c;
}

my $alice = join_room('DUO', 'Alice');
ok($alice->wait_for(type => 'state', timeout => 5), 'Alice: her state');
sleep 0.3;    # the room is quiet for longer than its interval

my $t0 = time;
my $bob = join_room('DUO', 'Bob');
my $s = $alice->wait_for(type => 'state', timeout => 5,
    match => sub { @{ names($_[0]) } == 2 });
my $took = time - $t0;
is_deeply($s && names($s), [qw(Alice Bob)], 'Alice: state with Bob');
cmp_ok($took, '<', 0.1, sprintf('2 players: state %.1f ms after the join',
    $took * 1000));

sleep 0.1;
$t0 = time;
$bob->send_json({ type => 'agree', data => {} });
my $a = $alice->wait_for(timeout => 5, ignore => ['state']);
is($a && $a->{type}, 'agree', 'Alice: agree relayed');
$s = $alice->wait_for(type => 'state', timeout => 5);
$took = time - $t0;
ok($s && $s->{id} > $a->{id}, 'Alice: then a state');
is_deeply({ map { $_->{name} => $_->{ready} ? 1 : 0 }
        @{ $s ? $s->{data}{players} : [] } },
    { Alice => 0, Bob => 1 }, 'Alice: the state shows Bob ready');
cmp_ok($took, '<', 0.1, sprintf('agree to ready state: %.1f ms',
    $took * 1000));

sleep 0.1;
$t0 = time;
$bob->close;
$s = $alice->wait_for(type => 'state', timeout => 5);
$took = time - $t0;
is_deeply($s && names($s), ['Alice'], 'Alice: Bob left');
cmp_ok($took, '<', 0.1, sprintf('leave to state: %.1f ms', $took * 1000));
$alice->close;

# A burst: bounded states, the last lists everybody.

SKIP: {
    skip 'python3-websockets missing', 6
        unless -x $PYTHON && system($PYTHON, '-c', 'import websockets') == 0;

    my $port = $t->port;
    my $out = `$PYTHON $BURST ws://127.0.0.1:$port/ws BURST $N`;
    my $r = eval { decode_json($out) };
    ok($r, 'burst ran') or diag($out);
    $r ||= {};
    diag(sprintf('%d joins in %.2fs; states: observer %d, any joiner at '
        . 'most %d; last state after %.2fs', $N, $r->{join_seconds} // 0,
        $r->{observer_states} // 0, $r->{max_joiner_states} // 0,
        $r->{settle_seconds} // 0));
    is($r->{failed}, 0, 'every join succeeded');
    is($r->{closed}, 0, 'no joiner was closed');
    is($r->{observer_last_players}, $N + 1,
        "the observer's last state lists all " . ($N + 1) . ' players');
    cmp_ok($r->{observer_states} // 1e9, '<', $N / 5,
        "observer: far fewer states than $N joins");
    cmp_ok($r->{max_joiner_states} // 1e9, '<', $N / 5,
        'every joiner: far fewer states too');
}

# Throttling off: one state per join, as before.

my $u = Rooms::Test->new;
$u->start_redis;
$u->start_sidecar(undef, log_level => 'info',
    args => [ '--state-ms-per-player', 0 ]);
$u->start_nginx;

my @c;
for my $i (1 .. 5) {
    my $c = $u->connect('OFF', "u$i");
    ref $c or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    my $w = $c->recv_json(5);    # one join at a time: one sync each
    BAIL_OUT('no welcome') unless $w && $w->{type} eq 'welcome';
    push @c, $c;
}
my @states;
while (my $m = $c[0]->recv_json(1)) {
    push @states, $m if $m->{type} eq 'state';
}
is_deeply([ map { scalar @{ $_->{data}{players} } } @states ],
    [ 1 .. 5 ], 'state_ms_per_player 0: one state per join');

done_testing;
