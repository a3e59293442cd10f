package Rooms::Test::Client;

# A small blocking WebSocket client for the integration tests, built on
# IO::Socket::INET, IO::Select and Protocol::WebSocket::Frame.  Every wait
# is a select() on the socket with a deadline; nothing sleeps.
#
#   my $c = Rooms::Test::Client->connect(port => $p, room => 'ABCD',
#                                        name => 'Alice');
#   ref $c or die "upgrade refused with HTTP $c";
#   my $welcome = $c->recv_json(5);
#   $c->send_json({ type => 'chat', data => { text => 'hi' } });
#   my $chat = $c->wait_for(type => 'chat', timeout => 5);

use strict;
use warnings;

use Digest::SHA qw(sha1_base64);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use Protocol::WebSocket::Frame;
use Time::HiRes qw(time);

my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
my $JSON = JSON::PP->new->utf8->canonical;


# connect(port => P, room => R, name => N, query => {k => v},
#         headers => {h => v}, path => '/ws', timeout => 5)
#
# Returns a client object after a valid 101 answer, otherwise the HTTP
# status of the answer (e.g. 503), or 0 if there was no HTTP answer at
# all.  The response head of a refusal is in $Rooms::Test::Client::LAST.
our $LAST = '';

sub connect {
    my ($class, %o) = @_;

    my $timeout = $o{timeout} // 5;
    my $path = $o{path} // '/ws';

    my @q;
    push @q, 'room=' . uri_escape($o{room}) if defined $o{room};
    push @q, 'name=' . uri_escape($o{name}) if defined $o{name};
    my $extra = $o{query} || {};
    push @q, uri_escape($_) . '=' . uri_escape($extra->{$_})
        for sort keys %$extra;
    $path .= '?' . join('&', @q) if @q;

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $o{port}, Proto => 'tcp',
        Timeout => $timeout,
    ) or return 0;

    $sock->blocking(1);
    binmode $sock;

    my $key = encode_base64(join('', map { chr int rand 256 } 1 .. 16), '');

    my %h = (
        'Host' => "127.0.0.1:$o{port}",
        'Upgrade' => 'websocket',
        'Connection' => 'Upgrade',
        'Sec-WebSocket-Key' => $key,
        'Sec-WebSocket-Version' => '13',
        %{ $o{headers} || {} },
    );

    my $req = "GET $path HTTP/1.1\r\n";
    for my $k (sort keys %h) {
        next unless defined $h{$k};
        $req .= "$k: $h{$k}\r\n";
    }
    $req .= "\r\n";

    my $self = bless {
        sock => $sock,
        sel => IO::Select->new($sock),
        buf => '',
        frame => Protocol::WebSocket::Frame->new(max_payload_size => 0),
        closed => 0,
        close_code => undef,
    }, $class;

    $self->_write($req) or return 0;

    # Read the response head; whatever follows it is WebSocket data.
    my $deadline = time + $timeout;
    while ($self->{buf} !~ /\r\n\r\n/) {
        $self->_fill($deadline) or last;
    }

    my ($head, $rest) = split /\r\n\r\n/, $self->{buf}, 2;
    $LAST = $head // '';

    return 0 unless defined $rest && $head =~ m{^HTTP/1\.1 (\d{3})};

    my $status = $1;
    return $status unless $status == 101;

    my $accept = sha1_base64($key . $GUID) . '=';
    unless ($head =~ /^Sec-WebSocket-Accept:\s*\Q$accept\E\s*$/mi
        && $head =~ /^Upgrade:\s*websocket\s*$/mi)
    {
        $LAST = "bad 101 response:\n$head";
        return 0;
    }

    $self->{head} = $head;
    $self->{buf} = '';
    $self->{frame}->append($rest) if length $rest;

    return $self;
}


sub head { $_[0]{head} }
sub closed { $_[0]{closed} }
sub close_code { $_[0]{close_code} }

# True while neither side has closed and the server has not hung up.
sub is_open {
    my ($self) = @_;
    return $self->{sock} && !$self->{closed} && !$self->{eof};
}


sub send_json {
    my ($self, $msg) = @_;
    return $self->send_text($JSON->encode($msg));
}


# Sends $bytes (already UTF-8) as one text frame.
sub send_text {
    my ($self, $bytes) = @_;
    return $self->_send_frame($bytes, 'text');
}


sub _send_frame {
    my ($self, $bytes, $type, %o) = @_;

    my $f = Protocol::WebSocket::Frame->new(
        buffer => $bytes, type => $type, masked => 1,
        max_payload_size => 0, %o,
    );

    return $self->_write($f->to_bytes);
}


