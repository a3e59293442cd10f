#!/usr/bin/perl

# permessage-deflate (RFC 7692), "rooms_deflate on": the negotiation
# (several offers, parameters, quoted values, several header lines; an
# offer we cannot honour is skipped), chat between Python `websockets`
# and Node `ws` (compression on), a client without the extension and a
# raw client that reads the compressed frames itself, all in one room,
# everyone seeing the same messages; the bounds of inflating (a
# decompression bomb closes 1009 at rooms_max_message_size and the
# worker's peak memory does not grow by what the bomb holds; the limit
# itself is allowed); corrupt data 1007, RSV1 where it has no place
# 1002; with "rooms_deflate off" nothing is negotiated.

use strict;
use warnings;

use FindBin;
use IO::Select;
use IPC::Open2 qw(open2);
use JSON::PP ();
use POSIX ();
use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(proc_hwm);
use Rooms::Test::Raw qw(deflate_raw);

my $PYTHON = '/usr/bin/python3';    # Debian's, with python3-websockets
my $NODE_DIR = "$FindBin::Bin/node";
my $JSON = JSON::PP->new->utf8->canonical;

my $RESPONSE = 'permessage-deflate; server_no_context_takeover; '
    . 'client_no_context_takeover';

my %clients;

if (-x $PYTHON && system($PYTHON, '-c', 'import websockets') == 0) {
    $clients{python} = [ $PYTHON, "$FindBin::Bin/clients/deflate_chat.py" ];
} else {
    diag('python3-websockets missing: Python client skipped');
}

my $node = Rooms::Test::which('node');
if ($node && -d "$NODE_DIR/node_modules/ws") {
    $clients{node} = [ $node, "$NODE_DIR/deflate_chat.js" ];
} else {
    diag('node or t/node/node_modules/ws missing (run npm ci in t/node): '
        . 'Node client skipped');
}

my $t = Rooms::Test->new;
my $dir = $t->dir;

$t->start_redis;
$t->start_sidecar;

# one worker: every client here shares its deflate and inflate streams
my $port = $t->start_nginx(workers => 1, ws => '            rooms_deflate on;',
    server => <<'CONF');
        location = /ws-off {
            rooms_websocket;
        }

        location = /ws-1k {
            rooms_websocket;
            rooms_deflate on;
            rooms_max_message_size 1k;
        }
CONF

sub raw {
    my (%o) = @_;
    my $c = Rooms::Test::Raw->connect(port => $port, %o);
    ref $c or BAIL_OUT("upgrade refused: $c");
    return $c;
}

sub deflate_client {
    my (%o) = @_;
    return raw(headers => {
        'Sec-WebSocket-Extensions' =>
            'permessage-deflate; client_max_window_bits' }, %o);
}

sub extension_of {
    my ($c) = @_;
    return $c->head =~ /^Sec-WebSocket-Extensions:[ \t]*(.*?)[ \t]*$/mi
        ? $1 : undef;
}

sub envelope {
    my ($text) = @_;
    return $JSON->encode({ type => 'chat', data => { text => $text } });
}


# --- negotiation ------------------------------------------------------------

my $EXT = 'Sec-WebSocket-Extensions';
my $ext = 'sec-websocket-extensions';   # a second header line (sorted after)

my @negotiation = (
    [ 'what browsers and clients offer',
        { $EXT => 'permessage-deflate; client_max_window_bits' },
        $RESPONSE ],
    [ 'no parameters', { $EXT => 'permessage-deflate' }, $RESPONSE ],
    [ 'server_max_window_bits',
        { $EXT => 'permessage-deflate; server_max_window_bits=10' },
        "$RESPONSE; server_max_window_bits=10" ],
    [ 'quoted value, odd spacing',
        { $EXT => "permessage-deflate ;\tserver_max_window_bits = \"12\"" },
        "$RESPONSE; server_max_window_bits=12" ],
    [ 'an offer we cannot honour is skipped',
        { $EXT => 'permessage-deflate; server_max_window_bits=7, '
            . 'permessage-deflate; x_unknown, '
            . 'permessage-deflate; client_max_window_bits=9' },
        $RESPONSE ],
    [ 'several header lines',
        { $EXT => 'x-webkit-deflate-frame; a="1, permessage-deflate"',
          $ext => 'permessage-deflate; server_max_window_bits=9' },
        "$RESPONSE; server_max_window_bits=9" ],
    [ 'unknown parameter only', { $EXT => 'permessage-deflate; foo=1' },
        undef ],
    [ 'repeated parameter',
        { $EXT => 'permessage-deflate; server_no_context_takeover; '
            . 'server_no_context_takeover' }, undef ],
    [ 'another extension only', { $EXT => 'x-webkit-deflate-frame' }, undef ],
    [ 'no offer', {}, undef ],
);

