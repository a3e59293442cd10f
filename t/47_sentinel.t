#!/usr/bin/perl

# Sentinel-managed Redis (SPEC 4, docs/redis.md "Sentinel"): a master,
# two replicas, every data node with min-replicas-to-write 1 (the
# settings docs/redis.md requires), and three sentinels (quorum 2)
# started here from Debian's redis-server and redis-sentinel; two stacks
# whose sidecars know only the sentinels (their redis URL points
# nowhere); two publishers (one per stack, with refs) and two listeners
# in one room under steady traffic.  Then (a) a forced SENTINEL FAILOVER,
# (b) the new master killed (SIGKILL) and one of its replicas promoted,
# (c) the killed node restarted as a master with no data (a demoted old
# master coming back).  Checks:
# - no client connection is dropped;
# - every message gets exactly one answer: its copy back to its sender
#   (acknowledged) or error `unavailable`, never both, never neither;
# - no acknowledged message is lost (SPEC 2.4): the final master has
#   every one, once; the failovers may only answer `unavailable`;
# - every client receives every message the final master kept, and
#   between two `reset`s no id and no message twice, ids increasing; a
#   client that saw a message the final master does not have (one
#   answered `unavailable` after all) gets a reset after it, at most one
#   per failover, and a client that saw none gets no reset;
# - afterwards presence (`state`) and GET /rooms list the four players;
# - the sidecars never connect to the restarted old master, and a sidecar
#   whose (fake) sentinel names a replica refuses it in its handshake;
# - a sidecar whose (fake) sentinel announces a failover it leads holds
#   writes (`unavailable`) until it is aborted, then syncs what was
#   refused meanwhile (a join) and carries on.
# Reports the failover times as the clients see them: the longest gap
# between two deliveries around each failover.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(wait_until http_get redis_reply free_port);

plan(skip_all => 'redis-sentinel not found in PATH')
    unless defined Rooms::Test::which('redis-sentinel');

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $topo = $ta->start_sentinels(down_after => 1000, failover_timeout => 3000,
    replicas => 2,
    redis_args => [ '--min-replicas-to-write', 1,
                    '--min-replicas-max-lag', 10 ]);
my $name = $topo->{master};
my @sentinels = @{ $topo->{sentinels} };
my @nodes = @{ $topo->{nodes} };
my $node0 = $nodes[0];
my %node_name = map { $nodes[$_] => "node$_" } 0 .. $#nodes;

my @args = ('--redis-sentinels', join(',', map { "127.0.0.1:$_" } @sentinels),
    '--redis-sentinel-master', $name, '--redis-timeout', 1000,
    '--redis-backoff-min-ms', 50, '--redis-backoff-max-ms', 200,
    # every message of the test stays in history: what the final master
    # has is known
    '--history-length', 5000);
# The URL's host is not used: the sentinels name the master.
$ta->start_sidecar('redis://127.0.0.1:1', args => \@args);
$tb->start_sidecar('redis://127.0.0.1:1', args => \@args);
$ta->start_nginx;
$tb->start_nginx;

