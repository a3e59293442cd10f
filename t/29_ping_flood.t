#!/usr/bin/perl

# A ping flood from a client that never reads costs at most one pending
# pong (issue 9, item 1; RFC 6455 5.5.3: a pong answers the latest ping):
# 2.4 MB of empty pings (400,000 frames) grow the worker by a few
# hundred KiB at most, not by ~160 bytes a ping; the client is not closed
# as a slow consumer; once it reads, it finds a handful of pongs, the
# last one answering its last ping; and the room still flows for others.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(proc_rss);
use Rooms::Test::Raw;

my $PINGS = 400_000;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
# small socket buffers on both sides: the pongs stay in the worker
my $port = do {
    # under scripts/sanitize: ASan would keep what the worker frees in
    # its quarantine (up to 256 MB), counted in the RSS measured here
    local $ENV{ASAN_OPTIONS} = ($ENV{ASAN_OPTIONS} // '')
        . ':quarantine_size_mb=0';
    $t->start_nginx(workers => 1, listen => 'sndbuf=4k');
};

my ($worker) = $t->workers;
ok($worker, "one worker ($worker)");

my $c = Rooms::Test::Raw->connect(port => $port, room => 'PING',
    name => 'flood', rcvbuf => 2048);
ok(ref $c, 'client joins') or BAIL_OUT('upgrade refused');
my $w = $c->next_json(5, no_pong => 1);
is($w && $w->{type}, 'welcome', 'welcome');

my $before = proc_rss($worker);

# empty pings, 1000 frames a write, the last one with a payload
my $ping = Rooms::Test::Raw::frame(op => 9);
for (1 .. $PINGS / 1000 - 1) {
    $c->send_raw($ping x 1000);
}
$c->send_raw(($ping x 999) . Rooms::Test::Raw::frame(op => 9,
    payload => 'last'));

# the worker has read them all once a chat sent after them comes back
$c->send_json({ type => 'chat', data => { text => 'after' } });
my ($pongs, $last, $chat) = (0, undef, undef);
while (my $f = $c->read_frame(5)) {
    if ($f->{op} == 10) {
        $pongs++;
        $last = $f->{payload};
    } elsif ($f->{op} == 1 && $f->{payload} =~ /"after"/) {
        $chat = 1;
        last;
    } elsif ($f->{op} == 8) {
        diag('closed: ' . unpack('n', $f->{payload}));
        last;
    }
}
my $grown = proc_rss($worker) - $before;

ok($chat, 'the chat sent after the flood arrives: the flood was read');
cmp_ok($grown, '<', 4096, "the worker grew by $grown KiB, not by "
    . int($PINGS * 160 / 1024) . ' KiB');
cmp_ok($pongs, '<', 2000, "the client got $pongs pongs for $PINGS pings");
is($last, 'last', 'the last pong answers the last ping');
ok(!$c->eof, 'the client was not closed');

$c->close;
$t->finish;
