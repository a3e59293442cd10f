#!/usr/bin/perl

# wss: the endpoint behind "listen ... ssl" with a self-signed certificate
# made at test time.  Chat between a TLS and a plain client, a message of
# the size limit (several TLS records), fragments with a ping, a protocol
# error (close 1002, then the connection ends) and a clean close.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(free_port);
use Rooms::Test::Raw qw(frame);

BEGIN {
    eval { require IO::Socket::SSL; 1 }
        or plan(skip_all => 'IO::Socket::SSL missing (libio-socket-ssl-perl)');
}

my $openssl = Rooms::Test::which('openssl')
    or plan(skip_all => 'openssl not found');

my $t = Rooms::Test->new;
my $dir = $t->dir;

system("$openssl req -x509 -newkey ec "
    . "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
    . "-keyout $dir/key.pem -out $dir/cert.pem -subj /CN=localhost "
    . '-batch >/dev/null 2>&1') == 0
    or plan(skip_all => 'openssl req failed');

$t->start_redis;
$t->start_sidecar;

my $tls = free_port();
my $port = $t->start_nginx(http => <<"EOF");
    server {
        listen 127.0.0.1:$tls ssl;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;

        location = /ws {
            rooms_websocket;
        }
    }
EOF

sub join_room {
    my ($name, %o) = @_;

    my $c = Rooms::Test::Raw->connect(room => 'TLS', name => $name, %o);
    ok(ref $c, "$name upgrades") or BAIL_OUT("$name: upgrade refused");
    my $w = $c->next_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome") or return;

    return $c;
}

my $alice = join_room('alice', port => $tls, ssl => 1);
my $bob = join_room('bob', port => $port);

unless ($alice && $bob) {
    diag('no welcome over TLS: frames stay in the SSL buffer?');
    $t->finish;
    exit;
}
isa_ok($alice->sock, 'IO::Socket::SSL', 'alice');

$alice->send_json({ type => 'chat', data => { text => 'over tls' } });
for ([ alice => $alice ], [ bob => $bob ]) {
    my $m = $_->[1]->wait_json(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, 'over tls', "$_->[0] gets the wss chat");
}

$bob->send_json({ type => 'chat', data => { text => 'to tls' } });
for ([ alice => $alice ], [ bob => $bob ]) {
    my $m = $_->[1]->wait_json(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, 'to tls', "$_->[0] gets the plain chat");
}

my $empty = '{"type":"chat","data":{"text":""}}';
my $big = '{"type":"chat","data":{"text":"'
    . ('y' x (16384 - length $empty)) . '"}}';
is(length $big, 16384, 'message of the limit built');

# in fragments with a ping in between, over several TLS records
$alice->send_raw(frame(payload => substr($big, 0, 9000), fin => 0)
    . frame(op => 9, payload => 'tls-ping')
    . frame(op => 0, payload => substr($big, 9000)));

for ([ alice => $alice ], [ bob => $bob ]) {
    my $m = $_->[1]->wait_json(type => 'chat', timeout => 5);
    is(length($m && $m->{data}{text} // ''), 16384 - length $empty,
        "$_->[0] gets the 16 KiB message whole");
}
is_deeply($alice->{pongs}, [ 'tls-ping' ], 'alice: ping answered over TLS');

$alice->send_frame(op => 8, payload => pack('n', 1000));
my ($code, undef, $eof) = $alice->expect_close(5);
is($code, 1000, 'wss: clean close 1000');
ok($eof, 'wss: connection closed');

my $eve = join_room('eve', port => $tls, ssl => 1);
$eve->send_frame(op => 2, payload => 'bin');
($code, undef, $eof) = $eve->expect_close(5);
is($code, 1003, 'wss: binary frame closed with 1003');
ok($eof, 'wss: connection closed after 1003');

my $mallory = join_room('mallory', port => $tls, ssl => 1);
$mallory->send_frame(payload => 'x', mask => 0);
($code, undef, $eof) = $mallory->expect_close(5);
is($code, 1002, 'wss: unmasked frame closed with 1002');
ok($eof, 'wss: connection closed after 1002');

$bob->send_frame(op => 8, payload => pack('n', 1000));
($code) = $bob->expect_close(5);
is($code, 1000, 'plain client closes cleanly');

$t->finish;
