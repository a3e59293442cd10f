#!/usr/bin/perl

# A client that stops reading while its room keeps flowing is closed with
# 1008 "slow consumer" once its output queue passes
# rooms_output_queue_size; the other members receive every message, in
# order and on time.  Small socket buffers on both sides (sndbuf on the
# listen socket, SO_RCVBUF on the client) make the queue fill quickly.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(wait_until);
use Rooms::Test::Raw;

my $N = 30;            # messages sent
my $TEXT = 8000;       # bytes of text per message
my $QUEUE = 32768;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;

my $port = $t->start_nginx(workers => 1, listen => 'sndbuf=4k',
    ws => "rooms_output_queue_size $QUEUE; rooms_ping_interval 1s;");

sub join_room {
    my ($name, %o) = @_;

    my $c = Rooms::Test::Raw->connect(port => $port, room => 'SLOW',
        name => $name, %o);
    ok(ref $c, "$name upgrades") or return;

    my $w = $c->next_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome");

    return $c;
}

my $sender = join_room('sender');
my $reader = join_room('reader');
my $slow = join_room('slow', rcvbuf => 2048);

my (%got, %at);

# reads what $c has, without waiting
sub drain {
    my ($who, $c) = @_;

    while (my $m = $c->next_json(0.002)) {
        next unless ($m->{type} // '') eq 'chat';
        push @{ $got{$who} }, substr($m->{data}{text}, 0, 8);
        $at{$who} = time;
    }
}

my @texts = map { sprintf('m%05d', $_) . ('.' x ($TEXT - 6)) } 1 .. $N;
my $start = time;

for my $i (0 .. $N - 1) {
    $sender->send_json({ type => 'chat', data => { text => $texts[$i] } });

    my $until = time + 0.025;    # 40 messages/s: under any rate limit
    while (time < $until) {
        drain(sender => $sender);
        drain(reader => $reader);
    }
}
my $sent = time;

my $deadline = time + 5;
while (time < $deadline
    && (@{ $got{reader} || [] } < $N || @{ $got{sender} || [] } < $N))
{
    drain(sender => $sender);
    drain(reader => $reader);
}

my @want = map { substr($_, 0, 8) } @texts;
is_deeply($got{reader}, \@want, "reader received all $N messages in order");
is_deeply($got{sender}, \@want, "sender received all $N messages in order");
cmp_ok(($at{reader} // 1e10) - $sent, '<', 1.5,
    'the room was not slowed down by the slow member');

# Now the slow client reads, well after it was kicked (longer than the
# 3 s the server waits for a close frame it sent): a prefix of the
# messages, intact, then 1008.  The close frame was sent at once, not
# queued behind what the client lagged (issue 9, item 5).
ok(wait_until(sub {
        grep { /client too slow/ } do { open my $fh, '<', $t->error_log; <$fh> }
    }, timeout => 10), 'the slow client was kicked');
sleep 4;

my (@slow, $code, $reason);
$deadline = time + 10;
while (time < $deadline) {
    my $f = $slow->read_frame($deadline - time) or last;
    if ($f->{op} == 1) {
        my $m = eval { JSON::PP::decode_json($f->{payload}) };
        push @slow, substr($m->{data}{text}, 0, 8)
            if $m && ($m->{type} // '') eq 'chat';
    } elsif ($f->{op} == 8) {
        ($code, $reason) = unpack('n a*', $f->{payload});
        last;
    }
}

my $eof = defined $code
    ? do { $slow->send_frame(op => 8, payload => pack('n', $code));
           $slow->wait_eof(5) }
    : $slow->eof;

is($code, 1008, 'slow client: a close frame, 1008, not a cut stream');
is($reason, 'slow consumer', 'slow client: reason "slow consumer"');
ok($eof, 'slow client: TCP connection closed');
# What the socket buffers held and the frame being written, not the
# rest of its queue (3 messages before the fix, 1 after).
note("slow client read " . scalar(@slow) . " messages before its close");
cmp_ok(scalar @slow, '<=', 2,
    'slow client: its unsent queue was dropped for the close frame');
is_deeply(\@slow, [ @want[0 .. $#slow] ],
    'slow client: what it got is an intact, ordered prefix');

ok(scalar(grep { /client too slow/ } do {
    open my $fh, '<', $t->error_log or die; <$fh>
}), 'error.log tells the client was too slow');

# The room goes on for the others.
$sender->send_json({ type => 'chat', data => { text => 'after' } });
my $m = $reader->wait_json(type => 'chat', timeout => 5);
is($m && $m->{data}{text}, 'after', 'the room still flows');

$t->finish;
