#!/usr/bin/perl

# The Redis Cluster harness alone (Rooms::Test::Cluster; no nginx, no
# sidecar): 3 masters with a replica each.  What the sidecar's cluster
# routing will rely on (docs/redis.md "Redis Cluster"), seen on Redis 7:
# the CLUSTER SLOTS shape and CLUSTER KEYSLOT (the same table as
# t/unit/sidecar_cluster_map_test.cc), sharded Pub/Sub on a room's channel
# delivered through the node owning its slot (another node answers
# MOVED), a busy room's slot moved to another master (its keys follow,
# a writer following MOVED/ASK loses no increment, the old owner drops
# its subscribers with `sunsubscribe`), a master killed and its replica
# promoted with the room's data, and every node stopped at the end.
# Also what the cluster design counts on: scripts confined to a slot,
# a repeated SSUBSCRIBE confirmed (a barrier), a script run with ASKING
# on an importing node publishing to nobody.

use strict;
use warnings;

use IO::Select;
use POSIX qw(:sys_wait_h _exit);
use Test::More;
use Time::HiRes qw(sleep time);

use Rooms::Test qw(wait_until);
use Rooms::Test::Cluster qw(is_error);

# the writer child, stopped by PID also when the test dies
my $WRITER;
END {
    if ($WRITER) {
        kill 'KILL', $WRITER;
        waitpid($WRITER, 0);
    }
}

# an integer reply, 0 for nil or an error (a key not there yet, MOVED)
sub int_of {
    my ($r) = @_;
    return !defined $r || is_error($r) ? 0 : $r;
}

