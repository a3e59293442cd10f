package Rooms::Test::Raw;

# A raw-socket WebSocket client for protocol tests: it writes exactly the
# bytes a test builds (broken frames, odd splits, pipelined data) and
# reads server frames one by one, so a test can check a close frame's
# status and that the TCP connection ends after it.  Works over TLS too
# (ssl => 1, needs IO::Socket::SSL).  Every wait is bounded.
#
#   my $c = Rooms::Test::Raw->connect(port => $p, room => 'R', name => 'A');
#   ref $c or die "refused: HTTP $c";
#   $c->send_frame(op => 1, payload => '{"type":"chat","data":{"text":""}}');
#   my ($code, $reason, $eof) = $c->expect_close(5);
#
# Also raw_http($port, $request) for handshake answers of any shape.
#
# permessage-deflate (RFC 7692): deflate_raw() and inflate_raw() make and
# read message payloads as the extension sends them (raw DEFLATE, no
# context takeover, the trailing 00 00 ff ff stripped); next_json()
# inflates a text message that comes with RSV1 and counts it in
# $c->{inflated}.

use strict;
use warnings;

use Compress::Raw::Zlib qw(Z_OK Z_STREAM_END Z_BUF_ERROR Z_SYNC_FLUSH
    Z_BEST_COMPRESSION Z_DEFAULT_COMPRESSION);
use Digest::SHA qw(sha1_base64);
use Exporter qw(import);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use Socket qw(IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_RCVBUF
    inet_aton pack_sockaddr_in);
use Time::HiRes qw(time sleep);

our @EXPORT_OK = qw(raw_http frame upgrade_request deflate_raw inflate_raw);

my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
my $JSON = JSON::PP->new->utf8->canonical;


