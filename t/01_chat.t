#!/usr/bin/perl

# Two clients in one room: welcome first, chat relayed to both (sender
# included) with data.from set by the server, bad JSON answered with an
# error envelope to the sender only.

use strict;
use warnings;
use utf8;

use Test::More;

use Rooms::Test;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
$t->start_nginx;

my $alice = $t->connect('ABCD', 'Alice');
ok(ref $alice, 'Alice upgrades')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");

my $w = $alice->recv_json(5);
is($w->{type}, 'welcome', 'Alice: first frame is welcome');
is($w->{data}{room}, 'ABCD', 'Alice: welcome room');
is($w->{data}{you}{name}, 'Alice', 'Alice: welcome you.name');
like($w->{data}{you}{id}, qr/^[0-9a-f]{12}\.\d+\.\d+$/,
    'Alice: you.id is <worker token>.<pid>.<conn>');

my $bob = $t->connect('ABCD', 'Bob');
ok(ref $bob, 'Bob upgrades')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");

$w = $bob->recv_json(5);
is($w->{type}, 'welcome', 'Bob: first frame is welcome');
is($w->{data}{room}, 'ABCD', 'Bob: welcome room');
is($w->{data}{you}{name}, 'Bob', 'Bob: welcome you.name');
isnt($w->{data}{you}{id}, undef, 'Bob: welcome has you.id');

my $text = "Hello, wörld ✓ \"quoted\" \\ <tag>";
$alice->send_json({ type => 'chat', data => { text => $text } });

for ([Alice => $alice], [Bob => $bob]) {
    my ($who, $c) = @$_;
    my $m = $c->wait_for(type => 'chat', timeout => 5);
    ok($m, "$who receives Alice's chat");
    is($m->{data}{from}, 'Alice', "$who: data.from is Alice");
    is($m->{data}{text}, $text, "$who: text intact (UTF-8, quotes)");
}

$bob->send_json({ type => 'chat', data => { text => 'hi from bob' } });

for ([Alice => $alice], [Bob => $bob]) {
    my ($who, $c) = @$_;
    my $m = $c->wait_for(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, 'hi from bob', "$who receives Bob's chat");
    is($m && $m->{data}{from}, 'Bob', "$who: data.from is Bob");
}

$bob->send_json({ type => 'chat',
    data => { text => 'spoof', from => 'Alice' } });

for ([Alice => $alice], [Bob => $bob]) {
    my ($who, $c) = @$_;
    my $m = $c->wait_for(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, 'spoof', "$who receives the spoofed chat");
    is($m && $m->{data}{from}, 'Bob', "$who: spoofed data.from overwritten");
}

# Invalid input: error to the sender only, connection stays usable.

my @bad = (
    [ 'not JSON', '{"type":"chat",' ],
    [ 'not an object', '[1,2,3]' ],
    [ 'data not an object', '{"type":"chat","data":"x"}' ],
);

for my $b (@bad) {
    my ($what, $raw) = @$b;

    $alice->send_text($raw);

    my $m = $alice->wait_for(ignore => ['state'], timeout => 5);
    is($m && $m->{type}, 'error', "$what: sender gets an error envelope");
    is($m && $m->{data}{code}, 'bad_envelope', "$what: code bad_envelope");
    ok($m && defined $m->{data}{message}, "$what: error has a message");
}

$alice->send_json({ type => 'chat', data => { text => 'still here' } });

my $m = $alice->wait_for(ignore => ['state'], timeout => 5);
is($m && $m->{type}, 'chat', 'Alice: connection usable after errors');
is($m && $m->{data}{text}, 'still here', 'Alice: her next chat arrives');

# Bob saw none of Alice's errors: his next message is her chat.
$m = $bob->wait_for(ignore => ['state'], timeout => 5);
is($m && $m->{type}, 'chat', 'Bob: no error envelopes leaked to him');
is($m && $m->{data}{text}, 'still here', "Bob: receives Alice's chat");

$alice->close;
$bob->close;

$t->finish;
