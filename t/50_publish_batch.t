#!/usr/bin/perl

# Publish batches (docs/redis.md "Batches"): messages of one room that
# reach the sidecar together, or while the room's previous batch is in
# Redis, go as one `publish` script call.  Everything a single call per
# message gave still holds: every member gets every message once, each
# sender's in its order, ids consecutive; the history keeps them one
# envelope per entry; an agree in a batch marks its sender ready; every
# message is answered (its copy back, or an error) exactly once.  And
# Redis runs fewer script calls than there are messages.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(wait_until redis_command);

my $SENDERS = 5;
my $EACH = 40;
my $ROOM = 'BATCH';

my $t = Rooms::Test->new;
my $redis = $t->start_redis;
$t->start_sidecar($redis, log_level => 'info');
$t->start_nginx;
my $port = $t->redis_port;

my $cli = Rooms::Test::which('redis-cli')
    or plan skip_all => 'redis-cli not installed';

# Script calls Redis ran since the last CONFIG RESETSTAT.
sub script_calls {
    my $out = `$cli -p $port INFO commandstats`;
    my $n = 0;
    $n += $1 while $out =~ /^cmdstat_eval(?:sha)?:calls=(\d+)/mg;
    return $n;
}

my @c;
for my $i (1 .. $SENDERS) {
    my $c = $t->connect($ROOM, "s$i");
    ok(ref $c, "s$i joins")
        or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    is($c->recv_json(5)->{type}, 'welcome', "s$i: welcome");
    push @c, $c;
}
# Every join's state is out before the burst.
for my $i (0 .. $#c) {
    ok($c[$i]->wait_for(type => 'state', timeout => 5,
            match => sub { @{ $_[0]{data}{players} } == $SENDERS }),
        "s" . ($i + 1) . ": state with all $SENDERS players");
}

is(redis_command($port, 'CONFIG', 'RESETSTAT'), '+OK', 'stats reset');

# Every sender writes its messages at once, interleaved with the others.
for my $n (1 .. $EACH) {
    for my $i (0 .. $#c) {
        $c[$i]->send_json({ type => 'chat', ref => "r$n",
            data => { text => "$i:$n" } });
    }
}

my $total = $SENDERS * $EACH;
for my $i (0 .. $#c) {
    my @got = $c[$i]->collect(type => 'chat', count => $total,
        timeout => 20, quiet => 0.3);
    is(scalar @got, $total, "s" . ($i + 1) . ": $total chats, no more");
    my (%next, $bad_order, $bad_id);
    my $last_id = 0;
    for my $m (@got) {
        my ($s, $n) = split /:/, $m->{data}{text};
        $bad_order++ if $n != ($next{$s} // 1);
        $next{$s} = $n + 1;
        $bad_id++ if $m->{id} <= $last_id;
        $last_id = $m->{id};
    }
    ok(!$bad_order, "s" . ($i + 1) . ": each sender's chats in order");
    ok(!$bad_id, "s" . ($i + 1) . ": ids increase");
}

my $calls = script_calls();
cmp_ok($calls, '<', $total / 2,
    "$total messages took $calls script calls (batches)");
diag("$total messages, $calls script calls");

# The history: one complete envelope per entry, the newest 50.
is(redis_command($port, 'LLEN', "room:{$ROOM}:history"), ':50',
    'history holds the newest 50');
my $entry = `$cli -p $port LINDEX 'room:{$ROOM}:history' -1`;
chomp $entry;
unlike($entry, qr/\n/, 'a history entry is one envelope');
like($entry, qr/^\{"type":"chat".*,"id":\d+,"ts":\d+\}$/,
    'and a complete one');

# No error came back to anyone, nothing else is pending.
for my $i (0 .. $#c) {
    my $e = $c[$i]->wait_for(type => 'error', timeout => 0.2);
    ok(!$e, "s" . ($i + 1) . ": no error") or diag(explain $e);
}

# An agree between two chats, in one write: relayed in order, then the
# sender shows ready.
my $s1 = $c[0];
$s1->send_json({ type => 'chat', data => { text => 'before' } });
$s1->send_json({ type => 'agree', data => {} });
$s1->send_json({ type => 'chat', data => { text => 'after' } });
my (@seen, $ready);
wait_until(sub {
    my $m = $c[1]->recv_json(0.5) or return 0;
    if ($m->{type} eq 'state') {
        $ready ||= grep { $_->{name} eq 's1' && $_->{ready} }
            @{ $m->{data}{players} };
    } else {
        push @seen, $m->{type} eq 'chat' ? $m->{data}{text} : $m->{type};
    }
    return $ready && @seen >= 3;
}, timeout => 5, interval => 0);
ok($ready, 's2 sees s1 ready');
is_deeply(\@seen, [ 'before', 'agree', 'after' ],
    's2: chat, agree, chat in order') or diag(explain \@seen);

Rooms::Test::finish();