# frame(op => OPCODE, payload => BYTES, fin => 1, rsv => 0, mask => 1,
#       len => override of the length field, header_only => 0):
# the bytes of one client frame.
sub frame {
    my (%o) = @_;

    my $op = $o{op} // 1;
    my $payload = $o{payload} // '';
    my $fin = $o{fin} // 1;
    my $mask = $o{mask} // 1;
    my $len = $o{len} // length $payload;

    my $b = chr(($fin ? 0x80 : 0) | (($o{rsv} // 0) << 4) | $op);
    my $m = $mask ? 0x80 : 0;

    if ($len < 126 && !$o{len16} && !$o{len64}) {
        $b .= chr($m | $len);
    } elsif ($len <= 0xffff && !$o{len64}) {
        $b .= chr($m | 126) . pack('n', $len);
    } else {
        $b .= chr($m | 127) . pack('Q>', $len);
    }

    return $b if $o{header_only} && !$mask;

    if ($mask) {
        my $key = $o{key} // pack('N', int rand 0xffffffff);
        $b .= $key;
        return $b if $o{header_only};
        my $k = $key x (int(length($payload) / 4) + 1);
        $b .= $payload ^ substr($k, 0, length $payload);
    } else {
        $b .= $payload;
    }

    return $b;
}


# deflate_raw($bytes, level => 6): a permessage-deflate payload.
sub deflate_raw {
    my ($bytes, %o) = @_;

    my ($d, $st) = Compress::Raw::Zlib::Deflate->new(
        -WindowBits => -15, -AppendOutput => 1,
        -Level => $o{level} // Z_DEFAULT_COMPRESSION);
    die "deflate init: $st" unless $st == Z_OK;

    my $out = '';
    $d->deflate($bytes, $out) == Z_OK or die 'deflate failed';
    $d->flush($out, Z_SYNC_FLUSH) == Z_OK or die 'deflate flush failed';
    $out =~ s/\x00\x00\xff\xff\z// or die 'no sync flush marker';

    return $out;
}


# inflate_raw($payload): the message of a permessage-deflate payload;
# undef if it is not valid DEFLATE.
sub inflate_raw {
    my ($payload) = @_;

    my ($i, $st) = Compress::Raw::Zlib::Inflate->new(
        -WindowBits => -15, -AppendOutput => 1, -ConsumeInput => 1,
        -LimitOutput => 0, -Bufsize => 65536);
    die "inflate init: $st" unless $st == Z_OK;

    my $in = $payload . "\x00\x00\xff\xff";
    my $out = '';
    $st = $i->inflate($in, $out);

    return ($st == Z_OK || $st == Z_STREAM_END || $st == Z_BUF_ERROR)
        ? $out : undef;
}


# The text of an upgrade request.
sub upgrade_request {
    my (%o) = @_;

    my $path = $o{path} // '/ws';
    my @q;
    push @q, 'room=' . _esc($o{room}) if defined $o{room};
    push @q, 'name=' . _esc($o{name}) if defined $o{name};
    $path .= '?' . join('&', @q) if @q;

    my %h = (
        'Host' => "127.0.0.1:$o{port}",
        'Upgrade' => 'websocket',
        'Connection' => 'Upgrade',
        'Sec-WebSocket-Key' => $o{key},
        'Sec-WebSocket-Version' => '13',
        %{ $o{headers} || {} },
    );

    my $req = ($o{method} // 'GET') . " $path " . ($o{proto} // 'HTTP/1.1')
        . "\r\n";
    for my $k (sort keys %h) {
        next unless defined $h{$k};
        $req .= "$k: $h{$k}\r\n";
    }

    return "$req\r\n";
}


# raw_http($port, $request, timeout => 5, ssl => 0, then => $request2):
# ($status, $head, $body, $rest) of the answer, reading the body by its
# Content-Length (or to EOF); () without an answer.  With `then`, a second
# request is pipelined behind the first (it should say "Connection:
# close") and everything after the first answer is read to EOF into
# $rest: the next answer, or a sign that the first request did more than
# answer.
sub raw_http {
    my ($port, $req, %o) = @_;

    my $s = _socket($port, %o) or return;
    _write_all($s, $req . ($o{then} // '')) or return;

    my $buf = '';
    my $deadline = time + ($o{timeout} // 5);

    while (1) {
        if (!defined $o{then} && $buf =~ /\r\n\r\n/) {
            my ($head, $body) = split /\r\n\r\n/, $buf, 2;
            my ($cl) = $head =~ /^Content-Length:\s*(\d+)/mi;
            last if defined $cl && length $body >= $cl;
            last if $head =~ m{^HTTP/1\.1 101};
        }
        my $n = _read($s, \$buf, $deadline);
        last unless $n;
    }

    close $s;

    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    return unless defined $head && $head =~ m{^HTTP/1\.[01] (\d{3})};
    my $status = $1;

    $body //= '';
    my $rest = '';
    my ($cl) = $head =~ /^Content-Length:\s*(\d+)/mi;
    if (defined $cl && length $body > $cl) {
        $rest = substr($body, $cl);
        $body = substr($body, 0, $cl);
    }

    return ($status, $head, $body, $rest);
}


# connect(port => P, room => R, name => N, path => '/ws', headers => {},
#         ssl => 0, rcvbuf => BYTES, timeout => 5, byte_by_byte => 0,
#         after => BYTES to write together with the request)
#
# Returns the client after a valid 101, else the HTTP status (0 if none).
sub connect {
    my ($class, %o) = @_;

    my $timeout = $o{timeout} // 5;
    my $key = encode_base64(join('', map { chr int rand 256 } 1 .. 16), '');

    my $s = _socket($o{port}, %o) or return 0;

    my $self = bless { sock => $s, buf => '', key => $key }, $class;

    my $req = upgrade_request(%o, key => $key) . ($o{after} // '');

    if ($o{byte_by_byte}) {
        for my $i (0 .. length($req) - 1) {
            _write_all($s, substr($req, $i, 1)) or return 0;
            sleep($o{byte_delay} // 0.002);
        }
    } else {
        _write_all($s, $req) or return 0;
    }

    my $deadline = time + $timeout;
    while ($self->{buf} !~ /\r\n\r\n/) {
        _read($s, \$self->{buf}, $deadline) or last;
    }

    my ($head, $rest) = split /\r\n\r\n/, $self->{buf}, 2;
    return 0 unless defined $rest && $head =~ m{^HTTP/1\.1 (\d{3})};
    return $1 unless $1 == 101;

    my $accept = sha1_base64($key . $GUID) . '=';
    return 0 unless $head =~ /^Sec-WebSocket-Accept:\s*\Q$accept\E\s*$/mi;

    $self->{head} = $head;
    $self->{buf} = $rest;

    return $self;
}


# open_idle(port => P, path => '/ws', count => N, tag => 'T',
#           per_room => 1): N clients that stay idle, with a browser's
# User-Agent, joined as idle1..idleN to rooms named after the tag
# (per_room clients each); returns those that were upgraded.
sub open_idle {
    my (%o) = @_;

    my $per_room = $o{per_room} // 1;
    my @c;

    for my $i (1 .. $o{count}) {
        my $c = Rooms::Test::Raw->connect(port => $o{port}, path => $o{path},
            room => $o{tag} . int(($i - 1) / $per_room), name => "idle$i",
            headers => { 'User-Agent' => 'Mozilla/5.0 (X11; Linux x86_64) '
                . 'AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 '
                . 'Safari/537.36' });
        push @c, $c if ref $c;
    }

    return @c;
}


sub sock { $_[0]{sock} }
sub head { $_[0]{head} }
sub eof { $_[0]{eof} }


# Writes raw bytes; false if the connection is gone.
sub send_raw {
    my ($self, $bytes) = @_;
    return _write_all($self->{sock}, $bytes);
}


sub send_frame {
    my ($self, %o) = @_;
    return $self->send_raw(frame(%o));
}


sub send_json {
    my ($self, $msg) = @_;
    return $self->send_frame(op => 1, payload => $JSON->encode($msg));
}


# read_frame($timeout): the next server frame as { op, fin, payload,
# masked, rsv } or undef on timeout or EOF ($self->eof tells which).
sub read_frame {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 5);

    while (1) {
        my $f = $self->_parse;
        return $f if $f;
        return if $self->{eof};
        _read($self->{sock}, \$self->{buf}, $deadline, \$self->{eof})
            or return;
    }
}


# next_json($timeout, %o): the next text message decoded (skipping
# control frames; pings are answered unless o{no_pong}); undef on
# timeout, EOF or close (then $self->{close} holds [code, reason]).
sub next_json {
    my ($self, $timeout, %o) = @_;

    my $deadline = time + ($timeout // 5);

    while (1) {
        my $f = $self->read_frame($deadline - time) or return;

        if ($f->{op} == 1 && $f->{rsv} & 4) {
            $self->{inflated}++;
            $f->{payload} = inflate_raw($f->{payload})
                // return { type => '_not_deflate', raw => $f->{payload} };
        }

        if ($f->{op} == 1) {
            my $m = eval { $JSON->decode($f->{payload}) };
            return $m if ref $m;
            return { type => '_not_json', raw => $f->{payload} };
        }

        if ($f->{op} == 8) {
            $self->{close} = [ _close_status($f->{payload}) ];
            return;
        }

        if ($f->{op} == 9) {
            push @{ $self->{pings} }, $f->{payload};
            $self->send_frame(op => 10, payload => $f->{payload})
                unless $o{no_pong};
        }

        push @{ $self->{pongs} }, $f->{payload} if $f->{op} == 10;
    }
}


# wait_json(type => T, timeout => 5, match => sub {}): the next message of
# that type, skipping others.
sub wait_json {
    my ($self, %o) = @_;

    my $deadline = time + ($o{timeout} // 5);

    while (1) {
        my $left = $deadline - time;
        return if $left <= 0;
        my $m = $self->next_json($left, %o) or return;
        next if defined $o{type} && ($m->{type} // '') ne $o{type};
        next if $o{match} && !$o{match}->($m);
        return $m;
    }
}


# expect_close($timeout): skips data frames until a close frame; returns
# (status, reason, eof) where eof is true if the server then closed the
# TCP connection within the timeout.  status is undef without a close
# frame (then eof tells whether the connection ended).
sub expect_close {
    my ($self, $timeout, %o) = @_;

    my $deadline = time + ($timeout // 5);
    my ($code, $reason);

    while (1) {
        my $f = $self->read_frame($deadline - time);
        unless ($f) {
            return (undef, undef, $self->{eof} ? 1 : 0);
        }
        next unless $f->{op} == 8;
        ($code, $reason) = _close_status($f->{payload});
        last;
    }

    $self->send_frame(op => 8, payload => pack('n', $code // 1000))
        if $o{reply};

    return ($code, $reason, $self->wait_eof($deadline - time));
}


# True once the server has closed the connection (EOF or reset),
# discarding whatever arrives first.
sub wait_eof {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 5);

    while (!$self->{eof}) {
        _read($self->{sock}, \$self->{buf}, $deadline, \$self->{eof})
            or last;
        $self->{buf} = '';
    }

    return $self->{eof} ? 1 : 0;
}


sub close {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
    delete $self->{sock};
}


sub _close_status {
    my ($p) = @_;
    return (1005, '') if length $p < 2;
    return (unpack('n', $p), substr($p, 2));
}


# One complete frame from buf, or undef.
sub _parse {
    my ($self) = @_;

    my $b = \$self->{buf};
    return if length $$b < 2;

    my ($b0, $b1) = unpack('CC', $$b);
    my $len = $b1 & 0x7f;
    my $off = 2;

    if ($len == 126) {
        return if length $$b < 4;
        $len = unpack('n', substr($$b, 2, 2));
        $off = 4;
    } elsif ($len == 127) {
        return if length $$b < 10;
        $len = unpack('Q>', substr($$b, 2, 8));
        $off = 10;
    }

    my $masked = $b1 & 0x80;
    my $key;
    if ($masked) {
        return if length $$b < $off + 4;
        $key = substr($$b, $off, 4);
        $off += 4;
    }

    return if length $$b < $off + $len;

    my $payload = substr($$b, $off, $len);
    substr($$b, 0, $off + $len) = '';

    if ($masked) {
        my $k = $key x (int($len / 4) + 1);
        $payload ^= substr($k, 0, $len);
    }

    return {
        op => $b0 & 0x0f, fin => $b0 >> 7, rsv => ($b0 >> 4) & 7,
        masked => $masked ? 1 : 0, payload => $payload,
    };
}


sub _socket {
    my ($port, %o) = @_;

    my $s;

    if ($o{rcvbuf}) {

        # A small receive buffer must be set before connect(), while the
        # window scale is negotiated; the kernel doubles it.
        $s = IO::Socket::INET->new(Proto => 'tcp') or return;
        setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack('i', $o{rcvbuf}))
            or return;
        $s->connect(pack_sockaddr_in($port, inet_aton('127.0.0.1')))
            or return;

    } else {
        $s = IO::Socket::INET->new(
            PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
            Timeout => $o{timeout} // 5,
        ) or return;
    }

    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, pack('i', 1));
    binmode $s;

    if ($o{ssl}) {
        require IO::Socket::SSL;
        IO::Socket::SSL->start_SSL($s,
            SSL_verify_mode => 0,
            SSL_hostname => 'localhost',
            Timeout => $o{timeout} // 5,
        ) or return;
    }

    return $s;
}


# Reads what is there into $$buf; false on timeout or EOF/reset (then
# $$eof is set).
sub _read {
    my ($s, $buf, $deadline, $eof) = @_;

    my $pending = $s->can('pending') && $s->isa('IO::Socket::SSL')
        ? $s->pending : 0;

    unless ($pending) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        return 0 unless IO::Select->new($s)->can_read($left);
    }

    my $n = sysread($s, $$buf, 65536, length $$buf);

    if (!defined $n && $s->isa('IO::Socket::SSL')) {
        no warnings 'once';
        return 1 if ($IO::Socket::SSL::SSL_ERROR // 0)
                    == IO::Socket::SSL::SSL_WANT_READ();
    }

    unless ($n) {
        $$eof = 1 if $eof;
        return 0;
    }

    return 1;
}


sub _write_all {
    my ($s, $bytes) = @_;

    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }

    return 1;
}


sub _esc {
    my ($s) = @_;

    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;

    return $s;
}


1;
