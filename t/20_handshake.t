#!/usr/bin/perl

# Every handshake answer before the upgrade: 405 with Allow, 400 with a
# one-line reason (HTTP version, Upgrade, Connection, key, subrequest,
# room, name, since), 426 with Sec-WebSocket-Version, 403 (origin rules:
# same-origin default, rooms_origins exact / wildcard / "*",
# rooms_origin_required), 503 (sidecar down); rooms_room and rooms_name
# from request headers.

use strict;
use warnings;
use utf8;

use Test::More;

use Rooms::Test;
use Rooms::Test::Raw qw(raw_http upgrade_request);

my $t = Rooms::Test->new;
my $dir = $t->dir;

mkdir "$dir/html" or die "mkdir: $!";
Rooms::Test::write_file("$dir/html/ssi.html",
    "before <!--# include virtual=\"/ws?room=SSI&name=x\" --> after\n");

# "https://*.example.com" (a wildcard with a scheme) is a documented
# pattern; if the configuration accepts it, it is tested at run time too.

my ($rc, $out) = $t->nginx_t('rooms_origins https://*.example.com;');
my $scheme_wild = $rc == 0;
ok($scheme_wild, 'rooms_origins accepts "https://*.example.com"')
    or diag($out);

# rooms_max_message_size has an upper bound: a message is relayed in one
# link frame (issue 9, item 7).
for my $case (['1m', 1], ['1025k', 0], ['16m', 0]) {
    my ($size, $valid) = @$case;
    my ($rc, $out) = $t->nginx_t("rooms_max_message_size $size; "
        . 'rooms_output_queue_size 32m;');
    if ($valid) {
        is($rc, 0, "rooms_max_message_size $size is accepted") or diag($out);
    } else {
        isnt($rc, 0, "rooms_max_message_size $size is refused");
        like($out, qr/"rooms_max_message_size" must not be more than 1048576/,
            "... with a clear message");
    }
}

$t->start_redis;
$t->start_sidecar;
my $port = $t->start_nginx(server => ($scheme_wild ? <<"EOF" : '') . <<"EOF");
        location = /ws-swild {
            rooms_websocket;
            rooms_origins https://*.example.com;
        }
EOF
        location = /ssi.html {
            root $dir/html;
            ssi on;
        }

        location = /ws-exact {
            rooms_websocket;
            rooms_origins https://chat.example.com http://localhost:8080;
        }

        location = /ws-wild {
            rooms_websocket;
            rooms_origins *.example.org;
        }

        location = /ws-star {
            rooms_websocket;
            rooms_origins *;
        }

        location = /ws-required {
            rooms_websocket;
            rooms_origin_required on;
        }

        location = /ws-header {
            rooms_websocket;
            rooms_room \$http_x_room;
            rooms_name \$http_x_user;
        }
EOF

my $KEY = 'dGhlIHNhbXBsZSBub25jZQ==';


# A request pipelined behind a refused upgrade: its answer must be the
# next thing on the connection (or the connection ends), never a 101.
my $THEN = "GET /rooms HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    . "Connection: close\r\n\r\n";


# answer(%upgrade_request_options) -> ($status, $head, $body, $rest)
sub answer {
    my (%o) = @_;
    my $then = delete $o{then};
    return raw_http($port, upgrade_request(port => $port, key => $KEY,
        room => 'HS', name => 'Ann', %o),
        (defined $then ? (then => $then, timeout => 3) : ()));
}


