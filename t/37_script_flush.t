#!/usr/bin/perl

# SCRIPT FLUSH under traffic (SPEC 2.2: one sender's messages keep their
# order): two publishers send numbered chats while another Redis client
# runs SCRIPT FLUSH over and over.  Every EVALSHA the sidecar has in
# flight then fails with NOSCRIPT; it must run them again in the order
# they were given, ahead of anything given later (redis_client.cpp,
# docs/redis.md "Scripts").  Checked: every chat is answered once, every
# client gets each publisher's chats once and in send order, and the
# room's history in Redis holds each publisher's chats in send order.
#
# The sidecar reaches Redis through a proxy that delays every reply on
# its command connection by 50 ms (Rooms::Test::DelayProxy matching the
# connection's TIME handshake): the NOSCRIPT answers then come in over
# 50 ms while the publishers keep sending, so a retry that went behind
# the commands given meanwhile would show.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test;
use Rooms::Test::DelayProxy;
use Rooms::Test::Traffic;

my $ROOM = 'FLUSH';
my $SECONDS = 3;
my $RATE = 200;            # chats per second per publisher
my $EVERY = 0.05;          # between two SCRIPT FLUSH
my $HISTORY = 5000;        # keeps every chat of the run

my $t = Rooms::Test->new;
my $redis = $t->start_redis;
my $rport = $t->redis_port;
my $proxy = Rooms::Test::DelayProxy->start(port => $rport, delay => 0.05,
    match => qr/TIME/);
$t->start_sidecar($proxy->url, log_level => 'info',
    args => [ '--rate-limit', 0, '--history-length', $HISTORY ]);
$t->start_nginx(workers => 2);

my $tr = Rooms::Test::Traffic->new;
for my $spec ([r1 => 0], [p1 => $RATE], [p2 => $RATE]) {
    my ($name, $rate) = @$spec;
    my $c = $t->connect($ROOM, $name);
    ref $c or BAIL_OUT("$name: upgrade refused");
    my $w = $c->wait_for(type => 'welcome', timeout => 5);
    ok($w, "$name: welcome") or BAIL_OUT("$name: no welcome");
    $tr->add($name => $c, rate => $rate, welcome => $w);
}

# SCRIPT FLUSH every $EVERY s, straight to Redis, from a child process:
# at most 200 times or for $SECONDS s.
sub flusher {
    my $pid = fork() // die "fork: $!\n";
    return $pid if $pid;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $rport, Timeout => 2) or _exit(1);
    my $sel = IO::Select->new($s);
    my $end = time + $SECONDS;
    my $n = 0;
    while ($n < 200 && time < $end) {
        syswrite($s, "*2\r\n\$6\r\nSCRIPT\r\n\$5\r\nFLUSH\r\n") or last;
        my $buf = '';
        while ($buf !~ /\r\n/ && $sel->can_read(2)) {
            sysread($s, $buf, 64, length $buf) or last;
        }
        last unless $buf =~ /^\+OK/;
        $n++;
        sleep $EVERY;
    }
    _exit($n > 0 ? 0 : 1);
}

my $log_from = -s $t->sidecar_log;
my $flusher;
$tr->run($SECONDS, at => { 0.2 => sub { $flusher = flusher() } });
if ($flusher) {
    waitpid($flusher, 0);
    is($? >> 8, 0, 'SCRIPT FLUSH ran');
}
$tr->drain(1);
$proxy->stop;

my $log = do {
    open my $fh, '<', $t->sidecar_log or die;
    seek $fh, $log_from, 0;
    local $/;
    <$fh>;
};
my $noscript = () = $log =~ /NOSCRIPT|not loaded/g;
ok($noscript > 0, "the sidecar met NOSCRIPT ($noscript times)");

my $pubs = $tr->check_room(receivers => ['r1'], publishers => [qw(p1 p2)]);
for my $p (qw(p1 p2)) {
    is($pubs->{$p}{refused}, 0, "$p: none refused");
}

# The room's history: each publisher's chats in send order, each once.
my $len = Rooms::Test::redis_command($rport, 'LLEN', "room:{$ROOM}:history");
my ($n) = $len =~ /^:(\d+)/;
ok($n && $n <= $HISTORY, "history holds the run (" . ($n // 0) . ")");
my $hist = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $rport,
    Timeout => 2) or die "redis: $!\n";
syswrite($hist, "*4\r\n\$6\r\nLRANGE\r\n\$" . length("room:{$ROOM}:history")
    . "\r\nroom:{$ROOM}:history\r\n\$1\r\n0\r\n\$2\r\n-1\r\n");
my $buf = '';
my $sel = IO::Select->new($hist);
my $deadline = time + 5;
my @entries;
while (time < $deadline && $sel->can_read($deadline - time)) {
    sysread($hist, $buf, 1 << 20, length $buf) or last;
    @entries = ($buf =~ /\r\n\$\d+\r\n(\{[^\r\n]*\})(?=\r\n)/g);
    last if @entries >= ($n // 0);
}
close $hist;
my %ks;
for my $e (@entries) {
    my $m = eval { decode_json($e) } or next;
    next unless ($m->{type} // '') eq 'chat';
    push @{ $ks{ $m->{data}{src} } }, $m->{data}{k};
}
for my $p (qw(p1 p2)) {
    my $sent = $tr->client($p)->{sent};
    is("@{ $ks{$p} || [] }", join(' ', 1 .. $sent),
        "$p: history in send order ($sent chats)");
}

$t->finish;
