#!/usr/bin/perl

# Room keys expire (SPEC 4, sidecar room_ttl): a room nobody has joined or
# written to for room_ttl leaves nothing behind in Redis; a room with a
# member, however quiet, keeps its keys (and so its history) for as long
# as the member stays; a room whose keys expired starts again from id 1.
# The default is 24 hours.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(wait_until redis_command);

my $t = Rooms::Test->new;
my $redis = $t->start_redis;
$t->start_sidecar($redis, args => [ '--room-ttl', 1 ]);
$t->start_nginx;
my $port = $t->redis_port;

sub redis { redis_command($port, @_) }
sub keys_of { my ($room) = @_; return redis('KEYS', "room:{$room}:*") }

# A room used and left: its keys go about room_ttl after the last use.
my $c = $t->connect('EXP1', 'ann');
ok(ref $c, 'ann joins EXP1')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
is($c->recv_json(5)->{type}, 'welcome', 'ann: welcome');
for my $n (1 .. 3) {
    $c->send_json({ type => 'chat', data => { text => "m$n" } });
    my $m = $c->wait_for(type => 'chat', timeout => 5);
    is($m && $m->{data}{text}, "m$n", "ann: chat m$n comes back");
}
like(keys_of('EXP1'), qr/^\*[5-9]$/,
    'EXP1 has its keys while in use (seq, history, senders, presence, '
    . 'epoch)');
my @in_index = grep { redis('ZSCORE', "rooms:{b$_}", 'EXP1') =~ /^\$1$/ }
    0 .. 15;
is(scalar @in_index, 1, 'EXP1 is in one bucket of the room index');
my $pttl = redis('PTTL', 'room:{EXP1}:history');
ok($pttl =~ /^:(\d+)$/ && $1 > 0 && $1 <= 1000,
    "history has a TTL of at most room_ttl ($pttl)");
$c->close;
my $left = time;

my $gone = wait_until(sub { keys_of('EXP1') eq '*0' }, timeout => 10,
    interval => 0.05);
ok($gone, 'EXP1 left nothing in Redis after room_ttl');
cmp_ok(time - $left, '>=', 0.5, 'not before room_ttl');
is(join(',', map { redis('ZSCORE', "rooms:{b$_}", 'EXP1') } 0 .. 15),
    join(',', ('$-1') x 16), 'EXP1 not in the room index (16 buckets)');
is(redis('EVAL', "return #redis.call('keys', 'rooms:{b*}:v:EXP1')", 0),
    ':0', 'the version of its count in the room index expired too');
is(redis('SISMEMBER', 'server:{' . $t->server_id . '}:rooms', 'EXP1'),
    ':0', 'EXP1 not in the server\'s room set');

# Joined again: a new room (ids from 1, no backfill).
my $c2 = $t->connect('EXP1', 'bob');
my $w = $c2->recv_json(5);
is($w->{type}, 'welcome', 'bob: welcome in the expired room');
my $first = $c2->recv_json(5);
is($first && $first->{type}, 'state', 'bob: no backfill, his state first');
is($first && $first->{id}, 1, 'ids start again from 1');
$c2->close;

# A quiet member keeps its room: three times room_ttl without a message.
my $q = $t->connect('EXP2', 'quiet');
is($q->recv_json(5)->{type}, 'welcome', 'quiet: welcome');
$q->send_json({ type => 'chat', data => { text => 'kept' } });
ok($q->wait_for(type => 'chat', timeout => 5), 'quiet: its chat is back');
my $t0 = time;
wait_until(sub { time - $t0 >= 3 }, timeout => 4, interval => 0.1);
like(redis('HLEN', 'room:{EXP2}:presence'), qr/^:1$/,
    'after 3 x room_ttl the quiet member is still present');
like(redis('LLEN', 'room:{EXP2}:history'), qr/^:1$/,
    'and the history is still there');
my $late = $t->connect('EXP2', 'late');
is($late->recv_json(5)->{type}, 'welcome', 'late: welcome');
my $back = $late->wait_for(type => 'chat', timeout => 5);
is($back && $back->{data}{text}, 'kept', 'late: the backfill has the chat');
$_->close for $q, $late;
ok(wait_until(sub { keys_of('EXP2') eq '*0' }, timeout => 10,
    interval => 0.05), 'EXP2 expires once both left');

# The default: 24 hours.
my $d = Rooms::Test->new(name => 'default');
$d->start_sidecar($redis, args => [ '--key-prefix', 'd:' ]);
$d->start_nginx;
my $dc = $d->connect('DEF', 'dee');
is($dc->recv_json(5)->{type}, 'welcome', 'dee: welcome (default room_ttl)');
$dc->send_json({ type => 'chat', data => { text => 'x' } });
ok($dc->wait_for(type => 'chat', timeout => 5), 'dee: chat back');
for my $what (qw(seq history epoch presence senders)) {
    my $ms = redis('PTTL', "d:room:{DEF}:$what");
    ok($ms =~ /^:(\d+)$/ && $1 > 86_300_000 && $1 <= 86_400_000,
        "default: $what expires in 24 h ($ms)");
}
$dc->close;

Rooms::Test::finish();
