#!/usr/bin/perl

# The sidecar on a Redis Cluster (SPEC 4 "Beyond one Redis", docs/redis.md
# "Redis Cluster"; issue 11 item 5): a cluster of 3 masters with a
# replica each (Rooms::Test::Cluster), two stacks on it started with
# `--redis-cluster` and a seed node each (not the same one).  The
# guarantees of SPEC 2.4 must hold as on one Redis:
#
# 1. chat: rooms on each of the three masters, members on both stacks;
#    a chat from either stack reaches every member of its room exactly
#    once and no other room; `state` lists the players of both stacks;
#    GET /rooms (both stacks) lists each room with its global count,
#    and forgets it once everyone left;
# 2. gap-free joins: a publisher on stack b, 25 joins on stack a while it
#    publishes every 4 ms (check_join: exact backfill, then live; no gap,
#    no duplicate, ids increasing);
# 3. resharding: a busy room (two publishers with refs, one per stack,
#    and two listeners) whose slot moves to another master step by step
#    (IMPORTING/MIGRATING, 0.2 s, keys migrated, a join on stack a, 0.3 s
#    with the keys on the target, SETSLOT NODE, a join on stack b);
# 4. failover: a busy room on stack a's seed master, which is killed
#    (SIGKILL) and replaced by its replica; a busy room on another master
#    meanwhile: no message refused, no delivery gap of a second;
# 5. after each of them, chat in the rooms of 1 on both stacks again;
# 6. a killed sidecar's players reaped by the other within the bound of
#    t/12 (heartbeat TTL + 2 intervals + 0.5 s), GET /rooms following.
#
# Checked in 3 and 4 (each in a fresh room with a history longer than
# the test's traffic, so Redis keeps every message published):
# - every message answered exactly once: its copy back to the sender
#   (acknowledged) or error `unavailable`, never both, never neither;
# - the room's history, read on its owner after the event, has every
#   acknowledged message once, none refused, each sender's in order;
# - every client (also the joiners) received every message of that
#   history, and between two `reset`s: ids strictly increasing (every
#   envelope, `state` too), no message twice, each sender's in order;
#   nobody was disconnected, and every `state` lists every player;
# - the live stream goes on after the event on both stacks;
# - resharding: no `reset` (docs/redis.md documents none for a move) and
#   nothing seen that the history lacks;
# - failover: an acknowledged message may be missing afterwards only if
#   Redis's asynchronous replication lost it (acknowledged in the last
#   second before the kill; on loopback none is expected): reported; a
#   client that saw a message the new master lacks must get a `reset`
#   after it (docs/redis.md "Failover"), at most one.
# Reports (diag): the longest delivery gap of each client around the move
# and the kill, `unavailable` counts, resets, lost messages, detection
# time of the dead sidecar.

use strict;
use warnings;

use IO::Select;
use JSON::PP ();
use List::Util qw(max min);
use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(wait_until http_get publish_paced);
use Rooms::Test::Cluster qw(is_error);

my $INTERVAL = 500;     # heartbeat
my $TTL = 5000;         # longer than a failover: no server looks dead
my $HISTORY = 5000;     # longer than any room's traffic here
my $RATE = 40;          # chats/s of each publisher in 3 and 4
my $JOINS = 25;
my $PUBLISH = 1500;     # chats of the joins' publisher, one every 4 ms

my $JSON = JSON::PP->new->utf8->canonical;

# the joins' publisher (a child), stopped by PID also when the test dies
my $CHILD;
END {
    if ($CHILD) {
        kill 'KILL', $CHILD;
        waitpid($CHILD, 0);
    }
}

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');

my $t0 = time;
# the other masters go on serving while one fails over (by default a
# cluster with a slot uncovered refuses every command: CLUSTERDOWN)
my $c = Rooms::Test::Cluster->start(masters => 3, replicas => 1,
    redis_args => [ '--cluster-require-full-coverage', 'no' ]);
my @masters = $c->masters;
is(scalar @masters, 3, 'three masters');
is(scalar(() = $c->replicas_of($_)), 1, "master $_->{port} has a replica")
    for @masters;
diag(sprintf 'cluster up in %.1f s', time - $t0);

