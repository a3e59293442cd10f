#!/usr/bin/perl

# An upgrade that an old worker accepts in the very round of events where
# worker_shutdown_timeout ends its drain (issue 9, item 7).  The content
# handler has announced the client to the sidecar and posted the
# takeover; the shutdown timer then closes the request first.  The
# client must be forgotten with it: before the fix it stayed in the
# link's tree and the live list after its connection was freed, and the
# sidecar's welcome for it was written into freed memory.
#
# The round is made deterministic by stopping the old worker (SIGSTOP)
# across its shutdown timeout while the rest of the request arrives:
# when it runs again, one epoll round brings the request and the expired
# timer together.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(process_alive wait_until);
use Rooms::Test::Raw;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
my $port = $t->start_nginx(workers => 1,
    main => 'worker_shutdown_timeout 3s;');

my ($old) = $t->workers;
ok($old, "one worker ($old)");

# A member that stays: the old worker has a client, and its link, during
# the drain.
my $stay = Rooms::Test::Raw->connect(port => $port, room => 'RACE',
    name => 'stay');
ok(ref $stay, 'a client joins before the reload') or BAIL_OUT('no upgrade');

# The racing request, all but its last bytes: a connection reading its
# header is not idle, so the reload does not close it.
my $req = Rooms::Test::Raw::upgrade_request(port => $port, room => 'RACE',
    name => 'late', key => 'dGhlIHNhbXBsZSBub25jZQ==');
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
    Proto => 'tcp') or die "connect: $!";
$s->autoflush(1);
print $s substr($req, 0, -2);

my $log_size = -s $t->error_log;

ok(kill('HUP', $t->pid('nginx')), 'reload');
ok(wait_until(sub {
        my @w = grep { $_ != $old } $t->workers;
        @w && do { open my $fh, '<', $t->error_log; local $/; <$fh> }
            =~ /gracefully shutting down/;
    }, timeout => 10), 'a new worker runs, the old one is draining');

ok(kill('STOP', $old), 'old worker stopped');
print $s "\r\n";
sleep 3.5;                              # past worker_shutdown_timeout
ok(kill('CONT', $old), 'old worker continues');

# One epoll round brings the rest of the request, and the shutdown
# timer expires in it.  Three outcomes, each correct, depending on
# whether the round reads the request before the timer and on the order
# of nginx's connection slots:
# - the request is read by the shutdown timer itself (it runs every
#   connection's read handler) after the drain ended: the upgrade is
#   refused, and nginx closes the connection without an answer (the
#   timer marked it as failed);
# - the same before the drain ended: the client is one of those the
#   drain closes, with 1001;
# - the request is read first, the client announced and its takeover
#   posted, then the timer ends the request (nginx's request handler
#   sees c->close): the client is forgotten with it, the connection
#   closed without an answer.  This one crashed the unfixed worker.
my $answer = '';
my $sel = IO::Select->new($s);
my $deadline = time + 8;
while (time < $deadline && $answer !~ /\x88[\x00-\x7d]\x03\xe9/) {
    last unless $sel->can_read($deadline - time);
    my $n = sysread($s, $answer, 4096, length $answer);
    last unless $n;
}
my $log = sub { open my $fh, '<', $t->error_log; local $/; <$fh> };
if ($answer =~ m{^HTTP/1\.1 101}) {
    note('the late client was served by the drain');
    like($answer, qr/\x88[\x00-\x7d]\x03\xe9/,
        'the late client is served, then closed with 1001 by the drain');
} else {
    is($answer, '', 'the late client is closed without an upgrade');
    ok(wait_until(sub {
            $log->() =~ /upgrade refused with 503: worker shutting down|(?#
                         )request ended before the upgrade took over/
        }, timeout => 5),
        '... refused ("worker shutting down"), or forgotten with its '
        . 'request');
    note($log->() =~ /worker shutting down/
        ? 'refused after the drain ended'
        : 'ended by the shutdown timer before its takeover');
}

ok(wait_until(sub { !process_alive($old) }, timeout => 10),
    'the old worker exits');

my $err = do { open my $fh, '<', $t->error_log; local $/; <$fh> };
unlike($err, qr/worker process $old exited on signal/,
    'the old worker did not crash');

my $c = Rooms::Test::Raw->connect(port => $port, room => 'RACE',
    name => 'after');
ok(ref $c, 'a new client joins the new worker');
my $w = ref $c && $c->next_json(5);
is($w && $w->{type}, 'welcome', '... and is welcomed');

$t->finish;
