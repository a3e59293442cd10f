#!/usr/bin/perl

# Abuse of the handshake, each with a bound (SPEC section 3: the memory
# and CPU a client costs are bounded; section 5: nginx's limits apply):
#   - large headers: WebSockets that upgraded with ~10 KiB of headers
#     (large_client_header_buffers) cost the worker about as much as
#     those with small ones: the buffers are freed at the takeover;
#   - slowloris: upgrade requests sent a byte at a time are closed by
#     client_header_timeout, cost the workers a bounded amount each while
#     they last, and the chat of others goes on at its usual latency;
#   - header bombs: a header over the buffer size, headers over all the
#     buffers, a request line over it: nginx's own 400 / 414, and the
#     memory of a second round of them comes from the first's;
#   - a connection flood from one address under limit_conn: exactly the
#     limit is accepted, the rest get limit_conn_status, and slots come
#     back as clients leave.
# Worker memory is the private dirty memory of the workers
# (/proc/PID/smaps_rollup); the figures are printed.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use List::Util qw(max sum);
use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(wait_until);
use Rooms::Test::Raw qw(raw_http upgrade_request);

my $IDLE = 200;           # idle WebSockets per header size
my $SLOW = 100;           # slowloris connections
my $HEADER_TIMEOUT = 2;   # client_header_timeout, s
my $FLOOD = 60;           # upgrades at once from one address
my $LIMIT = 20;           # their limit_conn

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;

# access_log off (the harness's) and no request kept for a line at the
# close: the memory measured is what the header buffers cost
my %conf = (http => <<'EOF', server => <<"EOF");
    limit_conn_zone \$binary_remote_addr zone=flood:1m;
    rooms_log_at upgrade;
EOF
        client_header_timeout ${HEADER_TIMEOUT}s;

        location = /ws-flood {
            rooms_websocket;
            limit_conn flood $LIMIT;
            limit_conn_status 429;
        }
EOF
my $port = $t->start_nginx(%conf);


sub upgrade {
    my (%o) = @_;

    return Rooms::Test::Raw->connect(port => $port, %o);
}


sub welcomed {
    my ($c) = @_;

    return 0 unless ref $c;
    return $c->wait_json(type => 'welcome', timeout => 5) ? 1 : 0;
}


sub kib { sprintf '%.1f KiB', $_[0] / 1024 }


# --- large headers: the buffers go at the takeover -----------------------------

# ten 1000-byte headers: past client_header_buffer_size (1k), in two of
# the large_client_header_buffers (4 8k)
my %pad = map { sprintf('X-Pad-%02d', $_) => 'p' x 1000 } 1 .. 10;

sub open_idle {
    my ($tag, $headers) = @_;

    my @c;
    for my $i (1 .. $IDLE) {
        my $c = upgrade(room => "$tag$i", name => "idle$i",
            headers => $headers);
        push @c, $c if ref $c;
    }

    my $joined = grep { welcomed($_) } @c;

    return ($joined, @c);
}

my $m0 = $t->workers_dirty_kb;

my ($n_small, @small) = open_idle('S', {});
is($n_small, $IDLE, "$IDLE idle WebSockets upgraded with small headers");
my $m1 = $t->workers_dirty_kb;

my ($n_big, @big) = open_idle('B', \%pad);
is($n_big, $IDLE,
    "$IDLE idle WebSockets upgraded with 10 KiB of headers each");
my $m2 = $t->workers_dirty_kb;

my $per_small = ($m1 - $m0) * 1024 / $IDLE;
my $per_big = ($m2 - $m1) * 1024 / $IDLE;

diag(sprintf 'worker memory per idle WebSocket: %s after small headers, '
    . '%s after 10 KiB of headers', kib($per_small), kib($per_big));

Rooms::Test::mem_cmp_ok($per_big - $per_small, '<', 2048,
    'large headers: an idle WebSocket costs less than 2 KiB more than '
    . 'one with small headers (the header buffers are freed)');

$_->close for @small, @big;


# Fresh workers for what follows: memory freed above would be reused,
# and the growth measured below would not show what a client costs.
sub fresh_nginx {
    $t->stop_nginx;
    $t->start_nginx(%conf);
}

fresh_nginx();


# --- slowloris -----------------------------------------------------------------------