my $n = 0;
for my $case (@negotiation) {
    my ($what, $headers, $want) = @$case;
    my $c = raw(room => 'NEG', name => 'n' . ++$n, headers => $headers);
    is(extension_of($c), $want, "negotiation: $what");
    $c->close;
}

{
    my $c = raw(room => 'NEG', name => 'off', path => '/ws-off',
        headers => { $EXT => 'permessage-deflate; client_max_window_bits' });
    is(extension_of($c), undef, 'rooms_deflate off: no extension answered');
    $c->close;
}


# --- one room: Python, Node, a plain client, a raw deflate client ----------

my @english = (
    'Hey everyone, are we still meeting at the station at half past seven? '
        . 'I will bring the maps and some snacks for the road.',
    "I think so, but the weather forecast said it might rain later in the "
        . "evening, so don't forget an umbrella and a warm jacket.",
    'Sounds good to me. Let me know if anyone needs a ride, I have two free '
        . 'seats in the car and I am leaving from the north side of town.',
    "Caf\x{e9} at the corner? \x{2615} The one with the blue door \x{2014} "
        . 'they open early.',
    'ok',
);

my %texts = (
    python => [ $english[0], $english[3], join(' ', (@english) x 20) ],
    node => [ $english[1], $english[4], 'x' x 9000 ],
    plain => [ $english[2], "Gr\x{fc}\x{df}e aus K\x{f6}ln \x{2713}" ],
    raw => [ $english[0] . ' (raw)', join("\n", @english) ],
);

my @names = (sort(keys %clients), 'plain', 'raw');
my $total = 0;
$total += @{ $texts{$_} } for @names;

my $plain = $t->connect('MIX', 'plain');
ref $plain or BAIL_OUT("plain client refused: $plain");
my $plain_welcome = $plain->wait_for(type => 'welcome', timeout => 10);

my $rawc = deflate_client(room => 'MIX', name => 'raw');
is(extension_of($rawc), $RESPONSE, 'raw client: deflate negotiated');
my $raw_welcome = $rawc->wait_json(type => 'welcome', timeout => 10);

# starts a client script: { name, pid, out, in }
sub spawn_client {
    my ($client, $url, $texts, $count) = @_;

    my $file = "$dir/$client-texts.json";
    Rooms::Test::write_file($file, $JSON->encode($texts));

    my ($out, $in);
    my $pid = open2($out, $in, @{ $clients{$client} }, $url, $file, $count);
    return { name => $client, pid => $pid, out => $out, in => $in,
             buf => '' };
}

# the next JSON line of a client script, undef after `timeout` or EOF
sub line_of {
    my ($p, $timeout) = @_;

    my $deadline = time + $timeout;
    my $sel = IO::Select->new($p->{out});

    while ($p->{buf} !~ /\n/) {
        my $left = $deadline - time;
        return if $left <= 0 || !$sel->can_read($left);
        my $got = sysread($p->{out}, $p->{buf}, 65536, length $p->{buf});
        return unless $got;
    }

    $p->{buf} =~ s/^(.*?)\n//;
    my $line = $1;
    my $m = eval { $JSON->decode($line) };
    diag("$p->{name}: $line") unless ref $m && !$m->{error};
    return $m;
}

# waits (bounded) for a client script to exit: its exit code
sub reap {
    my ($p) = @_;

    close $p->{in};
    my $deadline = time + 20;
    while (time < $deadline) {
        my $r = waitpid($p->{pid}, POSIX::WNOHANG());
        return $? >> 8 if $r == $p->{pid};
        Time::HiRes::sleep(0.05);
    }
    kill 'KILL', $p->{pid};
    waitpid($p->{pid}, 0);
    return -1;
}

my @procs;
for my $client (sort keys %clients) {
    my $url = "ws://127.0.0.1:$port/ws?room=MIX&name=$client";
    my $p = spawn_client($client, $url, $texts{$client}, $total);
    push @procs, $p;
    my $ready = line_of($p, 20) // {};
    is($ready->{ready}, 1, "$client: joined");
    is($ready->{extensions}, $RESPONSE, "$client: deflate negotiated");
}