my @args = ('--redis-cluster=on', '--redis-timeout', 1000,
    '--redis-backoff-min-ms', 50, '--redis-backoff-max-ms', 200,
    '--history-length', $HISTORY, '--rate-limit', 0,
    '--heartbeat-interval-ms', $INTERVAL, '--heartbeat-ttl-ms', $TTL);
# each stack knows one master, not the same
my %seed = (a => $masters[0], b => $masters[1]);
for my $t ($ta, $tb) {
    $t->start_sidecar("redis://127.0.0.1:$seed{ $t->name }{port}",
        args => \@args);
    $t->start_nginx(server => "        location = /metrics {\n"
        . "            rooms_metrics;\n"
        . "        }\n");
}

# A stack's /metrics sample (labels included in the name), or undef.
sub metric {
    my ($t, $name) = @_;
    my ($status, undef, $body) = http_get($t->port, '/metrics');
    return undef unless defined $status && $status == 200;
    for (split /\n/, $body) {
        return $1 if /^\Q$name\E (\S+)$/;
    }
    return undef;
}

# Both stacks see every master of the map connected.
sub masters_connected {
    my ($what) = @_;
    for my $t ($ta, $tb) {
        ok(wait_until(sub {
            (metric($t, 'rooms_redis_cluster_masters{state="connected"}')
                // 0) == 3
                && (metric($t, 'rooms_redis_cluster_masters{state="known"}')
                // 0) == 3;
        }, timeout => 10), "$what: stack " . $t->name . ': /metrics shows '
            . '3 masters, 3 connected');
    }
}
masters_connected('start');

# --- helpers -----------------------------------------------------------------

# A room code (PREFIX0, PREFIX1, ...) whose slot the node serves.
sub room_on {
    my ($node, $prefix) = @_;
    for my $i (0 .. 499) {
        my $o = $c->owner_of("room:{$prefix$i}:pub");
        return "$prefix$i" if $o && $o->{port} == $node->{port};
    }
    die "no room code $prefix* on $node->{port}\n";
}

sub rooms_of {
    my ($t) = @_;
    my ($status, undef, $body) = http_get($t->port, '/rooms');
    return undef unless defined $status && $status == 200;
    my $r = eval { $JSON->decode($body) } or return undef;
    return { map { $_->{code} => $_->{count} } @$r };
}

# GET /rooms on both stacks lists these rooms with these counts (a count
# undef: not listed); other rooms are not looked at.
sub rooms_are {
    my ($want, $what) = @_;
    for my $t ($ta, $tb) {
        my $got;
        ok(wait_until(sub {
            $got = rooms_of($t) or return 0;
            return !grep { ($got->{$_} // -1) != ($want->{$_} // -1) }
                keys %$want;
        }, timeout => 5), 'stack ' . $t->name . ": GET /rooms $what")
            or diag(explain($got));
    }
}

sub history_of {
    my ($room) = @_;
    my $owner = $c->owner_of("room:{$room}:pub");
    my $h = $c->command($owner, 'LRANGE', "room:{$room}:history", 0, -1);
    die "LRANGE on $owner->{port}: $h\n" if is_error($h);
    return $h;
}

sub connect_to {
    my ($t, $room, $name) = @_;
    my $cl = $t->connect($room, $name);
    ref $cl or BAIL_OUT("$name: upgrade to $room on stack " . $t->name
        . " refused: $Rooms::Test::Client::LAST");
    return $cl;
}

sub names { join ' ', sort map { $_->{name} } @{ $_[0]{data}{players} } }

sub short { my @l = @_; return "@l[0 .. ($#l > 9 ? 9 : $#l)]" }


# --- a recorder: clients of several rooms, paced publishers, every frame ---

package Rec {
    use List::Util qw(max min);
    use Time::HiRes qw(time);

    sub new { return bless { cl => {}, sent => {}, sending => 0 }, $_[0] }

    # add(name => client, room => R, rate => chats/s (0: a listener))
    sub add {
        my ($s, $name, $c, %o) = @_;
        $s->{cl}{$name} = { c => $c, room => $o{room}, frames => [],
            rate => $o{rate} // 0, next => 0, n => 0 };
    }

    sub names { sort keys %{ $_[0]{cl} } }
    sub frames { @{ $_[0]{cl}{ $_[1] }{frames} } }
    sub cl { $_[0]{cl}{ $_[1] } }

    my $serial = 0;

    # A chat of `name` with a ref, data { text, src, n, room }.
    sub send_chat {
        my ($s, $name) = @_;
        my $cl = $s->{cl}{$name};
        my $ref = sprintf '%s-%05d', $name, ++$serial;
        my $n = ++$cl->{n};
        $cl->{c}->send_json({ type => 'chat', ref => $ref, data => {
            text => $ref, src => $name, n => $n, room => $cl->{room} } });
        $s->{sent}{$ref} = { p => $name, t => time, n => $n,
            room => $cl->{room} };
        return $ref;
    }

    # pump(secs => S, done => code): sends what is due (while sending),
    # records every frame with its time; returns 1 as soon as done->()
    # is true, 0 after S seconds.
    sub pump {
        my ($s, %o) = @_;
        my $until = time + ($o{secs} // 0);
        while (1) {
            my $now = time;
            my $next = $until;
            for my $name ($s->names) {
                my $cl = $s->{cl}{$name};
                next unless $s->{sending} && $cl->{rate}
                    && $cl->{c}->is_open;
                if ($now >= $cl->{next}) {
                    $s->send_chat($name);
                    $cl->{next} = $now + 1 / $cl->{rate};
                }
                $next = $cl->{next} if $cl->{next} < $next;
            }
            $s->read(min(0.02, max(0, $next - time)));
            return 1 if $o{done} && $o{done}->();
            return 0 if time >= $until;
        }
    }

    sub read {
        my ($s, $wait) = @_;
        my %by;
        for my $cl (values %{ $s->{cl} }) {
            next unless $cl->{c}{sock};
            # frames already read by the client (none waits in select)
            while (defined(my $m = $cl->{c}->recv_json(0))) {
                push @{ $cl->{frames} }, [ time, $m ];
            }
            $by{ fileno $cl->{c}{sock} } = $cl if $cl->{c}->is_open;
        }
        my $sel = IO::Select->new(map { $_->{c}{sock} } values %by);
        for my $fh ($sel->can_read($wait)) {
            my $cl = $by{ fileno $fh };
            while (defined(my $m = $cl->{c}->recv_json(0.001))) {
                push @{ $cl->{frames} }, [ time, $m ];
            }
        }
    }

    # Every named client got a chat sent after `t` (pumping at most
    # `secs`).
    sub flowing_after {
        my ($s, $t, $secs, @who) = @_;
        return $s->pump(secs => $secs, done => sub {
            for my $w (@who) {
                my $ok = 0;
                for my $e (reverse $s->frames($w)) {
                    my $m = $e->[1];
                    next unless $m->{type} eq 'chat';
                    my $sent = $s->{sent}{ $m->{ref} // '' } or next;
                    $ok = $sent->{t} > $t;
                    last;
                }
                return 0 unless $ok;
            }
            return 1;
        });
    }

    # Each sent message's answers on its sender: { copy => count,
    # acked_at => time of the first copy, errors => [codes] }.
    sub answers {
        my ($s) = @_;
        my %ans;
        my %pubs = map { $_->{p} => 1 } values %{ $s->{sent} };
        for my $p (keys %pubs) {
            for my $e ($s->frames($p)) {
                my $m = $e->[1];
                my $ref = $m->{type} eq 'error' ? $m->{data}{ref} : $m->{ref};
                my $sent = defined $ref && $s->{sent}{$ref};
                next unless $sent && $sent->{p} eq $p;
                if ($m->{type} eq 'error') {
                    push @{ $ans{$ref}{errors} }, $m->{data}{code};
                } elsif ($m->{type} eq 'chat') {
                    $ans{$ref}{copy}++;
                    $ans{$ref}{acked_at} //= $e->[0];
                }
            }
        }
        return \%ans;
    }

    # Stops sending and records until every message is answered and the
    # clients are quiet for `quiet` seconds (bounded).
    sub drain {
        my ($s, $quiet) = @_;
        $s->{sending} = 0;
        my $n = keys %{ $s->{sent} };
        $s->pump(secs => 15, done => sub { keys %{ $s->answers } == $n });
        my $last = time;
        my $seen = $s->count;
        $s->pump(secs => 10, done => sub {
            my $now = $s->count;
            ($last, $seen) = (time, $now) if $now != $seen;
            return time - $last >= $quiet;
        });
    }

    sub count {
        my ($s) = @_;
        my $n = 0;
        $n += @{ $_->{frames} } for values %{ $s->{cl} };
        return $n;
    }

    sub close_all {
        my ($s) = @_;
        $_->{c}->close for values %{ $s->{cl} };
    }
}


# join_all(rec, [name, stack, room, rate] ...): connects them, records,
# and waits until each client has its welcome and a `state` listing every
# player of its room (of those joined here).  Returns { name => welcome },
# and sets $rec->{states_from}{name} to the index of that state.
sub join_all {
    my ($rec, @who) = @_;
    for my $w (@who) {
        my ($name, $t, $room, $rate) = @$w;
        $rec->add($name, connect_to($t, $room, $name), room => $room,
            rate => $rate);
    }
    my %in_room;
    push @{ $in_room{ $_->[2] } }, $_->[0] for @who;
    my %welcome;
    my $full = sub {
        my ($name) = @_;
        my $room = $rec->cl($name)->{room};
        my @f = $rec->frames($name);
        for my $i (0 .. $#f) {
            my $m = $f[$i][1];
            $welcome{$name} //= $m if $m->{type} eq 'welcome';
            next unless $m->{type} eq 'state';
            my %ids = map { $_->{id} => 1 } @{ $m->{data}{players} };
            next if grep { !$welcome{$_} || !$ids{ $welcome{$_}{data}{you}{id} } }
                @{ $in_room{$room} };
            $rec->{states_from}{$name} = $i;
            return 1;
        }
        return 0;
    };
    my $ok = $rec->pump(secs => 10, done => sub {
        !grep { !defined $rec->{states_from}{ $_->[0] } && !$full->($_->[0]) }
            @who;
    });
    ok($ok, 'joined: ' . join(', ', map { "$_->[0] ($_->[2] on "
        . $_->[1]->name . ')' } @who) . ': welcome, then a state listing '
        . 'every one of its room');
    return \%welcome;
}


# The longest gap between two chat deliveries to a client in [from, to]
# (counted from its last delivery before `from`), and when it began.
sub longest_gap {
    my ($rec, $who, $from, $to) = @_;
    my ($prev, $gap, $at) = (undef, 0, 0);
    for my $e ($rec->frames($who)) {
        next unless $e->[1]{type} eq 'chat';
        if ($e->[0] < $from) {
            $prev = $e->[0];
            next;
        }
        last if $e->[0] > $to;
        ($gap, $at) = ($e->[0] - $prev, $prev - $from)
            if defined $prev && $e->[0] - $prev > $gap;
        $prev = $e->[0];
    }
    return ($gap, $at);
}


# check_traffic(rec => R, label => L, room => CODE, history => [entries],
# players => [ids], policy => 'move' | 'kill', event => [t0, t1]):
# the checks of a busy room after an event (see the top).  Returns
# { acked, unavailable, lost, resets }.
sub check_traffic {
    my (%o) = @_;
    my ($rec, $L) = @o{qw(rec label)};
    my $sent = $rec->{sent};
    my $ans = $rec->answers;
    my @refs = sort keys %$sent;

    # answers
    my @unanswered = grep { !$ans->{$_} } @refs;
    my @both = grep { $ans->{$_}{copy} && $ans->{$_}{errors} } @refs;
    my @errors_twice = grep { @{ $ans->{$_}{errors} || [] } > 1 } @refs;
    my @acked = grep { $ans->{$_}{copy} } @refs;
    my @refused = grep { $ans->{$_} && !$ans->{$_}{copy} } @refs;
    my @odd = grep { $_ ne 'unavailable' }
        map { @{ $ans->{$_}{errors} || [] } } @refs;
    is(scalar @unanswered, 0, "$L: every message answered ("
        . @refs . ' sent)') or diag('unanswered: ' . short(@unanswered));
    is(scalar @both, 0, "$L: no message both delivered and refused")
        or diag('both: ' . short(@both));
    is(scalar @errors_twice, 0, "$L: no message refused twice")
        or diag('twice: ' . short(@errors_twice));
    is(scalar @odd, 0, "$L: refusals are `unavailable`")
        or diag('codes: ' . short(@odd));

    # the history on the room's owner
    my (%kept, @hist_bad);
    my ($last_id, %last_n) = (0);
    for my $h (@{ $o{history} }) {
        my $m = eval { $JSON->decode($h) } or next;
        next unless $m->{type} eq 'chat' && $sent->{ $m->{ref} // '' };
        push @hist_bad, "$m->{ref} twice" if $kept{ $m->{ref} }++;
        push @hist_bad, "id $m->{id} after $last_id" if $m->{id} <= $last_id;
        my ($src, $n) = @{ $m->{data} }{qw(src n)};
        push @hist_bad, "$m->{ref} after n=$last_n{$src}"
            if $n <= ($last_n{$src} // 0);
        ($last_id, $last_n{$src}) = ($m->{id}, $n);
    }
    ok(!@hist_bad, "$L: history on the owner: each message once, ids "
        . 'increasing, each sender\'s in order') or diag(short(@hist_bad));
    my @lost = grep { !$kept{$_} } @acked;
    my @refused_kept = grep { $kept{$_} } @refused;
    is(scalar @refused_kept, 0, "$L: no message answered `unavailable` "
        . 'was published') or diag(short(@refused_kept));
    if ($o{policy} eq 'move') {
        is(scalar @lost, 0, "$L: the history has every acknowledged "
            . 'message') or diag('lost: ' . short(@lost));
    } else {
        # lost by asynchronous replication: acknowledged by the killed
        # master just before it died
        my ($kill) = @{ $o{event} };
        my @not_repl = grep { $ans->{$_}{acked_at} < $kill - 1
            || $ans->{$_}{acked_at} > $kill + 0.5 } @lost;
        is(scalar @not_repl, 0, "$L: the history has every acknowledged "
            . 'message (but those acknowledged in the second before the '
            . 'kill)') or diag('lost: ' . short(@not_repl));
        diag("$L: " . scalar(@lost) . ' acknowledged messages lost by '
            . 'asynchronous replication' . (@lost ? ': ' . short(@lost) : ''));
    }

    # every client's view
    my %unkept = map { $_ => 1 } grep { !$kept{$_} } @refs;
    my %players = map { $_ => 1 } @{ $o{players} };
    my $resets_all = 0;
    for my $who ($rec->names) {
        my ($resets, $unreset, $saw_unkept, $churn, $states) = (0);
        my (@bad, %seen, %ever, %n);
        my $last = 0;
        my @f = $rec->frames($who);
        for my $i (0 .. $#f) {
            my $m = $f[$i][1];
            if ($m->{type} eq 'reset') {
                ($resets, $unreset, $last) = ($resets + 1, undef, 0);
                %seen = %n = ();
                next;
            }
            next unless defined $m->{id};
            push @bad, "$m->{type} id $m->{id} after $last"
                if $m->{id} <= $last;
            $last = $m->{id};
            if ($m->{type} eq 'state'
                && $i > ($rec->{states_from}{$who} // $#f)) {
                $states++;
                my %in = map { $_->{id} => 1 } @{ $m->{data}{players} };
                $churn++ if grep { !$in{$_} } keys %players;
            }
            next unless $m->{type} eq 'chat' && $sent->{ $m->{ref} // '' };
            my ($ref, $src, $k) = ($m->{ref}, @{ $m->{data} }{qw(src n)});
            push @bad, "$ref twice" if $seen{$ref}++;
            push @bad, "$ref after n=$n{$src}" if $k <= ($n{$src} // 0);
            $n{$src} = $k;
            $ever{$ref} = 1;
            if ($unkept{$ref}) {
                $unreset //= $ref;
                $saw_unkept = 1;
            }
        }
        my @missing = grep { !$ever{$_} } sort keys %kept;
        ok(!@bad, "$L: $who: ids increasing, no message twice, each "
            . 'sender\'s in order' . ($o{policy} eq 'move' ? ''
                : ' (between resets)')) or diag(short(@bad));
        is(scalar @missing, 0, "$L: $who: every message of the history "
            . 'received') or diag('missing: ' . short(@missing));
        if ($o{policy} eq 'move') {
            is($resets, 0, "$L: $who: no reset");
            ok(!$saw_unkept, "$L: $who: saw nothing the history lacks");
        } else {
            ok(!defined $unreset, "$L: $who: a reset followed every "
                . 'message it saw that the new master lacks')
                or diag("saw $unreset, no reset after it");
            cmp_ok($resets, '<=', $saw_unkept ? 1 : 0, "$L: $who: "
                . ($saw_unkept ? 'at most one reset' : 'no reset (it saw '
                . 'nothing the new master lacks)'));
        }
        is($churn // 0, 0, "$L: $who: every state lists every player ("
            . ($states // 0) . ' states)');
        ok($rec->cl($who)->{c}->is_open, "$L: $who: still connected")
            or diag("closed with " . ($rec->cl($who)->{c}->close_code
                // 'EOF'));
        $resets_all += $resets;
        diag(sprintf '%s: %s: %d chats, %d resets; longest delivery gap '
            . '%.2f s (from %+.2f s)', $L, $who,
            scalar(grep { $_->[1]{type} eq 'chat' } @f), $resets,
            longest_gap($rec, $who, @{ $o{event} }));
    }

    diag(sprintf '%s: %d messages: %d acknowledged, %d unavailable; '
        . '%d kept in the history; %d resets', $L, scalar @refs,
        scalar @acked, scalar @refused, scalar keys %kept, $resets_all);
    return { acked => scalar @acked, unavailable => scalar @refused,
        lost => scalar @lost, resets => $resets_all };
}


# busy_room(label, room, where): pa and pb publishing $RATE chats/s with
# refs, on stacks a and b, la and lb listening; returns once every one
# of them received chats, and a second later: (recorder, [player ids]).
sub busy_room {
    my ($L, $room, $where) = @_;
    my $rec = Rec->new;
    my $welcome = join_all($rec, [ pa => $ta, $room, $RATE ],
        [ pb => $tb, $room, $RATE ], [ la => $ta, $room, 0 ],
        [ lb => $tb, $room, 0 ]);
    $rec->{sending} = 1;
    ok($rec->flowing_after(time, 5, $rec->names),
        "$L: traffic flows in $room ($where)");
    $rec->pump(secs => 1);
    return ($rec, [ map { $_->{data}{you}{id} } values %$welcome ]);
}


# after_event(label, rec, room, players, policy, t0, secs): the live
# stream goes on (within secs) to every client; a second more, then the
# answers and the quiet; check_traffic with the history read on the
# room's owner now.  Closes the clients; returns check_traffic's figures.
sub after_event {
    my ($L, $rec, $room, $players, $policy, $t0, $secs) = @_;
    ok($rec->flowing_after(time, $secs, $rec->names),
        "$L: new messages reach everyone on both stacks afterwards");
    $rec->pump(secs => 1);
    my $t2 = time;
    $rec->drain(0.5);
    my $f = check_traffic(rec => $rec, label => $L, room => $room,
        history => history_of($room), players => $players,
        policy => $policy, event => [ $t0, $t2 ]);
    $rec->close_all;
    return $f;
}


# chat_round(label, rooms): in each room a1, a2 on stack a and b1, b2 on
# stack b; `state` lists the four on both stacks; a chat of a1 and one of
# b2 reach each member of the room exactly once, and no other room's;
# GET /rooms on both stacks counts 4 in each room; after the clients
# leave, GET /rooms lists none of them.
sub chat_round {
    my ($L, @rooms) = @_;
    my $rec = Rec->new;
    my @who = map { my $r = $_; map { [ "$r:$_", /^a/ ? $ta : $tb, $r, 0 ] }
        qw(a1 a2 b1 b2) } @rooms;
    my $welcome = join_all($rec, @who);

    for my $r (@rooms) {
        my @mine = map { $_->[0] } grep { $_->[2] eq $r } @who;
        my @ids = sort map { $welcome->{$_}{data}{you}{id} } @mine;
        for my $name (@mine) {
            my $s = ($rec->frames($name))[ $rec->{states_from}{$name} ][1];
            is_deeply([ sort map { $_->{id} } @{ $s->{data}{players} } ],
                \@ids, "$L: $name: state lists the players of both stacks");
            is(names($s), "$r:a1 $r:a2 $r:b1 $r:b2",
                "$L: $name: their names");
        }
    }
    rooms_are({ map { $_ => 4 } @rooms }, "$L: 4 in each room");

    my %refs = map { $_ => [ $rec->send_chat("$_:a1"),
        $rec->send_chat("$_:b2") ] } @rooms;
    my $got = sub {
        my ($name, $ref) = @_;
        return scalar grep { $_->[1]{type} eq 'chat'
            && ($_->[1]{ref} // '') eq $ref } $rec->frames($name);
    };
    ok($rec->pump(secs => 5, done => sub {
        !grep { my $n = $_->[0]; grep { !$got->($n, $_) }
            @{ $refs{ $_->[2] } } } @who;
    }), "$L: the chats reached every member");
    $rec->pump(secs => 0.3);    # anything more that would come
    for my $w (@who) {
        my ($name, undef, $room) = @$w;
        my @counts = map { $got->($name, $_) } @{ $refs{$room} };
        is("@counts", '1 1', "$L: $name: a1's and b2's chats once each");
        my @foreign = grep { $_->[1]{type} eq 'chat'
            && ($_->[1]{data}{room} // '') ne $room } $rec->frames($name);
        is(scalar @foreign, 0, "$L: $name: no other room's chat");
        my @ids = map { $_->[1]{id} } grep { defined $_->[1]{id} }
            $rec->frames($name);
        ok(!grep({ $ids[$_] <= $ids[$_ - 1] } 1 .. $#ids),
            "$L: $name: ids increasing") or diag("ids @ids");
    }

    $rec->close_all;
    rooms_are({ map { $_ => undef } @rooms }, "$L: the rooms gone once "
        . 'everyone left');
}


# --- 1. chat in rooms on the three masters ---------------------------------

my @chat_rooms = map { room_on($_, 'CHAT') } @masters;
diag('chat rooms: ' . join ', ', map {
    "$chat_rooms[$_] on $masters[$_]{port} (slot "
    . $c->slot_of("room:{$chat_rooms[$_]}:pub") . ')' } 0 .. 2);
chat_round('chat', @chat_rooms);


# --- 2. gap-free joins while another stack publishes -----------------------

{
    my $room = room_on($masters[2], 'JOIN');
    my $pub = connect_to($tb, $room, 'pub');
    is($pub->recv_json(5)->{type}, 'welcome', 'joins: publisher on stack b');
    $CHILD = publish_paced($pub, $PUBLISH, 0.004);

    my $probe = connect_to($ta, $room, 'probe');
    ok($probe->wait_for(type => 'chat', timeout => 5,
        match => sub { $_[0]{data}{k} > 20 }), 'joins: publishing has begun');
    $probe->close;

    my ($joins, $ok, $detail) = $ta->check_joins(count => $JOINS,
        room => $room, history => 'all', stop_at => $PUBLISH);
    is($ok, $joins, "joins: every join ($joins) on stack a exact: the whole "
        . 'history backfilled, then live, no gap, no duplicate, ids '
        . 'increasing') or diag($detail);
    cmp_ok($joins, '>=', 10, 'joins: many joins happened while publishing');
    diag("joins: $joins joins in $room (on $masters[2]{port}), $ok exact");

    waitpid($CHILD, 0);
    is($?, 0, 'joins: the publisher finished');
    $CHILD = undef;
    $pub->close;
}


# --- 3. a busy room's slot moved to another master -----------------------------

my %figures;
{
    my $L = 'move';
    my $room = room_on($masters[1], 'MOVE');
    my $slot = $c->slot_of("room:{$room}:pub");
    my $from = $c->owner_of("room:{$room}:pub");
    my ($to) = grep { $_->{port} != $from->{port} } $c->masters;

    my ($rec, $players) = busy_room($L, $room,
        "slot $slot on $from->{port}");

    my $m0 = time;
    $c->migrate_start($slot, $from, $to);
    $rec->pump(secs => 0.2);
    my $keys = $c->migrate_keys($slot, $from, $to);
    # a join while the room's keys are on the importing node (ASK)
    $rec->add(ja => connect_to($ta, $room, 'ja'), room => $room);
    $rec->pump(secs => 0.3);
    $c->migrate_end($slot, $from, $to);
    my $m1 = time;
    $rec->add(jb => connect_to($tb, $room, 'jb'), room => $room);
    diag(sprintf "$L: slot %d (%d keys) moved from %d to %d in %.2f s",
        $slot, $keys, $from->{port}, $to->{port}, $m1 - $m0);
    is($c->owner_of("room:{$room}:pub")->{port}, $to->{port},
        "$L: the slot is served by $to->{port}");

    $figures{$L} = after_event($L, $rec, $room, $players, 'move', $m0, 10);
}

chat_round('after the move', @chat_rooms);
for my $t ($ta, $tb) {
    cmp_ok(metric($t, 'rooms_redis_cluster_retries_total') // 0, '>', 0,
        'move: stack ' . $t->name . ': /metrics counted the calls that '
        . 'waited for the migration');
}


# --- 4. a master killed, its replica promoted ---------------------------------

{
    my $L = 'kill';
    my $victim = $seed{a};    # stack a's seed, too
    # a bystander: a busy room on another master, which must not notice
    my ($other) = grep { $_->{port} != $victim->{port} } $c->masters;
    my $by_room = room_on($other, 'CALM');
    my ($by, $by_players) = busy_room("$L (bystander)", $by_room,
        "on $other->{port}");
    my $room = room_on($victim, 'KILL');
    my ($rec, $players) = busy_room($L, $room,
        "on $victim->{port}, stack a's seed");
    for (1 .. 20) {    # both rooms flowing before the kill
        $rec->pump(secs => 0.025);
        $by->pump(secs => 0.025);
    }

    my $k0 = time;
    my $promoted = $c->kill_master($victim, during => sub {
        $rec->pump(secs => 0.03);
        $by->pump(secs => 0.03);
    });
    my $k1 = time;
    diag(sprintf "$L: %d killed; %d promoted, the cluster ok after %.2f s",
        $victim->{port}, $promoted->{port}, $k1 - $k0);
    is($c->owner_of("room:{$room}:pub")->{port}, $promoted->{port},
        "$L: the room's slot is served by the promoted replica");

    $figures{$L} = after_event($L, $rec, $room, $players, 'kill', $k0, 15);

    my $by_f = after_event("$L (bystander)", $by, $by_room, $by_players,
        'move', $k0, 5);
    is($by_f->{unavailable}, 0, "$L: the bystander room on another master "
        . 'had no message refused');
    for my $who ($by->names) {
        my ($gap) = longest_gap($by, $who, $k0, $k1);
        cmp_ok($gap, '<', 1, "$L: bystander $who: no delivery gap of a "
            . 'second while the other master failed over');
        diag(sprintf "$L: bystander $who: longest delivery gap %.2f s "
            . 'during the failover', $gap);
    }
}

chat_round('after the failover', @chat_rooms);
masters_connected('after the failover');


# --- 5. a sidecar killed, its players reaped by the other -----------------------

{
    my $room = room_on(($c->masters)[0], 'REAP');
    my $rec = Rec->new;
    join_all($rec, [ a1 => $ta, $room, 0 ], [ b1 => $tb, $room, 0 ],
        [ b2 => $tb, $room, 0 ]);
    rooms_are({ $room => 3 }, "reap: 3 in $room");

    my $r0 = time;
    $tb->kill_proc('sidecar');
    my $s;
    my $from = $rec->{states_from}{a1};
    $rec->pump(secs => 10, done => sub {
        my @f = $rec->frames('a1');
        ($s) = grep { $_->[1]{type} eq 'state'
            && @{ $_->[1]{data}{players} } == 1 } @f[ $from + 1 .. $#f ];
        return $s;
    });
    my $took = time - $r0;
    is($s && names($s->[1]), 'a1', "reap: b's players removed after its "
        . 'sidecar was killed');
    my $window = ($TTL + 2 * $INTERVAL) / 1000 + 0.5;
    cmp_ok($took, '<', $window, sprintf 'reap: within %.1f s (ttl %d ms, '
        . 'heartbeat %d ms)', $window, $TTL, $INTERVAL);
    diag(sprintf 'reap: dead sidecar detected after %.2f s', $took);
    my $got;
    ok(wait_until(sub {
        $got = rooms_of($ta);
        return $got && ($got->{$room} // 0) == 1;
    }, timeout => 5), "reap: GET /rooms on stack a counts 1 in $room")
        or diag(explain($got));
    $rec->close_all;
}

diag(sprintf 'figures: move: %d acknowledged, %d unavailable, %d lost, %d '
    . 'resets; kill: %d acknowledged, %d unavailable, %d lost, %d resets',
    map { @{ $figures{$_} // {} }{qw(acked unavailable lost resets)} }
    qw(move kill)) if keys %figures == 2;

$ta->finish;
