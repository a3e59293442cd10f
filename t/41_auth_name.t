#!/usr/bin/perl

# The player's name from authentication, the nginx way (issue 10, item 5):
#
#     auth_request /auth;
#     auth_request_set $user $upstream_http_x_user;
#     rooms_name $user;
#
# with /auth proxied to a real upstream (an nginx server on a Unix socket
# here) that answers 204 with "X-User: NAME" for a known token.  Asserts:
#   - the name in welcome, in the others' state and in the relayed "from"
#     is the auth's user, whatever name= the query carries, and without one;
#   - the user is percent-decoded like the query's name (an auth server
#     can send UTF-8 names in an ASCII header);
#   - a refused auth (401, 403) is the handshake's answer and never
#     reaches the sidecar: its log has no "open" for the refused room;
#   - a 204 without X-User (empty user) gets 400 "name is missing".

use strict;
use warnings;

use Test::More;

use Rooms::Test;
use Rooms::Test::Raw qw(raw_http upgrade_request);

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;

my $dir = $t->dir;
my $port = $t->start_nginx(http => <<"EOF", server => <<"EOF");
    # the auth service: a token in X-Token names the user
    map \$http_x_token \$auth_user {
        default    "";
        t-alice    Alice;
        t-bob      Bob;
        t-utf      J%C3%BCrgen;
    }

    server {
        listen unix:$dir/auth.sock;
        access_log $dir/auth.log;

        location = /authz {
            if (\$http_x_token = "") {
                return 401;
            }

            if (\$http_x_token = "forbidden") {
                return 403;
            }

            # empty for an unknown token: no X-User at all
            add_header X-User \$auth_user always;
            return 204;
        }
    }
EOF
        location = /ws-user {
            rooms_websocket;
            auth_request /auth;
            auth_request_set \$user \$upstream_http_x_user;
            rooms_name \$user;
        }

        location = /auth {
            internal;
            proxy_pass http://unix:$dir/auth.sock:/authz;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI \$request_uri;
        }
EOF


sub upgrade {
    my ($room, $name, $token) = @_;

    return Rooms::Test::Raw->connect(port => $port, path => '/ws-user',
        room => $room, name => $name,
        headers => { 'X-Token' => $token });
}


sub names {
    my ($state) = @_;

    return join ',', sort map { $_->{name} } @{ $state->{data}{players} };
}


sub sidecar_log {
    open my $fh, '<', $t->sidecar_log or return '';
    local $/;
    return scalar <$fh>;
}


# --- the name is the auth's user ------------------------------------------

my $alice = upgrade('AUTHN', 'Mallory', 't-alice');
ok(ref $alice, 'auth 204 with X-User: the upgrade goes through');

my $w = ref $alice ? $alice->wait_json(type => 'welcome', timeout => 5) : undef;
is($w && $w->{data}{you}{name}, 'Alice',
    'welcome: the name is the auth\'s user, not the query\'s name=Mallory');

my $bob = upgrade('AUTHN', undef, 't-bob');
$w = ref $bob ? $bob->wait_json(type => 'welcome', timeout => 5) : undef;
is($w && $w->{data}{you}{name}, 'Bob',
    'welcome: without name= in the query, the auth\'s user');

my $state = ref $alice ? $alice->wait_json(type => 'state', timeout => 5,
    match => sub { names($_[0]) eq 'Alice,Bob' }) : undef;
ok($state, 'state: the room lists Alice and Bob, no Mallory');

my $utf = upgrade('AUTHN', 'x', 't-utf');
$w = ref $utf ? $utf->wait_json(type => 'welcome', timeout => 5) : undef;
is($w && $w->{data}{you}{name}, "J\x{fc}rgen",
    'the user is percent-decoded: X-User: J%C3%BCrgen is "J\x{fc}rgen"');

if (ref $alice && ref $bob) {
    $alice->send_json({ type => 'chat',
        data => { text => 'hi', from => 'Mallory' } });
}
my $chat = ref $bob ? $bob->wait_json(type => 'chat', timeout => 5,
    match => sub { ($_[0]{data}{text} // '') eq 'hi' }) : undef;
is($chat && $chat->{data}{from}, 'Alice',
    'relayed chat: from is the auth\'s user (a client\'s "from" overwritten)');

my $opens = () = sidecar_log() =~ /\bopen link=.* room=AUTHN /g;
is($opens, 3, 'the sidecar opened the three authenticated clients');
like(sidecar_log(), qr/\bopen link=.* room=AUTHN .*name="Alice"/,
    'the sidecar opened Alice under her auth name');
unlike(sidecar_log(), qr/Mallory/, 'the query\'s name never reached it');


# --- refused auth never reaches the sidecar -----------------------------------

is(upgrade('REFUSED', 'Eve', undef), 401,
    'no token: the auth\'s 401 is the upgrade\'s answer');
is(upgrade('REFUSED', 'Eve', 'forbidden'), 403,
    'a forbidden token: the auth\'s 403 is the upgrade\'s answer');

my ($status, undef, $body) = raw_http($port, upgrade_request(port => $port,
    path => '/ws-user', room => 'REFUSED', name => 'Eve',
    key => 'dGhlIHNhbXBsZSBub25jZQ==',
    headers => { 'X-Token' => 't-unknown' }));
is($status, 400, 'auth 204 without X-User (empty user): 400');
is($body, "name is missing\n", 'with the module\'s reason, name= ignored');

# a client that got through after the refusals, on both workers' links:
# anything the refused ones had sent to the sidecar would be logged by now
my @after = map { upgrade('AFTER', undef, 't-bob') } 1 .. 4;
is(scalar(grep { ref $_ && $_->wait_json(type => 'welcome', timeout => 5) }
    @after), 4, 'clients after the refusals join');

my $log = sidecar_log();
unlike($log, qr/room=REFUSED/, 'the sidecar never heard of a refused upgrade');
unlike($log, qr/Eve/, 'nor of the query\'s name of one');

my $auth_log = do { open my $fh, '<', "$dir/auth.log"; local $/; <$fh> }
    // '';
my @auth = $auth_log =~ m{"GET /authz HTTP/1\.0" (\d{3})}g;
is(join(' ', sort @auth), '204 204 204 204 204 204 204 204 401 403',
    'the auth upstream was asked once per upgrade');

$_->close for grep { ref } $alice, $bob, $utf, @after;

$t->finish;
