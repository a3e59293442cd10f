#!/usr/bin/perl

# A worker's link that breaks the rules (docs/protocol.md) is closed by
# the sidecar, one that keeps them is served, whatever the bytes' split:
# the real sidecar, a raw Unix socket in place of an nginx worker.  The
# same rules are fuzzed (fuzz/link_fuzz.cc, link_reader and
# link_frame_fault); this checks that the sidecar applies them: no frame
# before HELLO, HELLO of version 2, OPEN with a valid room, name and
# player id, no malformed frame; a frame of an unknown type is skipped.

use strict;
use warnings;

use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(wait_until);

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;

sub frame {
    my ($type, $body) = @_;
    return pack('NC', 1 + length $body, $type) . $body;
}

sub str8 { pack('C', length $_[0]) . $_[0] }

my $HELLO = frame(0x01, pack('nN', 2, $$));

sub open_frame {
    my ($conn, $room, $name, $player) = @_;
    return frame(0x02, pack('Q>CQ>', $conn, 0, 0)
        . str8($room) . str8($name) . str8($player));
}

sub link_up {
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $t->sidecar_socket) or die "connect: $!\n";
    $s->autoflush(1);
    return $s;
}

# Writes the bytes, `step` at a time (a flush between writes: separate
# reads in the sidecar, mostly).
sub send_bytes {
    my ($s, $bytes, $step) = @_;
    $step //= length $bytes;
    for (my $off = 0; $off < length $bytes; $off += $step) {
        syswrite($s, substr($bytes, $off, $step)) or return 0;
    }
    return 1;
}

# The frames the sidecar sent within `timeout` seconds, up to `want` of
# them, and whether it closed the link (EOF).
sub read_frames {
    my ($s, $want, $timeout) = @_;
    my ($buf, @frames, $eof) = ('');
    my $deadline = time + $timeout;
    my $sel = IO::Select->new($s);
    while (@frames < $want && time < $deadline) {
        next unless $sel->can_read($deadline - time);
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!$n) {
            $eof = 1;
            last;
        }
        while (length $buf >= 5) {
            my ($len, $type) = unpack('NC', $buf);
            last if length $buf < 4 + $len;
            push @frames, { type => $type,
                body => substr($buf, 5, $len - 1) };
            substr($buf, 0, 4 + $len, '');
        }
    }
    return (\@frames, $eof);
}

# True once the sidecar closed the link, within `timeout` seconds.
sub closed_by_sidecar {
    my ($s, $timeout) = @_;
    my (undef, $eof) = read_frames($s, 1e9, $timeout);
    return $eof;
}

# How many lines of the sidecar's log match.
sub log_count {
    my ($re) = @_;
    open my $fh, '<', $t->sidecar_log or return 0;
    return scalar grep { $_ =~ $re } <$fh>;
}

# A link that keeps the rules, its bytes one at a time: HELLO_ACK, an
# unknown type skipped, OPEN and ROOMS answered.
{
    my $s = link_up();
    ok(send_bytes($s, $HELLO . frame(0x42, 'from a newer worker')
        . open_frame(7, 'LINKOK', "Zo\xc3\xab", 'abc.1.7')
        . frame(0x05, pack('Q>', 99)), 1), 'good link: bytes sent one by one');
    my ($frames, $eof) = read_frames($s, 2, 10);
    my %by_type = map { $_->{type} => $_ } @$frames;
    ok($by_type{0x86}, 'good link: HELLO_ACK');
    ok($by_type{0x85}, 'good link: ROOMS_REPLY after an unknown frame type');
    is(unpack('Q>', $by_type{0x85}{body} // ''), 99,
        'good link: the reply answers request 99');
    ok(!$eof, 'good link: still open');
    close $s;
}

my @bad = (
    [ 'a frame before HELLO',
      open_frame(1, 'LINKBAD', 'n', 'abc.1.1') . $HELLO, qr/: no HELLO/ ],
    [ 'HELLO of version 1',
      frame(0x01, pack('nN', 1, $$)), qr/: unsupported version/ ],
    [ 'OPEN with a lower-case room code',
      $HELLO . open_frame(2, 'abcd', 'n', 'abc.1.2'), qr/: bad OPEN/ ],
    [ 'OPEN with a player id with a space',
      $HELLO . open_frame(3, 'LINKBAD', 'n', 'abc 1'), qr/: bad OPEN/ ],
    [ 'a frame of length 0',
      $HELLO . pack('N', 0) . "\x01", qr/malformed frame/ ],
    [ 'a CLOSE too short for its conn',
      $HELLO . frame(0x04, "\0" x 7), qr/malformed frame/ ],
    [ 'a frame over 16 MiB',
      $HELLO . pack('NC', 16 * 1024 * 1024 + 1, 0x03), qr/malformed frame/ ],
);

for my $case (@bad) {
    my ($what, $bytes, $logged) = @$case;
    my $before = log_count($logged);
    my $s = link_up();
    send_bytes($s, $bytes, 3);  # may fail once the sidecar closed it
    ok(closed_by_sidecar($s, 10), "$what: the sidecar closes the link");
    ok(wait_until(sub { log_count($logged) > $before }),
        "$what: logged");
    close $s;
}

# The sidecar is still there for a good link.
{
    my $s = link_up();
    send_bytes($s, $HELLO . frame(0x05, pack('Q>', 5)));
    my ($frames) = read_frames($s, 2, 10);
    is(scalar(grep { $_->{type} == 0x85 } @$frames), 1,
        'after the bad links, a good one is served');
    close $s;
}
ok($t->running('sidecar'), 'sidecar still running');

$t->finish;