# after_refusal($what, $rest): nothing but the next answer follows.
sub after_refusal {
    my ($what, $rest) = @_;

    ok(($rest // '') eq '' || $rest =~ m{^HTTP/1\.1 (?!101)\d{3} }
        && $rest !~ /welcome/,
        "$what: the refused connection is not upgraded after all")
        or diag("after the answer: " . substr($rest, 0, 300));
}


# refused($what, $status, $reason_re, %request): one refused upgrade.
sub refused {
    my ($what, $status, $re, %o) = @_;

    my ($st, $head, $body, $rest) = answer(%o, then => $THEN);
    is($st, $status, "$what: $status");
    after_refusal($what, $rest);
    like($body // '', $re, "$what: reason line")
        if defined $re;
    unlike($head // '', qr/^Upgrade:/mi, "$what: no Upgrade header")
        if defined $st && $st != 101;

    return ($st, $head, $body);
}


# A valid request first: the raw request is right.
my ($st, $head) = answer();
is($st, 101, 'valid upgrade: 101');
like($head, qr/^Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r?$/mi,
    'valid upgrade: RFC 6455 sample accept key');

# --- 405 --------------------------------------------------------------------

for my $m (qw(POST PUT HEAD)) {
    my ($s, $h, $b) = answer(method => $m,
        headers => { 'Content-Length' => 0 });
    is($s, 405, "$m: 405");
    like($h // '', qr/^Allow: GET\r?$/mi, "$m: Allow: GET");
    like($b, qr/^WebSocket upgrade needs GET$/m, "$m: reason")
        unless $m eq 'HEAD';
}

# --- 400: not an upgrade ----------------------------------------------------

refused('HTTP/1.0', 400, qr/^WebSocket upgrade needs HTTP\/1\.1$/m,
    proto => 'HTTP/1.0');
refused('no Upgrade header', 400, qr/^not a WebSocket upgrade$/m,
    headers => { Upgrade => undef });
refused('Upgrade: h2c', 400, qr/^not a WebSocket upgrade$/m,
    headers => { Upgrade => 'h2c' });
refused('no Connection header', 400, qr/^"Connection: upgrade" is missing$/m,
    headers => { Connection => undef });
refused('Connection: keep-alive', 400, qr/"Connection: upgrade" is missing/,
    headers => { Connection => 'keep-alive' });
refused('Connection: upgraded (not the token)', 400, qr/Connection/,
    headers => { Connection => 'upgraded' });

{
    # a body on an upgrade request: its bytes would be taken for frames
    my ($s, $h, $b) = raw_http($port, upgrade_request(port => $port,
        key => $KEY, room => 'HS', name => 'Ann',
        headers => { 'Content-Length' => 5 }) . 'hello');
    is($s, 400, 'GET upgrade with a body: 400');
    like($b // '', qr/body/, 'GET upgrade with a body: reason');
}

($st) = answer(headers => { Connection => 'keep-alive, Upgrade',
    Upgrade => 'WebSocket' });
is($st, 101, 'Connection token list "keep-alive, Upgrade": 101');

for my $k (['missing', undef], ['short', 'dGhlIHNhbXBsZQ=='],
    ['not base64', '!!!!!!!!!!!!!!!!!!!!!!=='],
    ['24 chars but 17 bytes', 'AAAAAAAAAAAAAAAAAAAAAAA='])
{
    refused("Sec-WebSocket-Key $k->[0]", 400,
        qr/^bad Sec-WebSocket-Key$/m,
        headers => { 'Sec-WebSocket-Key' => $k->[1] });
}

# --- 426 --------------------------------------------------------------------

for my $v (['8', '8'], ['missing', undef], ['14', '14'], ['13, 8', '13, 8'])
{
    my ($s, $h, $b) = answer(
        headers => { 'Sec-WebSocket-Version' => $v->[1] });
    is($s, 426, "Sec-WebSocket-Version $v->[0]: 426");
    like($h // '', qr/^Sec-WebSocket-Version: 13\r?$/mi,
        "Sec-WebSocket-Version $v->[0]: answer names version 13");
    like($b // '', qr/^only WebSocket version 13 is supported$/m,
        "Sec-WebSocket-Version $v->[0]: reason");
}

# --- 400: subrequest --------------------------------------------------------

{
    my ($s, $h, $b) = raw_http($port, "GET /ssi.html HTTP/1.0\r\n"
        . "Host: 127.0.0.1:$port\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: $KEY\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n");
    is($s, 200, 'SSI page including /ws: page served');
    like($b // '', qr/WebSocket upgrade in a subrequest/,
        'subrequest to the endpoint is refused with its reason');
    like($b // '', qr/after/, 'the page goes on after the refusal');
}

# --- 400: room, name, since -------------------------------------------------

my @bad = (
    [ 'room missing', { room => undef }, qr/^room is missing$/m ],
    [ 'room blank', { room => '   ' }, qr/^room is missing$/m ],
    [ 'room of 33', { room => 'A' x 33 },
        qr/^room is longer than 32 characters$/m ],
    [ 'room with a dot', { room => 'AB.C' }, qr/^room may hold only/m ],
    [ 'room with UTF-8', { room => 'ÄB' }, qr/^room may hold only/m ],
    [ 'name missing', { name => undef }, qr/^name is missing$/m ],
    [ 'name of 33 code points', { name => 'é' x 33 },
        qr/^name is longer than 32 characters$/m ],
    [ 'name with a control character', { name => "a\tb\x01" },
        qr/^name must be UTF-8 text without control characters$/m ],
    [ 'name not UTF-8', { path => '/ws?room=R&name=%FF%FE' },
        qr/^name must be UTF-8/m ],
    [ 'name overlong UTF-8', { path => '/ws?room=R&name=%C0%AF' },
        qr/^name must be UTF-8/m ],
    [ 'since not a number', { path => '/ws?room=R&name=n&since=abc' },
        qr/^since must be a non-negative integer$/m ],
    [ 'since negative', { path => '/ws?room=R&name=n&since=-1' },
        qr/^since must be a non-negative integer$/m ],
    [ 'since empty', { path => '/ws?room=R&name=n&since=' },
        qr/^since must be a non-negative integer$/m ],
);

for my $b (@bad) {
    my ($what, $o, $re) = @$b;
    my %o = %$o;
    if ($o{path}) {
        %o = (path => $o{path}, room => undef, name => undef);
    }
    refused($what, 400, $re, %o);
}

{
    my $c = $t->connect(' abC-_9 ', ' Zoë 😀 ', query => { since => 0 });
    ok(ref $c, 'room and name are trimmed, room upper-cased, since=0 ok')
        or diag($Rooms::Test::Client::LAST);
    my $w = ref $c ? $c->recv_json(5) : undef;
    is($w && $w->{data}{room}, 'ABC-_9', 'welcome: normalised room');
    is($w && $w->{data}{you}{name}, 'Zoë 😀',
        'welcome: trimmed UTF-8 name');
    $c->close if ref $c;

    $c = $t->connect('R', 'é' x 32);
    ok(ref $c, 'name of 32 code points (64 bytes) is accepted');
    $c->close if ref $c;

    # "+" is a space, "%2B" a plus
    $c = $t->connect(undef, undef, path => '/ws?room=R&name=a%2Bb+c');
    $w = ref $c ? $c->recv_json(5) : undef;
    is($w && $w->{data}{you}{name}, 'a+b c', 'name: %2B is a plus, + a space');
    $c->close if ref $c;
}

# --- 403: origin ------------------------------------------------------------

# origin($path, $origin) -> status of an otherwise valid upgrade
sub origin {
    my ($path, $origin) = @_;
    my ($s, undef, undef, $rest) = answer(path => "$path?room=O&name=o",
        room => undef, name => undef, headers => { Origin => $origin },
        then => $THEN);
    after_refusal("$path, Origin " . ($origin // '(none)'), $rest)
        if ($s // 0) != 101;
    return $s // 0;
}

my @origin = (
    # default: same origin (Origin host[:port] equals Host)
    [ '/ws', undef, 101 ],
    [ '/ws', "http://127.0.0.1:$port", 101 ],
    [ '/ws', "https://127.0.0.1:$port", 101 ],
    [ '/ws', 'http://127.0.0.1', 403 ],
    [ '/ws', "http://127.0.0.1:$port.evil.com", 403 ],
    [ '/ws', 'https://evil.example', 403 ],
    [ '/ws', 'null', 403 ],

    [ '/ws-exact', undef, 101 ],
    [ '/ws-exact', 'https://chat.example.com', 101 ],
    [ '/ws-exact', 'https://CHAT.example.com', 101 ],
    [ '/ws-exact', 'http://localhost:8080', 101 ],
    [ '/ws-exact', 'http://chat.example.com', 403 ],
    [ '/ws-exact', 'https://chat.example.com:8443', 403 ],
    [ '/ws-exact', 'https://evil.chat.example.com', 403 ],
    [ '/ws-exact', 'https://chat.example.com.evil.com', 403 ],
    [ '/ws-exact', 'http://localhost', 403 ],
    [ '/ws-exact', "http://127.0.0.1:$port", 403 ],

    [ '/ws-wild', 'https://a.example.org', 101 ],
    [ '/ws-wild', 'http://b.c.example.org', 101 ],
    [ '/ws-wild', 'https://example.org', 403 ],
    [ '/ws-wild', 'https://badexample.org', 403 ],
    [ '/ws-wild', 'https://a.example.org.evil.com', 403 ],

    [ '/ws-star', 'https://anything.test', 101 ],
    [ '/ws-star', 'null', 101 ],
    [ '/ws-star', undef, 101 ],

    [ '/ws-required', undef, 403 ],
    [ '/ws-required', "http://127.0.0.1:$port", 101 ],
    [ '/ws-required', 'https://evil.example', 403 ],
);

push @origin,
    [ '/ws-swild', 'https://a.example.com', 101 ],
    [ '/ws-swild', 'https://a.b.example.com', 101 ],
    [ '/ws-swild', 'http://a.example.com', 403 ],
    [ '/ws-swild', 'https://example.com', 403 ],
    [ '/ws-swild', 'https://a.example.com.evil.org', 403 ]
    if $scheme_wild;

for my $o (@origin) {
    my ($path, $origin, $want) = @$o;
    is(origin($path, $origin), $want,
        "$path, Origin " . ($origin // '(none)') . ": $want");
}

refused('foreign origin', 403, qr/^origin not allowed$/m,
    headers => { Origin => 'https://evil.example' });
refused('origin required', 403, qr/^Origin is required$/m,
    path => '/ws-required?room=O&name=o', room => undef, name => undef);

# --- rooms_room / rooms_name from request headers --------------------------

{
    my $c = $t->connect(undef, undef, path => '/ws-header',
        query => { room => 'IGNORED', name => 'ignored' },
        headers => { 'X-Room' => 'hdr-room', 'X-User' => 'Header%20User' });
    ok(ref $c, 'rooms_room/rooms_name from headers: 101')
        or diag($Rooms::Test::Client::LAST);
    my $w = ref $c ? $c->recv_json(5) : undef;
    is($w && $w->{data}{room}, 'HDR-ROOM', 'room taken from X-Room');
    is($w && $w->{data}{you}{name}, 'Header User',
        'name taken from X-User (percent-decoded)');
    $c->close if ref $c;

    refused('rooms_name header missing', 400, qr/^name is missing$/m,
        path => '/ws-header?room=A&name=B', room => undef, name => undef,
        headers => { 'X-Room' => 'A' });
    refused('rooms_room header bad', 400, qr/^room may hold only/m,
        path => '/ws-header', room => undef, name => undef,
        headers => { 'X-Room' => 'a b', 'X-User' => 'u' });
}

# --- 503 --------------------------------------------------------------------

is($t->stop_sidecar, 0, 'sidecar stopped');

ok(Rooms::Test::wait_until(sub {
    my ($s) = answer();
    return defined $s && $s == 503;
}, timeout => 5), 'sidecar down: 503');

refused('sidecar down', 503, qr/^sidecar unavailable$/m);

# Checks that come first still win over 503.
refused('sidecar down, bad room', 400, qr/^room is missing$/m,
    room => undef);
refused('sidecar down, version 8', 426, undef,
    headers => { 'Sec-WebSocket-Version' => 8 });

$t->finish;