# everyone is in the room: go
for my $p (@procs) {
    syswrite($p->{in}, "go\n");
}

$plain->send_json({ type => 'chat', data => { text => $_ } })
    for @{ $texts{plain} };
$rawc->send_frame(op => 1, rsv => 4, payload => deflate_raw(envelope($_)))
    for @{ $texts{raw} };

my %seen;

$seen{plain} = [ map { [ $_->{data}{from}, $_->{data}{text} ] }
    grep { $_->{id} > $plain_welcome->{data}{last_id} }
    $plain->collect(type => 'chat', count => $total, timeout => 30) ];

my @raw_chats;
while (@raw_chats < $total) {
    my $m = $rawc->wait_json(type => 'chat', timeout => 30) or last;
    push @raw_chats, [ $m->{data}{from}, $m->{data}{text} ]
        if $m->{id} > $raw_welcome->{data}{last_id};
}
$seen{raw} = \@raw_chats;

for my $p (@procs) {
    my $m = line_of($p, 30) // {};
    $seen{ $p->{name} } = $m->{chats} // [];
    my $close = line_of($p, 20) // {};
    is($close->{close}, 1000, "$p->{name}: clean close");
    is(reap($p), 0, "$p->{name}: client exited 0");
}

my @want = sort map {
    my $who = $_;
    map { $JSON->encode([ $who, $_ ]) } @{ $texts{$who} }
} @names;