# recv_json($timeout): the next text message, decoded; undef on timeout,
# on a close frame (close_code is set) or on EOF.  A text message that is
# not JSON is returned as { type => '_not_json', raw => $bytes }.
sub recv_json {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 5);

    while (1) {
        my $bytes = $self->{frame}->next_bytes;

        if (defined $bytes) {
            my $op = $self->{frame}->opcode;

            if ($op == 1) {
                my $m = eval { $JSON->decode($bytes) };
                return $m if ref $m;
                return { type => '_not_json', raw => $bytes };
            }

            if ($op == 8) {
                $self->{close_code} =
                    length $bytes >= 2 ? unpack('n', $bytes) : 1005;
                $self->{close_reason} =
                    length $bytes > 2 ? substr($bytes, 2) : '';
                $self->_send_frame(substr($bytes, 0, 2), 'close')
                    unless $self->{closed};
                $self->{closed} = 1;
                return;
            }

            if ($op == 9) {
                $self->_send_frame($bytes, 'pong');
                next;
            }

            if ($op == 2) {
                return { type => '_binary', raw => $bytes };
            }

            next;
        }

        return if $self->{eof};
        $self->_fill($deadline) or return;
    }
}


# wait_for(type => 'chat', timeout => 5, match => sub { ... },
#          ignore => ['state']):
# the next message of that type (and matching), skipping all others;
# without a type, the next message whose type is not in `ignore`.
# undef on timeout or close.
sub wait_for {
    my ($self, %o) = @_;

    my $deadline = time + ($o{timeout} // 5);

    while (1) {
        my $left = $deadline - time;
        return if $left <= 0;

        my $m = $self->recv_json($left) or return;

        my $type = $m->{type} // '';
        next if defined $o{type} && $type ne $o{type};
        next if $o{ignore} && grep { $_ eq $type } @{ $o{ignore} };
        next if $o{match} && !$o{match}->($m);

        return $m;
    }
}


# collect(type => 'chat', count => N, timeout => 5, quiet => 0.3):
# messages of that type until N arrived (or timeout), then waits `quiet`
# seconds more for surplus ones.  Returns the list.
sub collect {
    my ($self, %o) = @_;

    my @got;
    my $deadline = time + ($o{timeout} // 5);

    while (!defined $o{count} || @got < $o{count}) {
        my $m = $self->wait_for(type => $o{type},
            timeout => $deadline - time) or last;
        push @got, $m;
    }

    my $quiet = time + ($o{quiet} // 0);
    while (1) {
        my $left = $quiet - time;
        last if $left <= 0;
        my $m = $self->wait_for(type => $o{type}, timeout => $left) or last;
        push @got, $m;
    }

    return @got;
}


sub close {
    my ($self, $code) = @_;

    return unless $self->{sock};

    unless ($self->{closed}) {
        $self->_send_frame(pack('n', $code // 1000), 'close');
        $self->{closed} = 1;

        # Wait briefly for the server's close frame or EOF.
        my $deadline = time + 2;
        while (!$self->{eof} && time < $deadline) {
            my $b = $self->{frame}->next_bytes;
            if (defined $b) {
                last if $self->{frame}->opcode == 8;
                next;
            }
            $self->_fill($deadline) or last;
        }
    }

    CORE::close($self->{sock});
    delete $self->{sock};

    return 1;
}


sub DESTROY {
    my ($self) = @_;
    CORE::close($self->{sock}) if $self->{sock};
}


# Reads what is available into the frame parser (or buf, before the
# upgrade).  Returns false on timeout or EOF.
sub _fill {
    my ($self, $deadline) = @_;

    my $left = $deadline - time;
    return 0 if $left <= 0 || !$self->{sock};
    return 0 unless $self->{sel}->can_read($left);

    my $data = '';
    my $n = sysread($self->{sock}, $data, 65536);

    unless ($n) {
        $self->{eof} = 1;
        return 0;
    }

    if ($self->{head}) {
        $self->{frame}->append($data);
    } else {
        $self->{buf} .= $data;
    }

    return 1;
}


sub _write {
    my ($self, $bytes) = @_;

    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($self->{sock}, $bytes, length($bytes) - $off, $off);
        return 0 unless defined $n;
        $off += $n;
    }

    return 1;
}


sub uri_escape {
    my ($s) = @_;

    utf8::encode($s) if utf8::is_utf8($s);
    $s =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge;

    return $s;
}


1;
