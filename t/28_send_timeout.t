#!/usr/bin/perl

# send_timeout counts from the last write that made progress, as in
# nginx's own writers (issue 9, item 4): a client that reads steadily but
# slowly (about 20 KB/s) behind a queue that takes several send_timeouts
# to drain stays connected and gets every message; one that stops
# reading is closed once send_timeout passes without progress.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test;
use Rooms::Test::Raw;

my $N = 24;            # messages
my $TEXT = 8000;       # bytes of text each: ~190 KB in all

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, args => [ '--rate-limit', 0 ]);

my $port = $t->start_nginx(workers => 1, listen => 'sndbuf=4k',
    ws => 'rooms_output_queue_size 1m; send_timeout 1s;');

sub join_room {
    my ($name, %o) = @_;
    my $c = Rooms::Test::Raw->connect(port => $port, room => 'PACE',
        name => $name, %o);
    ok(ref $c, "$name upgrades") or BAIL_OUT('upgrade refused');
    my $w = $c->next_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome");
    return $c;
}

my $sender = join_room('sender');
my $slow = join_room('slow', rcvbuf => 2048);
my $stuck = join_room('stuck', rcvbuf => 2048);

for my $i (1 .. $N) {
    $sender->send_json({ type => 'chat',
        data => { text => sprintf('m%05d', $i) . ('.' x ($TEXT - 6)) } });
}

# slow: 2 KB every 100 ms (about 20 KB/s): ~10 s for the whole queue,
# ten times send_timeout; bounded at 30 s
my ($got, $closed, $eof) = (0, undef, 0);
my $start = time;
READ: while (time - $start < 30 && $got < $N) {
    sleep 0.1;
    my $n = sysread($slow->sock, $slow->{buf}, 2048, length $slow->{buf});
    if (defined $n && $n == 0) {
        $eof = 1;
        last;
    }
    while (my $f = $slow->_parse) {
        if ($f->{op} == 8) {
            $closed = unpack('n', $f->{payload});
            last READ;
        }
        $got++ if $f->{op} == 1 && $f->{payload} =~ /"type":"chat"/;
    }
}
my $took = time - $start;

is($got, $N, "the slow reader got all $N messages");
ok(!defined $closed && !$eof, 'the slow reader stayed connected')
    or diag('closed with ' . ($closed // 'EOF'));
cmp_ok($took, '>', 3, sprintf('reading took %.1f s, several send_timeouts',
    $took));

# stuck never read: cut once 1 s passed without progress, long ago
ok($stuck->wait_eof(5), 'the client that stopped reading was closed');
ok(scalar(grep { /timed out reading/ } do {
    open my $fh, '<', $t->error_log or die; <$fh>
}), 'error.log: client timed out reading');

$t->finish;
