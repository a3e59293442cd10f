#!/usr/bin/perl

# Every message is answered and no room stays deaf (SPEC 2.2, 4; issue 8):
#  - a publish whose script fails in Redis (OOM) gets `unavailable` with
#    its ref, and is not delivered; once Redis has room, chat works;
#  - a gap fill whose `sync` fails (a script error: the room's epoch key
#    of the wrong type; under OOM alone it succeeds, as it writes nothing
#    Redis refuses then) is retried until it succeeds: what was published
#    meanwhile reaches the room, once, in order;
#  - a client that joined while Redis was down (no welcome yet) and whose
#    sidecar then restarted gets its welcome from the new sidecar.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(wait_until);

my $t = Rooms::Test->new;
my $redis = $t->start_redis;
my $port = $t->redis_port;
$t->start_sidecar($redis);
$t->start_nginx(workers => 1);

sub redis { Rooms::Test::redis_command($port, @_) }

sub joined {
    my ($name, $room) = @_;
    my $c = $t->connect($room, $name);
    ref $c or BAIL_OUT("$name: upgrade refused: $Rooms::Test::Client::LAST");
    my $w = $c->recv_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome");
    return $c;
}


# --- a publish that fails in Redis ------------------------------------------

my $a1 = joined('a1', 'OOM');
my $a2 = joined('a2', 'OOM');
$_->wait_for(type => 'state', timeout => 2) for $a1, $a2;

is(redis('CONFIG', 'SET', 'maxmemory-policy', 'noeviction'), '+OK',
    'noeviction');
is(redis('CONFIG', 'SET', 'maxmemory', '1'), '+OK', 'Redis out of memory');

$a1->send_json({ type => 'chat', data => { text => 'oom' }, ref => 'r-oom' });
my $e = $a1->wait_for(type => 'error', timeout => 5, ignore => ['state']);
is($e && $e->{data}{code}, 'unavailable', 'failed script: unavailable');
is($e && $e->{data}{ref}, 'r-oom', '... with the ref');

is(redis('CONFIG', 'SET', 'maxmemory', '0'), '+OK', 'Redis has room again');

$a1->send_json({ type => 'chat', data => { text => 'ok' }, ref => 'r-ok' });
for ([a1 => $a1], [a2 => $a2]) {
    my @chats = $_->[1]->collect(type => 'chat', count => 1, timeout => 5,
        quiet => 0.3);
    is(join(',', map { $_->{data}{text} } @chats), 'ok',
        "$_->[0]: only the published chat arrives");
    is($chats[0] && $chats[0]{ref}, 'r-ok', "$_->[0]: it carries its ref");
}


# --- a gap fill whose sync fails -------------------------------------------

my $log_from = -s $t->sidecar_log;

my $epoch_key = 'room:{OOM}:epoch';
is(redis('EXISTS', $epoch_key), ':1', 'the room has an epoch key');
is(redis('RENAME', $epoch_key, 'kept-epoch'), '+OK', 'its epoch kept aside');
is(redis('HSET', $epoch_key, 'x', 'y'), ':1',
    'an epoch key of the wrong type: the sync script fails');
like(redis('CLIENT', 'KILL', 'TYPE', 'pubsub'), qr/^:[1-9]/,
    'the subscriber connection is cut: the room must be filled again');

ok(wait_until(sub { log_since($log_from) =~ /sync failed room=OOM/ },
    timeout => 5), 'the gap fill fails (WRONGTYPE)');

is(redis('RENAME', 'kept-epoch', $epoch_key), '+OK', 'the epoch is back');
$a2->send_json({ type => 'chat', data => { text => 'after' }, ref => 'r2' });

for ([a1 => $a1], [a2 => $a2]) {
    my @chats = $_->[1]->collect(type => 'chat', count => 1, timeout => 5,
        quiet => 0.3);
    is(join(',', map { $_->{data}{text} } @chats), 'after',
        "$_->[0]: the retried gap fill delivers what came meanwhile, once");
}
like(log_since($log_from), qr/gap fill room=OOM/, 'the gap fill was retried');
ok($a1->is_open && $a2->is_open, 'both stayed connected');
$_->close for $a1, $a2;


# --- a client that never got its welcome -----------------------------------

$t->stop_redis;

my $c = $t->connect('LATE', 'late');
ok(ref $c, 'joins while Redis is down (the sidecar is up)');
ok(!$c->recv_json(0.5), 'no welcome while Redis is down');

$t->kill_proc('sidecar', 'KILL');
$t->start_redis(port => $port);
$t->start_sidecar($redis);

my $w = $c->wait_for(type => 'welcome', timeout => 5);
ok($w, 'the new sidecar welcomes it (it was never welcomed)');
$c->send_json({ type => 'chat', data => { text => 'hi' } });
my $m = $c->wait_for(type => 'chat', timeout => 5);
is($m && $m->{data}{text}, 'hi', 'and it chats');
$c->close;

$t->finish;


sub log_since {
    my ($from) = @_;
    open my $fh, '<', $t->sidecar_log or return '';
    seek $fh, $from, 0;
    local $/;
    return scalar <$fh> // '';
}
