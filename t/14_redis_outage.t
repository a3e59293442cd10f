#!/usr/bin/perl

# Redis killed and restarted under a connected room (SPEC 4): clients stay
# connected and get error unavailable while it is down; after the restart
# (empty: the test Redis keeps no data) the client on stack a, whose
# sidecar reconnects late on purpose, receives the messages the client on
# stack b published before a came back, in order, once, then live traffic.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use Rooms::Test qw(wait_until);

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $redis = $ta->start_redis;
# a retries after 3 s (+-20 %), b after 50 ms: b is back long before a.
$ta->start_sidecar($redis, args => [ '--redis-backoff-min-ms', 3000 ]);
$tb->start_sidecar($redis, args => [ '--redis-backoff-min-ms', 50,
    '--redis-backoff-max-ms', 200 ]);
$ta->start_nginx;
$tb->start_nginx;

my $a1 = $ta->connect('OUT', 'a1');
my $b1 = $tb->connect('OUT', 'b1');
ok(ref $a1 && ref $b1, 'a1 and b1 join')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
$_->recv_json(5) for $a1, $b1;

$b1->send_json({ type => 'chat', data => { text => 'before' } });
for ([a1 => $a1], [b1 => $b1]) {
    my $m = $_->[1]->wait_for(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, 'before', "$_->[0]: chat before the outage");
}

# The part of a's sidecar log written after the kill.
my $log_from = -s $ta->sidecar_log;
sub a_log_since_kill {
    open my $fh, '<', $ta->sidecar_log or return '';
    seek $fh, $log_from, 0;
    local $/;
    return <$fh> // '';
}

my $port = $ta->redis_port;
my $t0 = time;
$ta->kill_proc('redis');

# Each client keeps sending until its sidecar noticed: error unavailable.
for ([a1 => $a1], [b1 => $b1]) {
    my ($who, $c) = @$_;
    my $err = wait_until(sub {
        $c->send_json({ type => 'chat', data => { text => 'lost' } });
        return $c->wait_for(type => 'error', timeout => 0.2);
    }, timeout => 5, interval => 0);
    is($err && $err->{data}{code}, 'unavailable',
        "$who: error unavailable while Redis is down");
    ok(!$c->closed, "$who: still connected");
}

$ta->start_redis(port => $port);
diag(sprintf('Redis down for %.2fs', time - $t0));

# b is back first: probe until b1's chat comes back to it.  An
# `unavailable` comes back at once while b reconnects: probe at most
# every 50 ms, so that the probes do not use up b1's rate limit.
my @sent;
my $back = wait_until(sub {
    $b1->send_json({ type => 'chat', data => { text => 'probe' } });
    my $m = $b1->wait_for(ignore => ['state', 'reset'], timeout => 0.3);
    push @sent, 'probe' if $m && $m->{type} eq 'chat';
    return $m && $m->{type} eq 'chat';
}, timeout => 5, interval => 0.05);
ok($back, 'b publishes again after the restart');

for my $n (1 .. 5) {
    $b1->send_json({ type => 'chat', data => { text => "gap-$n" } });
    push @sent, "gap-$n";
}
my @echo = $b1->collect(type => 'chat', count => 5, timeout => 5);
is(scalar @echo, 5, 'b1 got its 5 messages back');

unlike(a_log_since_kill(), qr/redis subscriber connected|gap fill/,
    "a's sidecar has not reconnected yet (the gap is real)")
    or diag('a reconnected early: the gap fill path was not tested');

# a comes back and fills the gap from history; then live traffic.
my @got;
my $deadline = time + 10;
while (time < $deadline && @got < @sent) {
    my $m = $a1->wait_for(type => 'chat', timeout => $deadline - time)
        or last;
    push @got, $m;
}
$b1->send_json({ type => 'chat', data => { text => 'after' } });
push @sent, 'after';
push @got, $a1->collect(type => 'chat', count => 1, timeout => 5,
    quiet => 0.5);

is_deeply([ map { $_->{data}{text} } @got ], \@sent,
    'a1 receives what b published meanwhile, in order, once, then live');
my @ids = map { $_->{id} } @got;
ok(!grep({ $ids[$_] <= $ids[$_ - 1] } 1 .. $#ids), 'ids increasing');
ok(!$a1->closed, 'a1 stayed connected throughout');
like(a_log_since_kill(), qr/gap fill room=OUT/,
    "a's sidecar logged the gap fill");

$_->close for $a1, $b1;
$ta->finish;
