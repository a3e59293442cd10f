#!/usr/bin/perl

# A sidecar that is alive but stops reading: a worker's queue to it is
# bounded.  Past 64 MiB the worker closes the link (logging why), keeps
# its clients, reconnects once the sidecar reads again, and re-announces
# them: they chat again.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(wait_until);
use Rooms::Test::Raw;

sub not_reading {
    my ($t) = @_;
    open my $fh, '<', $t->error_log or return 0;
    return scalar grep { /is not reading/ } <$fh>;
}

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, args => [ '--rate-limit', 0 ]);
my $port = $t->start_nginx(workers => 1);

my $c = Rooms::Test::Raw->connect(port => $port, room => 'OVF',
    name => 'flood');
ok(ref $c, 'client joins') or BAIL_OUT('upgrade refused');
my $w = $c->next_json(5);
is($w && $w->{type}, 'welcome', 'welcome');

my $sidecar = $t->{procs}{sidecar}{pid};
ok(kill('STOP', $sidecar), 'sidecar stopped (SIGSTOP): alive, not reading');

# 16,000-byte chat envelopes: ~4,200 of them pass 64 MiB.
my $text = 'x' x (16000 - length '{"type":"chat","data":{"text":""}}');
my $frame = Rooms::Test::Raw::frame(
    payload => '{"type":"chat","data":{"text":"' . $text . '"}}');

my $logged = 0;
for my $i (1 .. 5000) {
    $c->send_raw($frame);
    next if $i % 200;
    last if $logged = not_reading($t);
}
$logged ||= wait_until(sub { not_reading($t) }, timeout => 10);
ok($logged, 'the worker logs that the sidecar is not reading');

ok(kill('CONT', $sidecar), 'sidecar reads again (SIGCONT)');

ok(wait_until(sub {
    my ($s) = Rooms::Test::http_get($port, '/rooms');
    return defined $s && $s == 200;
}, timeout => 10), 'the worker reconnects');

ok(!$c->eof, 'the client stayed connected');

# what the sidecar still read of the old link may come first
my $ok = wait_until(sub {
    $c->send_json({ type => 'chat', data => { text => 'after' } });
    while (my $m = $c->wait_json(type => 'chat', timeout => 1)) {
        return 1 if ($m->{data}{text} // '') eq 'after';
    }
    return 0;
}, timeout => 15);
ok($ok, 'and chats again after the re-announce');

$t->finish;