# chat latency between two members of a room: the time a chat takes from
# one to the other
my $ca = upgrade(room => 'LAT', name => 'a');
my $cb = upgrade(room => 'LAT', name => 'b');
ok(welcomed($ca) && welcomed($cb), 'two chat clients join');

my $seq = 0;

sub chat_latency {
    my $text = 'lat' . ++$seq;
    my $start = time;

    $ca->send_json({ type => 'chat', data => { text => $text } });
    my $m = $cb->wait_json(type => 'chat', timeout => 5,
        match => sub { ($_[0]{data}{text} // '') eq $text });

    return $m ? time - $start : 5;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return $s[int(@s / 2)];
}

my @base = map { chat_latency() } 1 .. 20;

my $s0 = $t->workers_dirty_kb;

my $req = upgrade_request(port => $port, room => 'SLOW', name => 'slow',
    key => encode_base64('0123456789abcdef', ''));

my @slow;
for my $i (1 .. $SLOW) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 5) or last;
    $s->blocking(0);
    push @slow, { sock => $s, start => time, sent => 0, got => '' };
}
is(scalar @slow, $SLOW, "$SLOW slowloris connections open");

# a byte on every connection each round, a chat between rounds
my (@during, $s_peak);
my $deadline = time + $HEADER_TIMEOUT + 5;

while (time < $deadline && grep { !$_->{end} } @slow) {
    my $round = time;

    for my $c (grep { !$_->{end} } @slow) {
        my $n = sysread($c->{sock}, my $buf, 4096);

        if (defined $n && $n == 0 || !defined $n && !$!{EAGAIN}) {
            $c->{end} = time;
            next;
        }

        $c->{got} .= $buf if $n;

        if ($c->{sent} < length($req) - 2) {
            $c->{sent}++ if syswrite($c->{sock},
                substr($req, $c->{sent}, 1));
        }
    }

    push @during, chat_latency();

    # the peak: every connection has sent a few bytes, none timed out
    $s_peak //= $t->workers_dirty_kb if time - $slow[0]{start} > 1;

    # the attacker's pace: a byte per connection every 200 ms (chats
    # faster than that would meet the sidecar's rate limit)
    my $left = 0.2 - (time - $round);
    sleep($left) if $left > 0;
}

my @open = grep { !$_->{end} } @slow;
is(scalar @open, 0, "every slowloris connection closed within "
    . ($HEADER_TIMEOUT + 5) . ' s');

my @lived = map { $_->{end} - $_->{start} } grep { $_->{end} } @slow;
my ($first, $last) = ((sort { $a <=> $b } @lived)[0], max(@lived));
diag(sprintf 'slowloris: closed after %.2f .. %.2f s, %d bytes each sent',
    $first // 0, $last // 0, median(map { $_->{sent} } @slow));
cmp_ok($first // 0, '>=', $HEADER_TIMEOUT - 0.5,
    'none closed before client_header_timeout');
cmp_ok($last // 99, '<=', $HEADER_TIMEOUT + 3,
    'all closed by client_header_timeout (+3 s)');
is(scalar(grep { length $_->{got} } @slow), 0,
    'no slowloris connection got an answer');

my $per_slow = (($s_peak // $s0) - $s0) * 1024 / $SLOW;
diag(sprintf 'slowloris: %s of worker memory per connection while it '
    . 'lasts', kib($per_slow));
Rooms::Test::mem_cmp_ok($per_slow, '<', 16 * 1024,
    'a slowloris connection costs the workers less than 16 KiB');

diag(sprintf 'chat latency: median %.1f ms before, %.1f ms (max %.1f ms) '
    . 'during the slowloris', 1000 * median(@base), 1000 * median(@during),
    1000 * max(@during));
cmp_ok(median(@during), '<', 5 * median(@base) + 0.05,
    'chat latency during the slowloris: median within 5x (+50 ms) of '
    . 'before');
cmp_ok(max(@during), '<', 2, 'no chat took 2 s or more');

close $_->{sock} for @slow;


# --- header bombs ------------------------------------------------------------------------

sub bombs {
    my %r;

    # one header over a large buffer (8k)
    my @s = raw_http($port, upgrade_request(port => $port, room => 'BOMB',
        name => 'x', key => 'dGhlIHNhbXBsZSBub25jZQ==',
        headers => { 'X-Huge' => 'h' x 9000 }));
    $r{huge} = "$s[0] " . (($s[2] // '') =~ /Header Or Cookie Too Large/
        ? 'too large' : '?');

    # headers over all four large buffers
    my %many = map { sprintf('X-Many-%03d', $_) => 'm' x 1000 } 1 .. 40;
    @s = raw_http($port, upgrade_request(port => $port, room => 'BOMB',
        name => 'x', key => 'dGhlIHNhbXBsZSBub25jZQ==', headers => \%many));
    $r{many} = "$s[0] " . (($s[2] // '') =~ /Header Or Cookie Too Large/
        ? 'too large' : '?');

    # a request line over a large buffer
    @s = raw_http($port, upgrade_request(port => $port,
        room => 'B' x 9000, name => 'x', key => 'dGhlIHNhbXBsZSBub25jZQ=='));
    $r{line} = $s[0] // 0;

    return \%r;
}

my $r = bombs();
is($r->{huge}, '400 too large', 'a 9000-byte header: 400, too large');
is($r->{many}, '400 too large', '40 KB of headers: 400, too large');
is($r->{line}, 414, 'a 9000-byte request line: 414');

bombs() for 1 .. 20;
my $b1 = $t->workers_dirty_kb;
bombs() for 1 .. 50;
my $b2 = $t->workers_dirty_kb;

diag(sprintf 'header bombs: 150 more grow the workers by %d KiB',
    $b2 - $b1);
Rooms::Test::mem_cmp_ok($b2 - $b1, '<', 256,
    '150 more header bombs grow the workers by less than 256 KiB');

my $after = upgrade(room => 'BOMB', name => 'after');
ok(welcomed($after), 'an upgrade after the bombs joins');
$after->close if ref $after;


# --- a connection flood from one address under limit_conn --------------------

sub flood {
    my ($n) = @_;

    my @c;
    for my $i (1 .. $n) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $port, Proto => 'tcp', Timeout => 5) or last;
        syswrite($s, upgrade_request(port => $port, path => '/ws-flood',
            room => 'FLOOD', name => "f$i",
            key => 'dGhlIHNhbXBsZSBub25jZQ=='));
        push @c, { sock => $s, head => '' };
    }

    my $deadline = time + 10;
    for my $c (@c) {
        my $sel = IO::Select->new($c->{sock});
        while ($c->{head} !~ /\r\n\r\n/) {
            my $left = $deadline - time;
            last if $left <= 0 || !$sel->can_read($left);
            last unless sysread($c->{sock}, $c->{head}, 4096,
                length $c->{head});
        }
        ($c->{status}) = $c->{head} =~ m{^HTTP/1\.1 (\d{3})};
        $c->{status} //= 0;
    }

    return @c;
}

sub statuses {
    my %n;
    $n{ $_->{status} }++ for @_;
    return join ' ', map { "$_:$n{$_}" } sort keys %n;
}

fresh_nginx();
my $f0 = $t->workers_dirty_kb;
my @flood = flood($FLOOD);
my $f1 = $t->workers_dirty_kb;
is(statuses(@flood), '101:' . $LIMIT . ' 429:' . ($FLOOD - $LIMIT),
    "$FLOOD upgrades at once from one address, limit_conn $LIMIT: "
    . "exactly $LIMIT accepted, the rest get 429");
diag(sprintf 'flood: %d upgrades grow the workers by %d KiB',
    $FLOOD, $f1 - $f0);

my @in = grep { $_->{status} == 101 } @flood;
close $_->{sock} for grep { $_->{status} != 101 } @flood;

# five leave: five slots come back, and no more
close $_->{sock} for splice @in, 0, 5;

my @back;
wait_until(sub {
    push @back, grep { $_->{status} == 101 } flood(1);
    return @back >= 5;
}, timeout => 10);
is(scalar @back, 5, 'five clients leave: five new upgrades are accepted');
is(statuses(flood(3)), '429:3', 'and the next ones get 429 again');

close $_->{sock} for @in, @back;
my @all;
wait_until(sub {
    push @all, grep { $_->{status} == 101 } flood(1);
    return @all >= $LIMIT;
}, timeout => 10);
is(scalar @all, $LIMIT, "all leave: $LIMIT new upgrades are accepted");
close $_->{sock} for @all;

$t->finish;
