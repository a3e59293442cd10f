#!/usr/bin/perl

# Envelope rules (SPEC 2.2, 2.3): ids and ts on everything relayed, data.from
# and agree's username set by the server, agree followed by a state that
# shows the player ready, typing-like types relayed live but never kept,
# reserved, malformed and too long envelopes answered with the right error
# to the sender only, the socket still usable after each.

use strict;
use warnings;

use IO::Socket::INET;
use Test::More;

use Rooms::Test;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
# The module lets 64 KiB through; the sidecar's own limit (16 KiB) answers.
$t->start_nginx(server => '        rooms_max_message_size 64k;');

my $alice = $t->connect('ENV', 'Alice');
ok(ref $alice, 'Alice upgrades')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");

my $w = $alice->recv_json(5);
is($w->{type}, 'welcome', 'Alice: welcome first');
is($w->{data}{last_id}, 0, 'Alice: last_id 0 in a new room');

my $st = $alice->recv_json(5);
is($st->{type}, 'state', 'Alice: then the state announcing her join');
like($st->{id}, qr/^\d+$/, 'state has an integer id');
like($st->{ts}, qr/^\d{13}$/, 'state has a ms timestamp');
is_deeply([ map { $_->{name} } @{ $st->{data}{players} } ], ['Alice'],
    'state lists Alice');
is_deeply($st->{data}{players}[0],
    { id => $w->{data}{you}{id}, name => 'Alice', alive => JSON::PP::true(),
      ready => JSON::PP::false() },
    'player entry: id as in welcome, name, alive, ready');
is($st->{data}{room}, 'ENV', 'state names the room');

my $bob = $t->connect('ENV', 'Bob');
$w = $bob->recv_json(5);
is($w->{type}, 'welcome', 'Bob: welcome');
is($w->{data}{last_id}, $st->{id}, "Bob: last_id is the room's newest id");

for ([Alice => $alice], [Bob => $bob]) {
    my ($who, $c) = @$_;
    my $s = $c->wait_for(type => 'state', timeout => 5);
    is_deeply([ map { $_->{name} } @{ $s->{data}{players} } ],
        [ 'Alice', 'Bob' ], "$who: state lists both, in join order");
}

# Spoofed from, ids strictly increasing, ts present.

$bob->send_json({ type => 'chat',
    data => { text => 'spoof', from => 'Alice' }, id => 1, ts => 2 });
my $typing_sent = { type => 'typing', data => { on => 1, from => 'X' } };
$bob->send_json($typing_sent);
# One client's messages keep their order (two clients' need not).
$bob->send_json({ type => 'chat', data => { text => 'real' } });

my $last;
for ([Alice => $alice], [Bob => $bob]) {
    my ($who, $c) = @$_;
    my @m = map { $c->wait_for(ignore => ['state'], timeout => 5) } 1 .. 3;
    is_deeply([ map { $_ && $_->{type} } @m ], [qw(chat typing chat)],
        "$who: chat, typing, chat in order");
    is($m[0]{data}{from}, 'Bob', "$who: spoofed from overwritten");
    is($m[1]{data}{from}, 'Bob', "$who: typing gets from too");
    ok($m[0]{id} < $m[1]{id} && $m[1]{id} < $m[2]{id},
        "$who: ids strictly increasing");
    isnt($m[0]{id}, 1, "$who: client id ignored");
    like($m[0]{ts}, qr/^\d{13}$/, "$who: ts in ms");
    $last = $m[2]{id};
}

# agree: relayed with exactly {username}, then a state with Bob ready.

$bob->send_json({ type => 'agree', data => { username => 'Mallory' } });

for ([Alice => $alice], [Bob => $bob]) {
    my ($who, $c) = @$_;
    my $a = $c->wait_for(timeout => 5);
    is($a && $a->{type}, 'agree', "$who: agree relayed");
    is_deeply($a && $a->{data}, { username => 'Bob' },
        "$who: agree data is exactly the server's username");
    my $s = $c->recv_json(5);
    is($s && $s->{type}, 'state', "$who: state right after agree");
    is($s && $s->{id}, $a->{id} + 1, "$who: state is the next id");
    my %ready = map { $_->{name} => $_->{ready} ? 1 : 0 }
        @{ $s->{data}{players} };
    is_deeply(\%ready, { Alice => 0, Bob => 1 }, "$who: Bob is ready");
}

# Typing never enters history: a newcomer's backfill has the chats only.

my $carol = $t->connect('ENV', 'Carol');
$w = $carol->recv_json(5);
is($w->{type}, 'welcome', 'Carol: welcome');
my @back;
while (my $m = $carol->recv_json(2)) {
    last if $m->{type} eq 'state';
    push @back, $m;
}
is_deeply([ map { "$_->{type}:" . ($_->{data}{text} // '') } @back ],
    [ 'chat:spoof', 'chat:real' ], 'Carol: backfill is the two chats only');
ok($back[-1]{id} <= $w->{data}{last_id}, 'Carol: backfill ids <= last_id');

# Errors: to the sender only, socket still usable.

my @bad = (
    [ 'not JSON', '{"type":"chat",', 'bad_envelope' ],
    [ 'not an object', '"chat"', 'bad_envelope' ],
    [ 'no type', '{"data":{}}', 'bad_envelope' ],
    [ 'chat without text', '{"type":"chat","data":{}}', 'bad_envelope' ],
    [ 'chat with a number as text', '{"type":"chat","data":{"text":5}}',
      'bad_envelope' ],
    [ 'type not a string', '{"type":5,"data":{}}', 'bad_envelope' ],
    [ 'data missing', '{"type":"chat"}', 'bad_envelope' ],
    [ 'data not an object', '{"type":"chat","data":[1]}', 'bad_envelope' ],
    [ 'bad type', '{"type":"Chat!","data":{}}', 'bad_type' ],
    [ 'type too long', '{"type":"' . ('a' x 33) . '","data":{}}',
        'bad_type' ],
    [ 'too long', '{"type":"chat","data":{"t":"' . ('x' x 20000) . '"}}',
        'bad_envelope' ],
    (map { [ "reserved $_", qq({"type":"$_","data":{}}), 'reserved_type' ] }
        qw(state error welcome reset)),
);

for my $b (@bad) {
    my ($what, $raw, $code) = @$b;

    $alice->send_text($raw);
    my $m = $alice->wait_for(ignore => ['state'], timeout => 5);
    is($m && $m->{type}, 'error', "$what: error envelope");
    is($m && $m->{data}{code}, $code, "$what: code $code");
}

$alice->send_json({ type => 'chat', data => { text => 'still here' } });
for ([Alice => $alice], [Bob => $bob], [Carol => $carol]) {
    my ($who, $c) = @$_;
    my $m = $c->wait_for(ignore => ['state'], timeout => 5);
    is($m && $m->{type}, 'chat', "$who: next frame is the chat, no errors");
    is($m && $m->{data}{text}, 'still here', "$who: Alice still usable");
}

# The script cache is flushed under us: the next publish gets NOSCRIPT,
# is sent again with its body, and arrives once.
is(Rooms::Test::redis_command($t->redis_port, 'SCRIPT', 'FLUSH'), '+OK',
    'SCRIPT FLUSH in Redis');
$alice->send_json({ type => 'chat', data => { text => 'after flush' } });
my @after = $bob->collect(type => 'chat', count => 1, timeout => 5,
    quiet => 0.3);
is_deeply([ map { $_->{data}{text} } @after ], ['after flush'],
    'publish after SCRIPT FLUSH: delivered once');

$_->close for $alice, $bob, $carol;

$t->finish;

