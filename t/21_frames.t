#!/usr/bin/perl

# RFC 6455 framing over raw sockets: every close code the frame parser
# answers with (1002, 1003, 1007, 1009; each followed by the end of the
# TCP connection), the client close handshake, fragmentation with pings
# in between, a handshake and frames written one byte at a time, many
# frames in one write (also pipelined behind the upgrade request), and a
# message of exactly the size limit against one byte more; and the error
# lines of upgraded connections name the connection and its client.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test;
use Rooms::Test::Raw qw(frame);

my $LIMIT = 16384;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
my $port = $t->start_nginx;

my $n = 0;


# A client past its welcome, in room $room (default: a fresh room).
sub client {
    my (%o) = @_;

    $n++;
    my $c = Rooms::Test::Raw->connect(port => $port,
        room => $o{room} // "F$n", name => "raw$n", %o);

    unless (ref $c) {
        fail("client $n upgrades");
        return;
    }

    my $w = $c->next_json(5);
    unless ($w && $w->{type} eq 'welcome') {
        fail("client $n gets its welcome");
        return;
    }

    return $c;
}


# chat($text, %frame_options): the bytes of a chat envelope in one frame.
sub chat_bytes {
    my ($text) = @_;
    return qq({"type":"chat","data":{"text":"$text"}});
}


# closes($what, $status, $bytes, %o): the client sends $bytes; it must get
# a close frame with $status and then see the connection end.
sub closes {
    my ($what, $status, $bytes, %o) = @_;

    my $c = client() or return;
    $c->send_raw($bytes);

    my $start = time;
    my ($code, $reason, $eof) = $c->expect_close(5);

    is($code, $status, "$what: close $status")
        or diag('reason: ' . ($reason // '(no close frame)'));
    ok($eof, "$what: TCP connection closed after the close frame");
    cmp_ok(time - $start, '<', 2.5, "$what: closed at once")
        if $o{fast};

    $c->close;
}


# --- 1002 -------------------------------------------------------------------

my $hello = chat_bytes('hello');

closes('unmasked text frame', 1002, frame(payload => $hello, mask => 0),
    fast => 1);
closes('unmasked ping', 1002, frame(op => 9, mask => 0));
closes('RSV1 set', 1002, frame(payload => $hello, rsv => 4));
closes('RSV2 set', 1002, frame(payload => $hello, rsv => 2));
closes('RSV3 on a ping', 1002, frame(op => 9, rsv => 1));
closes("reserved opcode $_", 1002, frame(op => $_, payload => 'x'))
    for 3, 7, 0xb, 0xf;
closes('continuation without a message', 1002,
    frame(op => 0, payload => 'x'));
closes('text inside a fragmented message', 1002,
    frame(payload => '{"type":', fin => 0) . frame(payload => $hello));
closes('ping of 126 bytes', 1002, frame(op => 9, payload => 'p' x 126));
closes('pong of 126 bytes', 1002, frame(op => 10, payload => 'p' x 126));
closes('close of 126 bytes', 1002,
    frame(op => 8, payload => pack('n', 1000) . 'r' x 124));
closes('fragmented ping', 1002, frame(op => 9, fin => 0, payload => 'a'));
closes('fragmented close', 1002,
    frame(op => 8, fin => 0, payload => pack('n', 1000)));
closes('64-bit length with the top bit set (header only)', 1002,
    frame(len => 2**63 + 5, header_only => 1), fast => 1);
closes('close with 1 byte', 1002, frame(op => 8, payload => 'x'));
closes("close status $_", 1002, frame(op => 8, payload => pack('n', $_)))
    for 0, 999, 1004, 1005, 1006, 1015, 2999, 5000;

# --- 1003 -------------------------------------------------------------------

closes('binary frame', 1003, frame(op => 2, payload => "\x00\x01"));
closes('fragmented binary', 1003, frame(op => 2, payload => 'x', fin => 0));

# --- 1007 -------------------------------------------------------------------

closes('invalid UTF-8 byte', 1007, frame(payload => "{\"a\":\"\xff\"}"));
closes('overlong "/" (C0 AF)', 1007, frame(payload => "\xc0\xaf"));
closes('overlong 3-byte NUL', 1007, frame(payload => "\xe0\x80\x80"));
closes('UTF-16 surrogate (ED A0 80)', 1007, frame(payload => "\xed\xa0\x80"));
closes('code point over U+10FFFF', 1007, frame(payload => "\xf4\x90\x80\x80"));
closes('text ending inside a sequence', 1007, frame(payload => "ab\xe2\x9c"));
closes('invalid UTF-8 across fragments', 1007,
    frame(payload => "ab\xe2", fin => 0) . frame(op => 0, payload => "\x28"));
closes('fragments ending inside a sequence', 1007,
    frame(payload => "ab\xe2", fin => 0) . frame(op => 0, payload => "\x9c"));
closes('close reason not UTF-8', 1007,
    frame(op => 8, payload => pack('n', 1000) . "\xff\xfe"));

# --- 1009 -------------------------------------------------------------------

closes('16-bit length over the limit, header only', 1009,
    frame(len => $LIMIT + 1, header_only => 1), fast => 1);
closes('64-bit length of 1 GiB, header only', 1009,
    frame(len => 2**30, header_only => 1), fast => 1);
closes('fragments adding up to limit + 1, last header only', 1009,
    frame(payload => 'a' x 10000, fin => 0)
    . frame(op => 0, len => $LIMIT - 10000 + 1, header_only => 1), fast => 1);

# --- size limit exactly -----------------------------------------------------

sub envelope_of {
    my ($size) = @_;
    my $pad = $size - length chat_bytes('');
    return chat_bytes('x' x $pad);
}

{
    my $c = client();
    my $b = envelope_of($LIMIT);
    is(length $b, $LIMIT, "envelope of exactly $LIMIT bytes built");
    $c->send_frame(payload => $b);
    my $m = $c->wait_json(type => 'chat', timeout => 5);
    is(length($m && $m->{data}{text} // ''), $LIMIT - length chat_bytes(''),
        'message of exactly the limit is relayed whole');

    # the same limit made of fragments
    my $third = int($LIMIT / 3);
    $c->send_raw(frame(payload => substr($b, 0, $third), fin => 0)
        . frame(op => 0, payload => substr($b, $third, $third), fin => 0)
        . frame(op => 0, payload => substr($b, 2 * $third)));
    $m = $c->wait_json(type => 'chat', timeout => 5);
    is(length($m && $m->{data}{text} // ''), $LIMIT - length chat_bytes(''),
        'fragmented message of exactly the limit is relayed whole');

    $c->send_frame(payload => envelope_of($LIMIT + 1));
    my ($code, undef, $eof) = $c->expect_close(5);
    is($code, 1009, 'limit + 1 bytes: close 1009');
    ok($eof, 'limit + 1 bytes: connection closed');
}

# --- client close handshake -------------------------------------------------

for my $case ([ 'close 1000', pack('n', 1000), 1000 ],
    [ 'close without status', '', 1000 ],
    [ 'close 4000 with a reason', pack('n', 4000) . 'bye ✓', 4000 ],
    [ 'close 1001', pack('n', 1001), 1001 ])
{
    my ($what, $payload, $want) = @$case;
    my $c = client();
    $c->send_frame(op => 8, payload => $payload);
    my ($code, undef, $eof) = $c->expect_close(5);
    is($code, $want, "client $what: server answers close $want");
    ok($eof, "client $what: server closes the TCP connection");
}

{
    # frames after the close frame are ignored, the handshake completes
    my $c = client();
    $c->send_raw(frame(op => 8, payload => pack('n', 1000))
        . frame(payload => $hello) . frame(op => 2, payload => 'x'));
    my ($code, undef, $eof) = $c->expect_close(5);
    is($code, 1000, 'data after the close frame: still close 1000');
    ok($eof, 'data after the close frame: connection closed');
}

# --- fragmentation with interleaved control frames --------------------------

{
    my $c = client(room => 'FRAG');
    my $text = "frag \xe2\x9c\x93 end";
    my $bytes = chat_bytes($text);
    utf8::decode($text);

    # split inside the 3-byte "✓"
    my $cut = index($bytes, "\xe2\x9c\x93") + 1;

    $c->send_raw(frame(payload => substr($bytes, 0, $cut), fin => 0)
        . frame(op => 9, payload => 'p1'));
    $c->send_raw(frame(op => 0, payload => substr($bytes, $cut, 2),
        fin => 0));
    $c->send_raw(frame(op => 10, payload => 'unsolicited')
        . frame(op => 0, payload => '', fin => 0)
        . frame(op => 9, payload => 'p2')
        . frame(op => 0, payload => substr($bytes, $cut + 2)));

    my $m = $c->wait_json(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, $text, 'fragmented message delivered whole');

    my @pongs;
    while (my $f = $c->read_frame(0.3)) {
        push @pongs, $f->{payload} if $f->{op} == 10;
    }
    unshift @pongs, @{ $c->{pongs} || [] };
    # both, or only p2 if both pings came in one read (RFC 6455 5.5.3)
    ok("@pongs" eq 'p1 p2' || "@pongs" eq 'p2',
        'interleaved pings answered, the last one surely')
        or diag("pongs: @pongs");

    # an empty text message and an empty fragmented one: not JSON
    $c->send_raw(frame(payload => '') . frame(payload => '', fin => 0)
        . frame(op => 0, payload => ''));
    for (1, 2) {
        my $e = $c->wait_json(type => 'error', timeout => 5);
        is($e && $e->{data}{code}, 'bad_envelope',
            "empty message $_: bad_envelope");
    }

    $c->send_frame(op => 8, payload => pack('n', 1000));
    my ($code) = $c->expect_close(5);
    is($code, 1000, 'after fragments: clean close');
}

# --- one byte at a time -----------------------------------------------------

{
    my $listener = client(room => 'BYTES');

    my $bytes = frame(payload => chat_bytes('slow 1'))
        . frame(op => 9, payload => 'one')
        . frame(payload => substr(chat_bytes('slow 2'), 0, 10), fin => 0)
        . frame(op => 0, payload => substr(chat_bytes('slow 2'), 10))
        . frame(payload => envelope_of(300), len16 => 1);

    my $c = Rooms::Test::Raw->connect(port => $port, room => 'BYTES',
        name => 'bytewise', byte_by_byte => 1);
    ok(ref $c, 'handshake written one byte at a time: 101');

    SKIP: {
        skip 'no client', 5 unless ref $c;

        my $w = $c->next_json(5);
        is($w && $w->{type}, 'welcome', 'bytewise: welcome');

        for my $i (0 .. length($bytes) - 1) {
            $c->send_raw(substr($bytes, $i, 1));
            Time::HiRes::sleep(0.001);
        }

        my @got = map { $listener->wait_json(type => 'chat', timeout => 5) }
            1 .. 3;
        is_deeply([ map { $_ && length $_->{data}{text} } @got ],
            [ 6, 6, 300 - length chat_bytes('') ],
            'bytewise frames: three messages relayed whole, in order');
        is($got[1] && $got[1]{data}{text}, 'slow 2', 'bytewise: fragments');

        my $pong;
        for (1 .. 5) {
            my $f = $c->read_frame(2) or last;
            if ($f->{op} == 10) { $pong = $f->{payload}; last }
        }
        is($pong, 'one', 'bytewise: ping answered');

        $c->send_frame(op => 8, payload => pack('n', 1000));
        my ($code, undef, $eof) = $c->expect_close(5);
        ok($code == 1000 && $eof, 'bytewise: clean close');
    }

    $listener->close;
}

# --- many frames in one write -----------------------------------------------

{
    my $N = 30;
    my $all = join '', map {
        frame(payload => chat_bytes("c$_")) . ($_ % 7 ? '' : frame(op => 9,
            payload => "p$_"))
    } 1 .. $N;

    # pipelined right behind the upgrade request
    my $c = Rooms::Test::Raw->connect(port => $port, room => 'COAL',
        name => 'coalesced', after => $all);
    ok(ref $c, 'upgrade with frames pipelined behind it: 101');

    SKIP: {
        skip 'no client', 3 unless ref $c;

        my $w = $c->next_json(5);
        is($w && $w->{type}, 'welcome', 'pipelined: welcome first');

        my @got = map { $c->wait_json(type => 'chat', timeout => 5) } 1 .. $N;
        is_deeply([ map { $_ && $_->{data}{text} } @got ],
            [ map { "c$_" } 1 .. $N ],
            "pipelined: all $N messages relayed in order");

        # RFC 6455 5.5.3: pings that arrive before their pongs are sent
        # may be answered by one pong for the latest; so: pongs for some
        # of them, in order, each once, the last one answered
        my @pongs = @{ $c->{pongs} || [] };
        my @pings = map { "p$_" } grep { !($_ % 7) } 1 .. $N;
        my %rank = map { $pings[$_] => $_ } 0 .. $#pings;
        my @bad = grep { !defined $rank{$pongs[$_]}
            || ($_ && $rank{$pongs[$_]} <= $rank{$pongs[$_ - 1]}) }
            0 .. $#pongs;
        ok(@pongs && !@bad && $pongs[-1] eq $pings[-1],
            'pipelined: pings answered in order, the last one surely')
            or diag("pongs: @pongs");

        # and once more on the open connection, in one write
        $c->{pongs} = [];
        $c->send_raw($all);
        @got = map { $c->wait_json(type => 'chat', timeout => 5) } 1 .. $N;
        is_deeply([ map { $_ && $_->{data}{text} } @got ],
            [ map { "c$_" } 1 .. $N ],
            "coalesced: all $N messages relayed in order");

        $c->send_frame(op => 8, payload => pack('n', 1000));
        my ($code) = $c->expect_close(5);
        is($code, 1000, 'coalesced: clean close');
    }
}

# the worker survived all of it
{
    my $c = client(room => 'AFTER');
    ok($c, 'a client still connects after all the broken ones');
    if ($c) {
        $c->send_frame(payload => chat_bytes('alive'));
        my $m = $c->wait_json(type => 'chat', timeout => 5);
        is($m && $m->{data}{text}, 'alive', 'and chats');
    }
}

# The error lines of upgraded connections still say which connection and
# client they are about: the log, its context and the client's address
# were moved out of the connection's first pool, destroyed at the upgrade
# (ngx_http_rooms_conn_move()).
{
    open(my $fh, '<', $t->error_log) or die "error.log: $!";
    my @lines = grep { /rooms: client protocol error/ } <$fh>;
    close $fh;

    my @bad = grep {
        !/\*\d+ rooms: client protocol error .* while serving WebSocket, (?x)
            client:\ 127\.0\.0\.1,\ server:\ 127\.0\.0\.1:$port$/
    } @lines;

    ok(@lines >= 5, scalar(@lines) . ' protocol errors logged');
    is(scalar(@bad), 0, 'each with its connection, action, client and server')
        or diag(@bad[0 .. ($#bad < 2 ? $#bad : 2)]);
}

$t->finish;
