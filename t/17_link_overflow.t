#!/usr/bin/perl

# A sidecar that is alive but stops reading: what a worker keeps for it
# is bounded.  Every client message waits in the worker until the
# sidecar answers it; past rooms_hold_size (here 1m) of unanswered
# messages the worker refuses new ones with `unavailable` (logging why)
# instead of queueing more, and the client stays connected.  A sidecar
# that answers nothing for rooms_hold_time (here 2s) loses its link: the
# worker connects again and holds what comes meanwhile (then refuses it
# past the hold time).  Once the sidecar reads again it answers, and the
# client chats again.  (The link's own 64 MiB cap stays as a last
# resort.)

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(wait_until);
use Rooms::Test::Raw;

sub not_reading {
    my ($t) = @_;
    open my $fh, '<', $t->error_log or return 0;
    return scalar grep {
        /bytes of client messages wait for the sidecar, message refused/
    } <$fh>;
}

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, args => [ '--rate-limit', 0 ]);
my $port = $t->start_nginx(workers => 1,
    http => "rooms_hold_size 1m;\nrooms_hold_time 2s;");

my $c = Rooms::Test::Raw->connect(port => $port, room => 'OVF',
    name => 'flood');
ok(ref $c, 'client joins') or BAIL_OUT('upgrade refused');
my $w = $c->next_json(5);
is($w && $w->{type}, 'welcome', 'welcome');

# One client may take an eighth of rooms_hold_size: the worker's bound is
# reached by several.
my @flood = ($c);
for my $i (2 .. 10) {
    my $f = Rooms::Test::Raw->connect(port => $port, room => 'OVF',
        name => "flood$i");
    ok(ref $f, "client flood$i joins") or BAIL_OUT('upgrade refused');
    my $fw = $f->next_json(5);
    push @flood, $f;
}

my $sidecar = $t->{procs}{sidecar}{pid};
ok(kill('STOP', $sidecar), 'sidecar stopped (SIGSTOP): alive, not reading');

# 16,000-byte chat envelopes: ~66 of them pass 1 MiB.
my $text = 'x' x (16000 - length '{"type":"chat","data":{"text":""}}');
my $frame = Rooms::Test::Raw::frame(
    payload => '{"type":"chat","data":{"text":"' . $text . '"}}');

my $logged = 0;
for my $i (1 .. 400) {
    $flood[$i % @flood]->send_raw($frame);
}
$logged ||= wait_until(sub { not_reading($t) }, timeout => 10);
ok($logged, 'the worker refuses what it cannot keep, and says why');

my $refused = 0;
for my $f (@flood) {
    while (my $m = $f->wait_json(type => 'error', timeout => 1)) {
        $refused++ if ($m->{data}{code} // '') eq 'unavailable';
    }
}
ok($refused >= 100, "the clients got unavailable ($refused)");

ok(wait_until(sub {
    open my $fh, '<', $t->error_log or return 0;
    return scalar grep { /has not answered a message for/ } <$fh>;
}, timeout => 5), 'a sidecar that answers nothing loses its link');

$c->send_json({ type => 'chat', data => { text => 'held' },
    ref => 'r-held' });
my $held = $c->wait_json(type => 'error', timeout => 4,
    match => sub { ($_[0]{data}{ref} // '') eq 'r-held' });
is($held && $held->{data}{ref}, 'r-held',
    'a message sent meanwhile is held, then refused past the hold time');

ok(kill('CONT', $sidecar), 'sidecar reads again (SIGCONT)');

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
