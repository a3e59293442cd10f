#!/usr/bin/perl

# Gap-free joins when the subscriber connection lags: stack a's sidecar
# reaches Redis through a proxy that delays everything Redis sends on the
# subscriber connection by 100 ms (Rooms::Test::DelayProxy), so the reply
# of a join's `sync` script (command connection) always arrives before the
# live copies of messages published just before it.  Those copies have
# ids <= the snapshot's seq and were backfilled already: they must not
# reach the joiner again.  A loaded machine does the same now and then
# (two sockets, no order between them); this makes it happen every time.
#
# Checked: joins into a room that stack a subscribes afresh each time,
# joins while another member keeps the room subscribed (and that member
# gets every message once, in order), and a client whose chats are
# pipelined behind its upgrade request in a fresh room.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use Rooms::Test qw(publish_paced);
use Rooms::Test::DelayProxy;
use Rooms::Test::Raw qw(frame);

my $DELAY = 0.1;
my $HISTORY = 20;
my $JOINS = 6;             # per phase
my $PUBLISH = 2000;        # at most, one every 4 ms

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $redis = $ta->start_redis;
my $proxy = Rooms::Test::DelayProxy->start(port => $ta->redis_port,
    delay => $DELAY);
my @args = (args => [ '--history-length', $HISTORY, '--rate-limit', 0 ]);
$ta->start_sidecar($proxy->url, @args);
$tb->start_sidecar($redis, @args);
my $port = $ta->start_nginx;
$tb->start_nginx;

# --- chats pipelined behind the upgrade, fresh rooms -------------------------

for my $r (1 .. 3) {
    my $N = $HISTORY;          # all of them fit in the backfill
    my $all = join '', map {
        frame(payload => qq({"type":"chat","data":{"text":"c$_"}}))
    } 1 .. $N;
    my $c = Rooms::Test::Raw->connect(port => $port, room => "PIPE$r",
        name => "piped$r", after => $all);
    ok(ref $c, "pipelined $r: upgraded") or next;

    my $w = $c->next_json(5);
    is($w && $w->{type}, 'welcome', "pipelined $r: welcome first");
    my @got;
    while (my $m = $c->wait_json(type => 'chat',
        timeout => @got < $N ? 5 : 3 * $DELAY + 0.2)) {
        push @got, $m->{data}{text};
        last if @got > $N + 5;
    }
    is("@got", join(' ', map { "c$_" } 1 .. $N),
        "pipelined $r: each chat once, in order");
    $c->close;
}

# --- joins while a second stack publishes ------------------------------------

my $pub = $tb->connect('FLOW', 'pub');
ok(ref $pub, 'publisher joins on stack b')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
is($pub->recv_json(5)->{type}, 'welcome', 'publisher: welcome');

# The publisher runs in a child: chat "k" for k = 1 .. $PUBLISH, in order.
my $child = publish_paced($pub, $PUBLISH, 0.004);

# A join: welcome, then the backfill and 15 live chats.  Returns an error
# text, or '' when the join was exact; $last gets the newest k seen.
sub check_join {
    my ($j, $last) = @_;

    my ($err, $newest) = $ta->check_join(room => 'FLOW', name => "j$j",
        history => $HISTORY, min_chats => $HISTORY + 15);
    $$last = $newest if $newest;

    return $err;
}

# Wait until the history is full.
{
    my $probe = $tb->connect('FLOW', 'probe');
    $probe->recv_json(5);
    ok($probe->wait_for(type => 'chat', timeout => 5,
        match => sub { $_[0]{data}{k} > $HISTORY + 5 }),
        'publishing has begun');
    $probe->close;
}

my $last = 0;
for my $phase ('subscribing each time', 'room kept subscribed') {
    my $watcher;
    if ($phase eq 'room kept subscribed') {
        $watcher = $ta->connect('FLOW', 'watcher');
        is($watcher->recv_json(5)->{type}, 'welcome', 'watcher: welcome');
    }

    my ($ok, $detail) = (0, '');
    for my $j (1 .. $JOINS) {
        my $err = check_join($j, \$last);
        if ($err ne '') {
            $detail = $err;
            last;
        }
        $ok++;
    }
    is($ok, $JOINS, "$phase: every join ($JOINS) exact: $HISTORY "
        . 'backfilled, then live, no gap, no duplicate') or diag($detail);

    next unless $watcher;
    my @k = map { $_->{data}{k} }
        grep { $_->{type} eq 'chat' } $watcher->collect(timeout => 0.5);
    my @bad = grep { $k[$_] != $k[$_ - 1] + 1 } 1 .. $#k;
    ok(@k > 50 && !@bad, 'watcher: every chat once, in order, across the '
        . 'joins') or diag('chats=' . @k . " bad at [@bad]");
    $watcher->close;
}
cmp_ok($last, '<', $PUBLISH, 'the joins happened while publishing');

kill 'TERM', $child;
waitpid($child, 0);
$pub->close;

$ta->finish;
$proxy->stop;
