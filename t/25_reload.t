#!/usr/bin/perl

# Reload under load: clients chat on both workers, the nginx master gets
# SIGHUP; every old client receives close 1001 "server shutting down",
# the old workers exit within a bounded time, new clients land on new
# workers and chat, and the sidecar no longer counts the old clients.
# The harness checks error.log for [alert]/[crit].

use strict;
use warnings;

use JSON::PP ();
use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(wait_until http_get);

my $OLD = 6;
my $NEW = 4;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
$t->start_nginx(workers => 2, main => 'worker_shutdown_timeout 10s;');

my $master = $t->pid('nginx');


# join_room($name) -> ($client, $worker_pid)
sub join_room {
    my ($name) = @_;

    my $c = $t->connect('RELOAD', $name);
    return unless ref $c;

    my $w = $c->recv_json(5);
    return unless $w && ($w->{type} // '') eq 'welcome';

    my ($pid) = ($w->{data}{you}{id} // '') =~ /\.(\d+)\.\d+$/;

    # the room's history comes first: messages up to last_id
    $c->{last_id} = $w->{data}{last_id} // 0;

    return ($c, $pid);
}

my (@old, %old_pids);
for my $i (1 .. $OLD) {
    my ($c, $pid) = join_room("old$i");
    ok($c, "old$i joins") or next;
    push @old, $c;
    $old_pids{$pid}++;
}

diag('old workers: ' . join(', ', sort keys %old_pids));

# chat before the reload
$_->send_json({ type => 'chat', data => { text => 'before' } }) for @old;
my $all = 1;
for my $c (@old) {
    my @got = $c->collect(type => 'chat', count => scalar @old, timeout => 5);
    $all = 0 unless @got == @old;
}
ok($all, 'every old client got every chat before the reload');

# messages in flight while the signal arrives
$_->send_json({ type => 'chat', data => { text => 'during' } }) for @old;

ok(kill('HUP', $master), 'SIGHUP sent to the nginx master');

my ($told, $clean) = (0, 0);
for my $c (@old) {
    my $deadline = time + 10;
    while (time < $deadline && !$c->closed && $c->is_open) {
        $c->recv_json($deadline - time);
    }
    $told++ if ($c->close_code // 0) == 1001
        && ($c->{close_reason} // '') eq 'server shutting down';

    # after its close frame the server hangs up
    my $deadline2 = time + 5;
    while (time < $deadline2 && !$c->{eof}) {
        $c->_fill($deadline2) or last;
    }
    $clean++ if $c->{eof};
}
is($told, scalar @old,
    'every old client got close 1001 "server shutting down"');
is($clean, scalar @old, 'every old connection was closed by the server');

my $gone = wait_until(sub { !grep { kill 0, $_ } keys %old_pids },
    timeout => 15, interval => 0.1);
ok($gone, 'old workers exited')
    or diag('still running: ' . join ' ', grep { kill 0, $_ } keys %old_pids);

ok(kill(0, $master), 'master still running');

# New clients: on new workers.
my (@new, %new_pids);
for my $i (1 .. $NEW) {
    my $ok = wait_until(sub {
        my ($c, $pid) = join_room("new$i");
        return 0 unless $c;
        if ($old_pids{$pid}) {
            $c->close;
            return 0;
        }
        push @new, $c;
        $new_pids{$pid}++;
        return 1;
    }, timeout => 10, interval => 0.1);
    ok($ok, "new$i joins a new worker");
}

$_->send_json({ type => 'chat', data => { text => 'after' } }) for @new;
$all = 1;
for my $c (@new) {
    my @got;
    while (@got < @new) {
        my $m = $c->wait_for(type => 'chat', timeout => 5) or last;
        push @got, $m if ($m->{id} // 0) > $c->{last_id};
    }
    $all = 0 unless @got == @new && !grep { $_->{data}{text} ne 'after' } @got;
}
ok($all, 'new clients chat after the reload');

# The sidecar counts only the new clients: no old connection leaked.
my $count;
wait_until(sub {
    my ($s, undef, $body) = http_get($t->port, '/rooms');
    return 0 unless defined $s && $s == 200;
    my $rooms = eval { JSON::PP::decode_json($body) } || [];
    ($count) = map { $_->{count} } grep { $_->{code} eq 'RELOAD' } @$rooms;
    return defined $count && $count == @new;
}, timeout => 5);
is($count, scalar @new, 'GET /rooms counts only the new clients');

# A second reload, right away, with the new clients connected.
my %second = %new_pids;
ok(kill('HUP', $master), 'second SIGHUP');
my $told2 = 0;
for my $c (@new) {
    my $deadline = time + 10;
    while (time < $deadline && !$c->closed && $c->is_open) {
        $c->recv_json($deadline - time);
    }
    $told2++ if ($c->close_code // 0) == 1001;
}
is($told2, scalar @new, 'second reload: clients told with 1001');
ok(wait_until(sub { !grep { kill 0, $_ } keys %second }, timeout => 15,
    interval => 0.1), 'second reload: old workers exited');

$_->close for @old, @new;

$t->finish;