my $t0 = time;
my $c = Rooms::Test::Cluster->start(masters => 3, replicas => 1);
my @masters = $c->masters;
is(scalar @masters, 3, 'three masters');
like($c->seed_url, qr{^redis://127\.0\.0\.1:\d+$}, 'a seed url');
is(scalar(() = $c->replicas_of($_)), 1, "master $_->{port} has a replica")
    for @masters;
diag(sprintf 'cluster up in %.1f s', time - $t0);

# --- the slot map and key slots as the sidecar will read them --------------

my $slots = $c->command($masters[0], 'CLUSTER', 'SLOTS');
ok(!is_error($slots) && @$slots == 3, 'CLUSTER SLOTS: three ranges');
my $covered = 0;
for my $r (@$slots) {
    $covered += $r->[1] - $r->[0] + 1;
    my ($m) = grep { $_->{port} == $r->[2][1] } @masters;
    ok($m && $r->[2][0] eq '127.0.0.1' && $r->[2][2] eq $m->{id}
        && ref $r->[2][3] eq 'ARRAY',
        "range $r->[0]-$r->[1]: [host, port, id, metadata] of its master");
    # replicas follow (Redis 7.0 lists one some seconds after it synced)
    ok(!(grep { ref $_ ne 'ARRAY' || @$_ != 4 } @$r[3 .. $#$r]),
        "range $r->[0]-$r->[1]: replicas listed after it, if any, alike");
}
is($covered, 16384, 'every slot served');

my %table = ('somekey' => 11058, 'foo' => 12182,
    'room:{ABCD}:pub' => 15162, 'foo{}{bar}' => 8363,
    'foo{{bar}}zap' => 4015, 'a}b{c}' => 7365, '{a}}' => 15495,
    'foo}bar{' => 11073, '' => 0, 'room:{X}:pub' => 7165,
    'server:{host-1}:alive' => 9686);
is_deeply({ map { $_ => $c->slot_of($_) } keys %table }, \%table,
    'CLUSTER KEYSLOT agrees with the unit tests\' table');

# --- sharded Pub/Sub through the owner -------------------------------------

my $chan = 'room:{X}:pub';
my $seq = 'room:{X}:seq';
my $hist = 'room:{X}:history';
my $slot = $c->slot_of($chan);
is($c->slot_of($seq), $slot, 'the room\'s keys share its channel\'s slot');

my $owner = $c->owner_of($chan);
ok($owner, "slot $slot served by $owner->{port}");
my ($other) = grep { $_ != $owner } @masters;

like($c->command($other, 'SPUBLISH', $chan, 'x'),
    qr/^MOVED $slot 127\.0\.0\.1:$owner->{port}$/,
    'SPUBLISH on another master: MOVED to the owner');
my $wrong = Rooms::Test::Cluster::Conn->new($other->{port});
like($wrong->call('SSUBSCRIBE', $chan),
    qr/^MOVED $slot 127\.0\.0\.1:$owner->{port}$/,
    'SSUBSCRIBE on another master: MOVED to the owner');

my $sub = subscriber($owner, $chan);
delivered($owner, $sub, 'hello', 'on the owner');

# --- what the cluster design relies on (docs/redis.md) ----------------------

my $ychan = 'room:{Y}:pub';
my $yseq = 'room:{Y}:seq';
my $yslot = $c->slot_of($ychan);
my $yowner = $c->owner_of($ychan);
my ($ydest) = grep { $_ != $yowner } @masters;
my $spub = "redis.call('INCR', KEYS[1]) "
    . "return redis.call('SPUBLISH', ARGV[1], ARGV[2])";

is($c->command($yowner, 'EVAL', $spub, 1, $yseq, $ychan, 'a'), 0,
    'a script SPUBLISHes on its room\'s channel');
like($c->command($yowner, 'EVAL',
    "return redis.call('SPUBLISH', ARGV[1], ARGV[2])", 1, $yseq, $chan, 'a'),
    qr/non local key/, 'a script\'s SPUBLISH to another slot is refused');
like($c->command($yowner, 'EVAL', 'return 1', 2, $yseq, 'rooms'),
    qr/^CROSSSLOT/, 'a script with keys in two slots is refused');

my $ysub = subscriber($yowner, $ychan);
is_deeply($ysub->call('SSUBSCRIBE', $ychan), [ 'ssubscribe', $ychan, 1 ],
    'SSUBSCRIBE again: confirmed, same count (a barrier)');

$c->migrate_start($yslot, $yowner, $ydest);
$c->migrate_keys($yslot, $yowner, $ydest, $yseq);
like($c->command($yowner, 'EVAL', $spub, 1, $yseq, $ychan, 'b'),
    qr/^ASK $yslot 127\.0\.0\.1:$ydest->{port}$/,
    'migrating: the room\'s script gets ASK once its keys moved');
my $asking = Rooms::Test::Cluster::Conn->new($ydest->{port});
$asking->call('ASKING');
is($asking->call('EVAL', $spub, 1, $yseq, $ychan, 'b'), 0,
    'run with ASKING on the importing node, its SPUBLISH reaches nobody');
is($ysub->reply(0.5), undef, 'nor the subscriber on the source');
$c->migrate_end($yslot, $yowner, $ydest);
is_deeply($ysub->reply(5), [ 'sunsubscribe', $ychan, 0 ],
    'the migration ended: sunsubscribe');
is($c->command($ydest, 'GET', $yseq), 2, 'both INCRs are on the new owner');

# --- a busy room's slot moved to another master ----------------------------

$c->command($owner, 'RPUSH', $hist, qw(m1 m2 m3));
my $writer = writer($owner->{port}, $seq);
ok(wait_until(sub { int_of($c->command($owner, 'GET', $seq)) >= 50 },
    timeout => 5), 'traffic on the room\'s slot');

my $to = $other;
my $keys = $c->move_slot($slot, $owner, $to);
is($keys, 2, 'the slot\'s two keys migrated');
is($c->owner_of($chan), $to, "slot $slot now served by $to->{port}");
like($c->command($owner, 'GET', $seq),
    qr/^MOVED $slot 127\.0\.0\.1:$to->{port}$/,
    'the old owner answers MOVED to the new one');
is_deeply($c->command($to, 'LRANGE', $hist, 0, -1), [qw(m1 m2 m3)],
    'the history followed its slot');

my $at_move = $c->command($to, 'GET', $seq);
ok(wait_until(
    sub { int_of($c->command($to, 'GET', $seq)) >= $at_move + 50 },
    timeout => 5), 'the writer goes on against the new owner');
my $w = stop_writer($writer);
ok($w->{ok}, 'every INCR answered n+1: none lost, none repeated')
    or diag($w->{line});
cmp_ok($w->{moved}, '>=', 1, 'the writer followed MOVED');
is($c->command($to, 'GET', $seq), $w->{n}, 'the new owner has every INCR');
diag("writer: $w->{n} INCRs, $w->{moved} MOVED, $w->{ask} ASK");

is_deeply($sub->reply(5), [ 'sunsubscribe', $chan, 0 ],
    'the old owner unsubscribed its subscriber (sunsubscribe)');

# resubscribing on the new owner
my $sub2 = subscriber($to, $chan);
delivered($to, $sub2, 'after move', 'on the new owner');

# --- the owner killed, its replica promoted --------------------------------

is($c->command($to, 'WAIT', 1, 2000), 1, 'the replica has the room\'s keys');
my ($replica) = $c->replicas_of($to);
my $killed_at = time;
my $promoted = $c->kill_master($to);
is($promoted, $replica, "replica $replica->{port} promoted");
diag(sprintf 'failover in %.1f s', time - $killed_at);
is($c->owner_of($chan), $promoted, 'the room\'s slot is served by it');
is($c->command($promoted, 'GET', $seq), $w->{n},
    'the room\'s seq survived the failover');
is($sub2->reply(2), undef, 'the subscription died with its node');
my $sub3 = subscriber($promoted, $chan);
delivered($promoted, $sub3, 'after failover', 'on the promoted node');

# --- teardown --------------------------------------------------------------

my @pids = map { $_->{pid} } $c->live;
$c->stop;
ok(!(grep { kill 0, $_ } @pids), 'every node stopped');

done_testing();


# A connection SSUBSCRIBEd to the channel on the node.
sub subscriber {
    my ($node, $channel) = @_;

    my $s = Rooms::Test::Cluster::Conn->new($node->{port});
    my $r = $s && $s->call('SSUBSCRIBE', $channel);
    is_deeply($r, [ 'ssubscribe', $channel, 1 ],
        "SSUBSCRIBE on $node->{port} confirmed");

    return $s;
}


# SPUBLISH of text on the node reaches one subscriber, sub, as smessage.
sub delivered {
    my ($node, $sub, $text, $where) = @_;

    is($c->command($node, 'SPUBLISH', $chan, $text), 1,
        "SPUBLISH $where: one receiver");
    is_deeply($sub->reply(2), [ 'smessage', $chan, $text ],
        "SPUBLISH $where: the subscriber gets smessage");
}


# A child that INCRs the key as fast as its round trips allow, following
# MOVED (the new owner from then on) and ASK (ASKING, then the command
# on the target, once), and checks that every INCR answers one more than
# the one before.  Ends on USR1 or after 20 s and reports "n moved ask
# ok|bad ..." on a pipe.
sub writer {
    my ($port, $key) = @_;

    pipe(my $r, my $wr) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $r;
        my $stop = 0;
        local $SIG{USR1} = sub { $stop = 1 };
        my ($n, $moved, $ask, $bad) = (0, 0, 0, '');
        my %conns;
        my $conn = sub { $conns{ $_[0] } //=
            Rooms::Test::Cluster::Conn->new($_[0]) };
        my $deadline = time + 20;
        while (!$stop && time < $deadline && !$bad) {
            my $v = $conn->($port)->call('INCR', $key);
            if (is_error($v) && "$v" =~ /^MOVED \d+ [\d.]+:(\d+)$/) {
                ($port, $moved) = ($1, $moved + 1);
                next;
            }
            if (is_error($v) && "$v" =~ /^ASK \d+ [\d.]+:(\d+)$/) {
                my $target = $conn->($1);
                $target->call('ASKING');
                $v = $target->call('INCR', $key);
                $ask++;
            }
            if (is_error($v) || $v != $n + 1) {
                $bad = "INCR $n -> $v";
                last;
            }
            $n++;
            sleep 0.001;
        }
        syswrite($wr, "$n $moved $ask " . ($bad ? "bad $bad" : 'ok') . "\n");
        _exit(0);
    }
    close $wr;
    $WRITER = $pid;

    return { pid => $pid, fh => $r };
}


sub stop_writer {
    my ($w) = @_;

    kill 'USR1', $w->{pid};
    my $line = '';
    my $sel = IO::Select->new($w->{fh});
    while ($line !~ /\n/ && $sel->can_read(5)) {
        last unless sysread($w->{fh}, $line, 512, length $line);
    }
    waitpid($w->{pid}, 0);
    $WRITER = undef;

    my ($n, $moved, $ask, $ok) = split ' ', $line;
    return { n => $n // -1, moved => $moved // 0, ask => $ask // 0,
        ok => ($ok // '') eq 'ok', line => $line };
}