my %c = (
    pa => $ta->connect('SENT', 'pa'),
    pb => $tb->connect('SENT', 'pb'),
    la => $ta->connect('SENT', 'la'),
    lb => $tb->connect('SENT', 'lb'),
);
for my $who (sort keys %c) {
    ref $c{$who} or BAIL_OUT("$who: upgrade refused: "
        . "$Rooms::Test::Client::LAST");
}
my %welcome = map { $_ => $c{$_}->recv_json(5) } keys %c;
ok(!grep({ ($welcome{$_}{type} // '') ne 'welcome' } keys %c),
    'four clients joined through sentinel-discovered Redis');

# Everything each client received: [time, envelope].
my %got = map { $_ => [] } keys %c;
my %sent;      # ref -> [publisher, time]
my $serial = 0;
my $sending = 1;
my %next_send = (pa => 0, pb => 0);

# Sends due messages (every 25 ms per publisher, under the rate limit)
# and reads what came, for `secs` or until `done` says so.
sub pump {
    my (%o) = @_;
    my $until = time + $o{secs};
    while (time < $until) {
        my $now = time;
        if ($sending) {
            for my $p (qw(pa pb)) {
                next if $now < $next_send{$p};
                my $ref = sprintf '%s-%05d', $p, ++$serial;
                $c{$p}->send_json({ type => 'chat', ref => $ref,
                    data => { text => $ref } });
                $sent{$ref} = [ $p, $now ];
                $next_send{$p} = $now + 0.025;
            }
        }
        for my $who (sort keys %c) {
            while (my $m = $c{$who}->recv_json(0.002)) {
                push @{ $got{$who} }, [ time, $m ];
            }
        }
        return 1 if $o{done} && $o{done}->();
    }
    return 0;
}

# The time of the newest chat a client received.
sub last_chat {
    my ($who) = @_;
    for my $e (reverse @{ $got{$who} }) {
        return $e->[0] if $e->[1]{type} eq 'chat';
    }
    return 0;
}

# Waits (pumping) until every client received a chat sent after `t`.
sub flowing_after {
    my ($t, $secs) = @_;
    return pump(secs => $secs, done => sub {
        for my $who (keys %c) {
            my $ok = grep { $_->[1]{type} eq 'chat' && $_->[0] > $t
                && ($sent{ $_->[1]{ref} // '' } // [0, 0])->[1] > $t }
                @{ $got{$who} };
            return 0 unless $ok;
        }
        return 1;
    });
}

# The longest gap between two chat deliveries to `who` in [from, to].
sub longest_gap {
    my ($who, $from, $to) = @_;
    my ($prev, $gap, $at) = (undef, 0, 0);
    for my $e (@{ $got{$who} }) {
        next unless $e->[1]{type} eq 'chat';
        if ($e->[0] < $from) {
            $prev = $e->[0];  # the last delivery before the event
            next;
        }
        last if $e->[0] > $to;
        if (defined $prev && $e->[0] - $prev > $gap) {
            ($gap, $at) = ($e->[0] - $prev, $prev - $from);
        }
        $prev = $e->[0];
    }
    return wantarray ? ($gap, $at) : $gap;
}

sub master_port {
    return Rooms::Test::sentinel_master($sentinels[0], $name) // 0;
}

sub a_log_offsets {
    return map { -s $_->sidecar_log } $ta, $tb;
}

pump(secs => 1);
ok(last_chat('la') && last_chat('lb'), 'traffic flows before the failovers');

# Whether `port` is a replica in sync with `master`.
sub synced_replica_of {
    my ($port, $master) = @_;
    my $info = redis_reply($port, 'INFO', 'replication') // '';
    return $info =~ /role:slave/ && $info =~ /master_port:$master\b/
        && $info =~ /master_link_status:up/;
}

# (a) forced failover: node1 or node2 becomes the master.
my $ta0 = time;
is(redis_reply($sentinels[0], 'SENTINEL', 'FAILOVER', $name), 'OK',
    'SENTINEL FAILOVER accepted');
my $first = 0;
ok(pump(secs => 20, done => sub {
    $first = master_port();
    return $first && $first != $node0;
}), 'the sentinels promoted a replica');
ok(flowing_after(time, 20), 'traffic flows again after the forced failover');
# The sentinels reconfigure the old master as a replica some seconds
# later; the kill waits for that (two replicas, one to promote).
my $demoted = pump(secs => 30, done => sub {
    return !grep { $_ != $first && !synced_replica_of($_, $first) } @nodes;
});
ok($demoted, 'the old master node0 and the other node are its replicas');
diag(sprintf 'forced failover: %s promoted; node0 a synced replica %.1fs '
    . 'after the FAILOVER', $node_name{$first} // '?', time - $ta0);
pump(secs => 1);
my $ta1 = time;

# Each sidecar held its writes from the leader's announcement (the
# sentinel that got the FAILOVER) until the switch; how long before the
# leader sent the replica REPLICAOF NO ONE (its +failover-state-wait-
# promotion, logged right after) the hold began: the margin that keeps
# every acknowledged write on the promoted replica.
sub minute_ms {  # the log line's mm:ss.mmm, in ms (time zones differ)
    my ($line) = @_;
    return $line =~ /\d\d:(\d\d):(\d\d)\.(\d{3})/
        ? ($1 * 60 + $2) * 1000 + $3 : undef;
}
my ($sent_noone) = grep { /\+failover-state-wait-promotion/ }
    do { open my $fh, '<', $ta->dir . '/sentinel0.log' or die; <$fh> };
for my $t ($ta, $tb) {
    my ($held) = grep { /leads a failover of "\Q$name\E": holding writes/ }
        do { open my $fh, '<', $t->sidecar_log or die; <$fh> };
    ok($held, 'stack ' . $t->name . ': writes held from the leader\'s '
        . 'announcement');
    next unless $held && $sent_noone;
    my $margin = (minute_ms($sent_noone) - minute_ms($held)) % 3600000;
    diag(sprintf 'stack %s: writes held %d ms before REPLICAOF NO ONE',
        $t->name, $margin > 1800000 ? $margin - 3600000 : $margin);
}

# (b) the new master killed: one of its replicas is promoted.
my $tb0 = time;
$ta->kill_proc($node_name{$first});
diag(sprintf '%s killed at %.3f', $node_name{$first}, $tb0);
my $final = 0;
ok(pump(secs => 30, done => sub {
    $final = master_port();
    return $final && $final != $first;
}), 'the sentinels promoted another node after the master was killed');
ok(flowing_after(time, 20), 'traffic flows again after the kill');
pump(secs => 1);
my $tb1 = time;
my $kill_promoted = $final;
diag(sprintf 'kill: %s promoted', $node_name{$final} // '?');

# (c) the killed node comes back as a master with no data: the sentinels
# make it a replica in time, but nobody may write to it meanwhile.
my @log_from = a_log_offsets();
$ta->start_redis_node($node_name{$first}, port => $first,
    args => [ '--min-replicas-to-write', 1, '--min-replicas-max-lag', 10 ]);
pump(secs => 2);
my $role = redis_reply($first, 'ROLE');
diag("restarted $node_name{$first} says " . (ref $role ? $role->[0] : '?'));

# Drain: stop sending, wait for every answer.
$sending = 0;
# A message's answers, on its sender: errors about it, and whether its
# copy came (a copy sent again after a reset, from history, is not a
# second answer).
my $answered = sub {
    my %ans;
    for my $p (qw(pa pb)) {
        for my $e (@{ $got{$p} }) {
            my $m = $e->[1];
            my $ref = $m->{type} eq 'error' ? $m->{data}{ref} : $m->{ref};
            next unless defined $ref && $sent{$ref} && $sent{$ref}[0] eq $p;
            if ($m->{type} eq 'error') {
                push @{ $ans{$ref}{errors} }, $m->{data}{code};
            } elsif ($m->{type} eq 'chat') {
                $ans{$ref}{copy} = 1;
            }
        }
    }
    return \%ans;
};
pump(secs => 10, done => sub { keys %{ $answered->() } == keys %sent });

# The master the sentinels name once it takes writes again (a replica in
# sync with it: min-replicas-to-write).  Sentinel may have failed over
# once more meanwhile (seen once: a sentinel marked the just-promoted
# master down 1 s after the switch, on this loaded machine, and the
# sentinels moved on to the third node): its history is the final one.
my $settled = wait_until(sub {
    my $m = master_port() or return 0;
    return 0 unless (redis_reply($m, 'INFO', 'replication') // '')
        =~ /min_slaves_good_slaves:[1-9]/;
    $final = $m;
    return 1;
}, timeout => 30, interval => 0.1);
ok($settled, 'the final master takes writes (it has a replica in sync)');
diag("another failover after the kill: $node_name{$final} is the master")
    if $final != $kill_promoted;

# --- answers ---------------------------------------------------------------
my $ans = $answered->();
my @unanswered = grep { !$ans->{$_} } sort keys %sent;
my @both = grep { $ans->{$_}{copy} && $ans->{$_}{errors} } sort keys %$ans;
my @errors_twice = grep { @{ $ans->{$_}{errors} || [] } > 1 } sort keys %$ans;
my @acked = grep { $ans->{$_}{copy} } sort keys %$ans;
my @refused = grep { !$ans->{$_}{copy} } sort keys %$ans;
is(scalar @unanswered, 0, 'every message answered')
    or diag("unanswered: @unanswered[0 .. ($#unanswered > 9 ? 9 : $#unanswered)]");
is(scalar @both, 0, 'no message both delivered and refused')
    or diag("both: @both");
is(scalar @errors_twice, 0, 'no message refused twice')
    or diag("twice: @errors_twice");
ok(!grep({ grep { $_ ne 'unavailable' } @{ $ans->{$_}{errors} } } @refused),
    'refusals are `unavailable`');
diag(sprintf '%d messages: %d acknowledged, %d unavailable',
    scalar keys %sent, scalar @acked, scalar @refused);

# --- what the final master kept ----------------------------------------------
# With min-replicas-to-write 1 an old master refuses writes once its
# last replica has left it, and the sidecar answers those `unavailable`
# (docs/redis.md "Sentinel"): the final master must have every
# acknowledged message, and everything it has must have reached every
# client.
my $hist = redis_reply($final, 'LRANGE', 'room:{SENT}:history', 0, -1) || [];
my %kept;
$kept{$_}++ for map { /"ref":"([^"]+)"/ ? $1 : () } @$hist;
is(scalar(grep { $kept{$_} > 1 } keys %kept), 0,
    'no message published twice');
my @lost = grep { !$kept{$_} } @acked;
my @lost_a = grep { $sent{$_}[1] >= $ta0 && $sent{$_}[1] < $tb0 } @lost;
my @lost_b = grep { $sent{$_}[1] >= $tb0 } @lost;
is(scalar @lost, 0, 'no acknowledged message lost')
    or diag("lost: @lost[0 .. ($#lost > 9 ? 9 : $#lost)]");
my @unavail_a = grep { $sent{$_}[1] >= $ta0 && $sent{$_}[1] <= $ta1 } @refused;
my @unavail_b = grep { $sent{$_}[1] >= $tb0 - 1 && $sent{$_}[1] <= $tb1 }
    @refused;
diag(sprintf 'answered unavailable: %d around the forced failover, %d '
    . 'around the kill, %d in all', scalar @unavail_a, scalar @unavail_b,
    scalar @refused);
diag(sprintf '%d acknowledged messages kept by the final master; lost: %d '
    . 'in the forced failover (sent %s after the FAILOVER), %d in the kill',
    scalar keys %kept, scalar @lost_a,
    @lost_a ? sprintf('%.2f-%.2fs', $sent{ $lost_a[0] }[1] - $ta0,
        $sent{ $lost_a[-1] }[1] - $ta0) : '-', scalar @lost_b);

# --- every client's view -----------------------------------------------------
# what a client may have seen live and the final master does not have
my %is_lost = map { $_ => 1 } grep { !$kept{$_} } keys %sent;
for my $who (sort keys %c) {
    my (@bad, %seen_ever, $resets, $lost_unreset, $saw_unkept);
    my %seen;
    my $last = 0;
    for my $e (@{ $got{$who} }) {
        my $m = $e->[1];
        if ($m->{type} eq 'reset') {
            $resets++;
            $lost_unreset = undef;
            %seen = ();
            $last = 0;
            next;
        }
        next unless $m->{type} eq 'chat' && defined $m->{ref};
        push @bad, "id $m->{id} after $last" if $m->{id} <= $last;
        push @bad, "$m->{ref} twice" if $seen{ $m->{ref} }++;
        push @bad, "$m->{ref} never sent" unless $sent{ $m->{ref} };
        $last = $m->{id};
        $seen_ever{ $m->{ref} } = 1;
        $lost_unreset //= $m->{ref} if $is_lost{ $m->{ref} };
        $saw_unkept ||= $is_lost{ $m->{ref} };
    }
    my @missing = grep { !$seen_ever{$_} } sort keys %kept;
    ok(!@bad, "$who: ids increasing, nothing twice between resets")
        or diag(join ', ', @bad[0 .. ($#bad > 9 ? 9 : $#bad)]);
    is(scalar @missing, 0, "$who: every message the master kept received")
        or diag("missing: @missing[0 .. ($#missing > 9 ? 9 : $#missing)]");
    # a reset only where needed: after a message the final master lacks
    if ($saw_unkept) {
        cmp_ok($resets // 0, '<=', 2, "$who: at most one reset per failover");
    } else {
        is($resets // 0, 0, "$who: no reset (it saw nothing the final "
            . 'master lacks)');
    }
    ok(!defined $lost_unreset,
        "$who: a reset followed every message it saw that was not kept")
        or diag("saw $lost_unreset, no reset after it");
    ok(!$c{$who}->closed, "$who: still connected");
    diag(sprintf '%s: %d resets; longest delivery gap %.2fs (from %+.2fs) '
        . 'in the forced failover, %.2fs (from %+.2fs) in the kill',
        $who, $resets // 0, longest_gap($who, $ta0, $ta1),
        longest_gap($who, $tb0, $tb1));
}

# --- (c) the restarted old master is not used -----------------------------------
for my $i (0, 1) {
    my $t = ($ta, $tb)[$i];
    open my $fh, '<', $t->sidecar_log or die;
    seek $fh, $log_from[$i], 0;
    my @used = grep { /connected to 127\.0\.0\.1:$first\b/ } <$fh>;
    is(scalar @used, 0, 'stack ' . $t->name
        . ': no connection to the restarted old master');
}

# --- a sentinel that names a replica: the handshake refuses it -------------
# A stale or lying sentinel (here a fake one, answering every query with
# the address of a replica of node0) must not make a sidecar write to a
# replica: its handshake finds role:slave, leaves, and asks again.
my $tc = Rooms::Test->new(name => 'c');
my $replica = $tc->start_redis_node('replica', replicaof => $final);
my $fake = free_port();
$tc->spawn('fake_sentinel', sub { Rooms::Test::port_open($fake) }, $^X,
    '-e', <<'PL', $fake, $replica);
use IO::Socket::INET; use IO::Select;
my ($port, $target) = @ARGV;
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 16, ReuseAddr => 1) or die "listen: $!";
my $sel = IO::Select->new($l);
my $answer = "*2\r\n\$9\r\n127.0.0.1\r\n\$" . length($target)
    . "\r\n$target\r\n";
while (1) {
    for my $h ($sel->can_read) {
        if ($h == $l) { $sel->add($l->accept); next; }
        my $n = sysread($h, my $buf, 65536);
        if (!$n) { $sel->remove($h); close $h; next; }
        my $q = () = $buf =~ /get-master-addr-by-name/gi;
        syswrite($h, $answer x $q) if $q;
    }
}
PL
$tc->start_sidecar('redis://127.0.0.1:1', args => [
    '--redis-sentinels', "127.0.0.1:$fake", '--redis-backoff-max-ms', 200 ]);
my $refused = wait_until(sub {
    open my $fh, '<', $tc->sidecar_log or return 0;
    local $/;
    my $log = <$fh>;
    return $log =~ /127\.0\.0\.1:$replica is not a master/;
}, timeout => 10, interval => 0.05);
ok($refused, 'a sidecar told a replica is the master refuses it');
open my $clog, '<', $tc->sidecar_log or die;
is(scalar(grep { /connected to 127\.0\.0\.1:$replica\b/ } <$clog>), 0,
    'and never uses it');
close $clog;

# --- presence and GET /rooms afterwards ----------------------------------------
my $probe = $ta->connect('SENT', 'probe');
ok(ref $probe, 'a new client joins after the failovers');
my $state = $probe->wait_for(type => 'state', timeout => 5, match => sub {
    @{ $_[0]{data}{players} } == 5 });
is_deeply([ sort map { $_->{name} } @{ $state->{data}{players} || [] } ],
    [qw(la lb pa pb probe)], 'state lists the four players and the probe');
my (undef, undef, $body) = http_get($tb->port, '/rooms');
is($body, '[{"code":"SENT","count":5}]', 'GET /rooms counts five');

$_->close for values %c, $probe;

# --- a failover's hold, and what it refused, done when it ends ---------------
# A fake sentinel names the final master and announces, when told (a
# file appears), its `+elected-leader`, then `-failover-abort-not-elected`:
# meanwhile the sidecar's command connection stays up but takes no write
# (`unavailable`), a join waits, and once the hold ends the join is
# synced and traffic flows (a room whose sync was refused during a hold
# stayed deaf, caught by a run of this test's kill).
my $td = Rooms::Test->new(name => 'd');
my $leader = free_port();
my $cue = $td->dir . '/cue';
$td->spawn('leading_sentinel', sub { Rooms::Test::port_open($leader) }, $^X,
    '-e', <<'PL', $leader, $final, $cue);
use IO::Socket::INET; use IO::Select;
my ($port, $master, $cue) = @ARGV;
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 16, ReuseAddr => 1) or die "listen: $!";
my $sel = IO::Select->new($l);
sub bulk { '$' . length($_[0]) . "\r\n$_[0]\r\n" }
my (@subs, %said);
my $about = "master mymaster 127.0.0.1 $master";
while (1) {
    for my $h ($sel->can_read(0.02)) {
        if ($h == $l) { $sel->add($l->accept); next; }
        my $n = sysread($h, my $buf, 65536);
        if (!$n) { $sel->remove($h); @subs = grep { $_ != $h } @subs; next; }
        my $q = () = $buf =~ /get-master-addr-by-name/gi;
        syswrite($h, ("*2\r\n" . bulk('127.0.0.1') . bulk($master)) x $q)
            if $q;
        if ($buf =~ /SUBSCRIBE/i) {
            my @ch = $buf =~ /\r\n([+-][a-z-]+)\r\n/g;
            my $i = 0;
            syswrite($h, join '', map { "*3\r\n" . bulk('subscribe')
                . bulk($_) . ':' . ++$i . "\r\n" } @ch);
            push @subs, $h;
        }
    }
    for my $event ('+elected-leader', '-failover-abort-not-elected') {
        next if $said{$event} || !-e "$cue$event";
        $said{$event} = 1;
        syswrite($_, "*3\r\n" . bulk('message') . bulk($event)
            . bulk($about)) for @subs;
    }
}
PL
$td->start_sidecar('redis://127.0.0.1:1', args => [
    '--redis-sentinels', "127.0.0.1:$leader", '--redis-backoff-max-ms', 200,
    '--history-length', 5000 ]);
$td->start_nginx;
my $logged = sub {
    my ($re) = @_;
    return wait_until(sub {
        open my $fh, '<', $td->sidecar_log or return 0;
        local $/;
        my $log = <$fh>;
        return $log =~ $re;
    }, timeout => 10, interval => 0.05);
};
my $h1 = $td->connect('HOLD', 'h1');
ok(ref $h1 && $h1->wait_for(type => 'welcome', timeout => 5),
    'hold: a client joins through the leading sentinel');
$h1->send_json({ type => 'chat', ref => 'h-1', data => { text => 'h-1' } });
ok($h1->wait_for(type => 'chat', timeout => 5,
    match => sub { ($_[0]{ref} // '') eq 'h-1' }), 'hold: published before');
open my $cue_fh, '>', "$cue+elected-leader" or die;
close $cue_fh;
ok($logged->(qr/leads a failover of "mymaster": holding writes/),
    'hold: the sidecar holds writes on +elected-leader');
$h1->send_json({ type => 'chat', ref => 'h-2', data => { text => 'h-2' } });
my $refusal = $h1->wait_for(type => 'error', timeout => 5);
is_deeply([ @{ $refusal->{data} || {} }{qw(code ref)} ], [ 'unavailable', 'h-2' ],
    'hold: a message sent meanwhile is answered unavailable');
my $h2 = $td->connect('HOLD', 'h2');
ok(ref $h2, 'hold: a client joins meanwhile');
open $cue_fh, '>', "$cue-failover-abort-not-elected" or die;
close $cue_fh;
ok($logged->(qr/writes go again \(failover aborted\)/),
    'hold: it ends when the failover is aborted');
ok($h2->wait_for(type => 'chat', timeout => 10,
    match => sub { ($_[0]{ref} // '') eq 'h-1' }),
    'hold: the join made meanwhile gets its backfill');
$h1->send_json({ type => 'chat', ref => 'h-3', data => { text => 'h-3' } });
ok($h2->wait_for(type => 'chat', timeout => 5,
    match => sub { ($_[0]{ref} // '') eq 'h-3' }),
    'hold: and live traffic after it');
$_->close for $h1, $h2;

$ta->finish;
