#!/usr/bin/perl

# The join buffer is bounded in bytes (sync_buffer_bytes, docs/sidecar.md):
# live messages that arrive while a joiner waits for its snapshot are kept
# for it only up to that many bytes.  Past it the sidecar gives the buffer
# up and takes a fresh snapshot later (app_sync.cpp): the joiner still
# gets every message, once, in order, from history.
#
# Stack a reaches Redis through a proxy that delays every reply on the
# command connection by 100 ms (Rooms::Test::DelayProxy matching the
# connection's TIME handshake), so each join's `sync` reply comes late.
# With one nginx worker the joiner's OPEN and then a burst of chats from
# another member reach the sidecar in that order on the one link: the
# snapshot is taken before the burst is published, and the whole burst
# (about 3 KB) must wait in the buffer, over its 1 KiB bound.
#
# Then the same for a gap fill: the subscriber connection is cut while a
# member keeps publishing (200 chats a second for a second); each `sync`
# of the room's gap fill then sees more than 1 KiB arrive and is given up
# until the stream stops.  The attached member still gets every chat,
# once, in order.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test;
use Rooms::Test::DelayProxy;

my $ROOM = 'BUF';
my $BURST = 20;
my $ROUNDS = 4;

my $t = Rooms::Test->new;
$t->start_redis;
my $proxy = Rooms::Test::DelayProxy->start(port => $t->redis_port,
    delay => 0.1, match => qr/TIME/);
$t->start_sidecar($proxy->url, log_level => 'info',
    args => [ '--rate-limit', 0, '--history-length', 500,
              '--sync-buffer-bytes', 1024 ]);
$t->start_nginx(workers => 1);

my $pub = $t->connect($ROOM, 'pub');
ref $pub or BAIL_OUT('pub: upgrade refused');
ok($pub->wait_for(type => 'welcome', timeout => 5), 'pub: welcome');

my $log_from = -s $t->sidecar_log;
my $sent = 0;
for my $round (1 .. $ROUNDS) {
    my $j = $t->connect($ROOM, "j$round");
    ref $j or BAIL_OUT("j$round: upgrade refused");
    for (1 .. $BURST) {
        $sent++;
        $pub->send_json({ type => 'chat', data => { text => '', k => $sent } });
    }

    my $w = $j->wait_for(type => 'welcome', timeout => 5);
    ok($w, "j$round: welcome");
    my (@k, @id);
    my $deadline = time + 5;
    while (time < $deadline && (!@k || $k[-1] < $sent)) {
        my $m = $j->wait_for(type => 'chat', timeout => $deadline - time)
            or last;
        push @k, $m->{data}{k};
        push @id, $m->{id};
    }
    # and nothing more, doubled or late
    push @k, map { $_->{data}{k} }
        $j->collect(type => 'chat', timeout => 0.3);
    is("@k", join(' ', 1 .. $sent), "j$round: every chat once, in order");
    my @dec = grep { $id[$_] <= $id[$_ - 1] } 1 .. $#id;
    is(scalar @dec, 0, "j$round: ids increasing");
    $j->close;
}

# --- a gap fill ---------------------------------------------------------

my $rx = $t->connect($ROOM, 'rx');
ref $rx or BAIL_OUT('rx: upgrade refused');
ok($rx->wait_for(type => 'welcome', timeout => 5), 'rx: welcome');
my $first = $sent + 1;
$sent++;
$pub->send_json({ type => 'chat', data => { text => '', k => $sent } });
ok($rx->wait_for(type => 'chat', timeout => 5,
    match => sub { $_[0]{data}{k} == $first }), 'rx: attached, gets chats');

like(Rooms::Test::redis_command($t->redis_port, 'CLIENT', 'KILL', 'TYPE',
    'pubsub'), qr/^:[1-9]/, 'the subscriber connection is cut');
my $next = time;
for (1 .. 200) {
    $sent++;
    $pub->send_json({ type => 'chat', data => { text => '', k => $sent } });
    $next += 0.005;
    my $left = $next - time;
    sleep $left if $left > 0;
}
my @k;
my $deadline = time + 10;
while (time < $deadline && (!@k || $k[-1] < $sent)) {
    my $m = $rx->wait_for(type => 'chat', timeout => $deadline - time)
        or last;
    push @k, $m->{data}{k};
}
push @k, map { $_->{data}{k} } $rx->collect(type => 'chat', timeout => 0.3);
is("@k", join(' ', $first + 1 .. $sent),
    'rx: every chat once, in order, across the gap fill');

# the burst went past the bound: the path under test was taken
my $log = do {
    open my $fh, '<', $t->sidecar_log or die;
    seek $fh, $log_from, 0;
    local $/;
    <$fh>;
};
my $over = () = $log =~ /sync buffer over 1024 bytes room=$ROOM\b/g;
cmp_ok($over, '>', $ROUNDS,
    "the buffer was given up and the room snapshotted again ($over times)");
unlike($log, qr/dropping live messages/, 'no live message dropped');

$proxy->stop;
$t->finish;
