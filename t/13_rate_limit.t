#!/usr/bin/perl

# Per-connection rate limit (SPEC 3): over the bucket, a message is dropped
# with error rate_limited and the connection stays; sustained abuse closes
# it with 1008.  Other clients are not affected.

use strict;
use warnings;

use Test::More;

use Rooms::Test;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, args => [ '--rate-limit', 5, '--rate-burst', 5,
    '--rate-kick', 30 ]);
$t->start_nginx;

my $fast = $t->connect('RATE', 'fast');
my $calm = $t->connect('RATE', 'calm');
ok(ref $fast && ref $calm, 'two clients join')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
$_->recv_json(5) for $fast, $calm;

$fast->send_json({ type => 'chat', data => { text => '', n => $_ } }) for 1 .. 10;

my (@chat, @err);
while (my $m = $fast->wait_for(ignore => ['state'], timeout => 1)) {
    push @chat, $m if $m->{type} eq 'chat';
    push @err, $m if $m->{type} eq 'error';
    last if @chat + @err == 10;
}
is(scalar @chat, 5, 'burst of 5 relayed');
is(scalar @err, 5, 'the other 5 refused');
is_deeply([ map { $_->{data}{code} } @err ], [ ('rate_limited') x 5 ],
    'with error rate_limited');
ok(!$fast->closed, 'connection still open');

my @calm = $calm->collect(type => 'chat', count => 5, timeout => 2,
    quiet => 0.2);
is_deeply([ map { $_->{data}{n} } @calm ], [ 1 .. 5 ],
    'the room got the 5 relayed ones');

# Sustained abuse: keep flooding; the sidecar closes the connection.
for (1 .. 60) {
    $fast->send_json({ type => 'chat', data => { text => '' } }) or last;
}
my $closed = 0;
while (1) {
    my $m = $fast->recv_json(3);
    if (!$m) {
        $closed = $fast->closed;
        last;
    }
}
ok($closed, 'flooding client closed');
is($fast->close_code, 1008, 'with status 1008');

$calm->send_json({ type => 'chat', data => { text => '', n => 'after' } });
my $m = $calm->wait_for(type => 'chat', timeout => 5,
    match => sub { ($_[0]{data}{n} // '') eq 'after' });
is($m && $m->{data}{n}, 'after', 'the calm client is unaffected');

$calm->close;
$t->finish;
