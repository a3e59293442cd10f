#!/usr/bin/perl

# Socket activation: the sidecar takes its listening socket as fd 3
# (LISTEN_FDS=1, LISTEN_PID), as from conf/rooms-sidecar.socket; here the
# harness holds the socket as systemd would.  While the sidecar is dead
# (kill -9) a connect() to the socket is queued, not refused, so nginx's
# workers see a slow accept; a new sidecar on the same socket takes over,
# connected clients chat again, and no sidecar ever removes the socket
# file (the socket's owner does).  Accounting for every message across a
# restart is another test's business.

use strict;
use warnings;

use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Test::More;

use Rooms::Test;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, listen_fd => 1);
$t->start_nginx(workers => 2);

my $sock = $t->sidecar_socket;
my $ino = (stat $sock)[1];
ok(-S $sock, 'the harness made the socket file');

sub log_text {
    open my $fh, '<', $_[0] or return '';
    local $/;
    return <$fh>;
}

my $inherited = qr/ready: listening on \Q$sock\E \(socket activation, inherited fd 3\)/;
my @ready = log_text($t->sidecar_log) =~ /$inherited/g;
is(scalar @ready, 1, 'sidecar logs that it uses the inherited socket');

sub join_room {
    my ($name) = @_;
    my $c = $t->connect('SOCKACT', $name);
    ok(ref $c, "$name upgrades")
        or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    is(($c->recv_json(5) || {})->{type}, 'welcome', "$name: welcome");
    return $c;
}

my $alice = join_room('Alice');
my $bob = join_room('Bob');

# chat(text, tries): Alice sends; true once Bob and Alice both received
# the same try (a message sent before the worker re-linked may be
# refused: each try waits for the copies, then sends again).
sub chat {
    my ($text, $tries) = @_;
    for my $try (1 .. $tries) {
        $alice->send_json({ type => 'chat', data => { text => "$text $try" } });
        my $m = $bob->wait_for(type => 'chat', timeout => 2,
            match => sub { $_[0]{data}{text} =~ /^\Q$text\E / }) or next;
        note("$text: try $try answered");
        return 1 if $alice->wait_for(type => 'chat', timeout => 2,
            match => sub { $_[0]{data}{text} eq $m->{data}{text} });
    }
    return 0;
}

ok(chat('before', 1), 'Alice and Bob receive Alice\'s chat');

my $old = $t->pid('sidecar');
is($t->kill_proc('sidecar', 'KILL'), 9, 'sidecar killed with SIGKILL');

ok(-S $sock && (stat $sock)[1] == $ino,
    'sidecar dead: the socket file is still there, the same one');

my $probe = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock);
ok($probe, 'sidecar dead: connect() to the socket succeeds (queued)')
    or diag("connect: $!");
close $probe if $probe;

# a coalesced `state` may still be on its way: it is not a close
my $m = $alice->recv_json(0.3);
$m = $alice->recv_json(0.3) while $m && ($m->{type} // '') eq 'state';
ok(!$m && $alice->is_open, 'sidecar dead: Alice stays connected')
    or diag(defined $m ? "got $m->{type}" : 'closed, code '
        . ($alice->close_code // 'none'));

# sent while no sidecar runs: held by the worker, published by the next
# one once its Redis is connected (it answers the workers only then)
$alice->send_json({ type => 'chat', data => { text => 'held' },
    ref => 'r-held' });

$t->start_sidecar(undef, listen_fd => 1);
isnt($t->pid('sidecar'), $old, 'a new sidecar runs on the same socket');
for ([Alice => $alice], [Bob => $bob]) {
    my $h = $_->[1]->wait_for(timeout => 5, ignore => ['state']);
    is($h && $h->{type} . ':' . ($h->{data}{text} // $h->{data}{code}),
        'chat:held', "$_->[0] gets the chat sent while no sidecar ran");
}
@ready = log_text($t->sidecar_log) =~ /$inherited/g;
is(scalar @ready, 2, 'the new sidecar logs that it uses the inherited socket');

ok(chat('after', 5), 'after the restart Alice and Bob receive her chat');
ok($alice->is_open && $bob->is_open, 'both clients stayed connected');

ok(-S $sock && (stat $sock)[1] == $ino,
    'the new sidecar did not replace the socket file');

unlike(log_text($t->sidecar_log), qr/stale socket|cannot bind|chmod/,
    'no sidecar touched the socket file');

# the workers never found the socket refusing: their connect() waited
unlike(log_text($t->error_log), qr/unreachable|connect\(\) to sidecar/,
    'nginx: no refused or failed connect to the sidecar');

$alice->close;
$bob->close;

is($t->stop_sidecar, 0, 'sidecar exits 0 on TERM');
ok(-S $sock && (stat $sock)[1] == $ino,
    'a stopped sidecar leaves the socket file to its owner');
$probe = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock);
ok($probe, 'sidecar stopped: connect() still queued, not refused');
close $probe if $probe;

$t->finish;