for my $who (@names) {
    my @got = map { $JSON->encode($_) } @{ $seen{$who} // [] };
    is_deeply([ sort @got ], \@want,
        "$who: got every chat of everyone, text equal");
    is_deeply(\@got, [ map { $JSON->encode($_) } @{ $seen{plain} } ],
        "$who: in the room's order");
}

cmp_ok($rawc->{inflated} // 0, '>=', $total - 1,
    'raw client: the chats came compressed (RSV1), but maybe "ok"');

$plain->close;
$rawc->close;


# a client that asked for a 512-byte window (server_max_window_bits=9)
# gets compressed frames for messages that fit it, plain ones for longer
{
    my $c = raw(room => 'WIN', name => 'w9', headers => {
        $EXT => 'permessage-deflate; server_max_window_bits=9' });
    is(extension_of($c), "$RESPONSE; server_max_window_bits=9",
        'window of 2^9: negotiated');
    $c->wait_json(type => 'welcome');

    my $sender = $t->connect('WIN', 'sender');
    my @sizes = (100, 1000);
    $sender->send_json({ type => 'chat', data => { text => 'y' x $_ } })
        for @sizes;

    my @got;
    while (@got < @sizes) {
        my $f = $c->read_frame(10) or last;
        next unless $f->{op} == 1;
        my $payload = $f->{rsv} & 4
            ? Rooms::Test::Raw::inflate_raw($f->{payload}) : $f->{payload};
        my $m = eval { $JSON->decode($payload) } // {};
        next unless ($m->{type} // '') eq 'chat';
        push @got, [ length($payload) <= 512 ? 'fits' : 'longer',
                     $f->{rsv}, length($m->{data}{text}) ];
    }
    is_deeply(\@got, [ [ 'fits', 4, 100 ], [ 'longer', 0, 1000 ] ],
        'window of 2^9: compressed up to 512 bytes, plain beyond');
    $c->close;
    $sender->close;
}


# --- bounds and bad input ---------------------------------------------------

# a compressed message whose inflated size is exactly the limit passes;
# one byte more closes 1009
{
    my $pad = 'a' x (1024 - length envelope(''));
    my $c = raw(path => '/ws-1k', room => 'LIM', name => 'lim',
        headers => { $EXT => 'permessage-deflate' });
    $c->wait_json(type => 'welcome');
    $c->send_frame(op => 1, rsv => 4, payload => deflate_raw(envelope($pad)));
    my $m = $c->wait_json(type => 'chat', timeout => 10);
    is($m && $m->{data}{text}, $pad, 'inflated to the limit (1 KiB): relayed');

    $c->send_frame(op => 1, rsv => 4,
        payload => deflate_raw(envelope($pad . 'a')));
    my ($code) = $c->expect_close(10);
    is($code, 1009, 'inflated to the limit + 1: close 1009');
}

# the bomb: 10 MB of zeros, 9.5 KiB deflated (under the 16 KiB limit)
{
    my $bomb = deflate_raw(envelope('a' x 1024) . ("\0" x 10_000_000),
        level => 9);
    cmp_ok(length $bomb, '<', 16384, 'the bomb fits the message limit');

    my $first = deflate_client(room => 'BOMB', name => 'b0');
    $first->wait_json(type => 'welcome');
    my $worker = $t->worker_of($first);
    ok($worker, 'the worker of the bomb');
    my $hwm = proc_hwm($worker);

    my @codes;
    for my $i (1 .. 10) {
        my $c = $i == 1 ? $first : deflate_client(room => 'BOMB',
            name => "b$i");
        $c->send_frame(op => 1, rsv => 4, payload => $bomb);

        # the close frame itself is not compressed
        my $f;
        while (($f = $c->read_frame(10)) && $f->{op} != 8) { }
        push @codes, $f ? unpack('n', $f->{payload}) . "/rsv$f->{rsv}"
                        : 'none';
        $c->close;
    }

    is_deeply(\@codes, [ ('1009/rsv0') x 10 ],
        'a decompression bomb closes 1009 (close frame not compressed)');
    Rooms::Test::mem_cmp_ok(proc_hwm($worker) - $hwm, '<', 4096,
        'peak worker memory grew by less than 4 MiB over 10 bombs of 10 MB '
        . "(before: $hwm KiB)");
    ok(Rooms::Test::process_alive($worker), 'the worker is alive');
}

my @bad = (
    [ 'corrupt DEFLATE data', { rsv => 4, payload => "\xff\xff\xff\xff" },
        1007 ],
    [ 'invalid UTF-8 once inflated',
        { rsv => 4, payload => deflate_raw("{\"t\":\"\xff\xfe\"}") }, 1007 ],
    [ 'RSV1 on a ping', { op => 9, rsv => 4, payload => '' }, 1002 ],
    [ 'RSV2 with deflate', { rsv => 2, payload => envelope('x') }, 1002 ],
);

for my $case (@bad) {
    my ($what, $frame, $want) = @$case;
    my $c = deflate_client(room => 'BAD', name => 'bad');
    $c->wait_json(type => 'welcome');
    $c->send_frame(op => 1, %$frame);
    my ($code) = $c->expect_close(10);
    is($code, $want, "$what: close $want");
}

{
    my $z = deflate_raw(envelope('fragmented'));

    my $c = deflate_client(room => 'BAD', name => 'cont');
    $c->wait_json(type => 'welcome');
    $c->send_frame(op => 1, rsv => 4, fin => 0, payload => substr($z, 0, 3));
    $c->send_frame(op => 0, rsv => 4, payload => substr($z, 3));
    my ($code) = $c->expect_close(10);
    is($code, 1002, 'RSV1 on a continuation frame: close 1002');

    $c = deflate_client(room => 'BAD', name => 'frag');
    $c->wait_json(type => 'welcome');
    $c->send_frame(op => 1, rsv => 4, fin => 0, payload => substr($z, 0, 3));
    $c->send_frame(op => 0, payload => substr($z, 3));
    my $m = $c->wait_json(type => 'chat', timeout => 10);
    is($m && $m->{data}{text}, 'fragmented',
        'a compressed message in fragments: relayed');
    $c->close;

    $c = raw(path => '/ws-off', room => 'BAD', name => 'off');
    $c->wait_json(type => 'welcome');
    $c->send_frame(op => 1, rsv => 4, payload => $z);
    ($code) = $c->expect_close(10);
    is($code, 1002, 'RSV1 without the extension: close 1002');
}


# --- rooms_deflate off: the clients' offers are declined --------------------

for my $client (sort keys %clients) {
    my $url = "ws://127.0.0.1:$port/ws-off?room=OFF$client&name=$client";
    my $p = spawn_client($client, $url, [ $english[2] ], 1);
    my $ready = line_of($p, 20) // {};
    is($ready->{extensions} // 'none', '',
        "$client on rooms_deflate off: no extension");
    syswrite($p->{in}, "go\n");
    my $m = line_of($p, 20) // {};
    is_deeply($m->{chats}, [ [ $client, $english[2] ] ],
        "$client on rooms_deflate off: chat relayed");
    line_of($p, 20);
    is(reap($p), 0, "$client on rooms_deflate off: exited 0");
}

$t->finish;
