#!/usr/bin/perl

# A Redis that stops answering (SIGSTOP: it still accepts TCP connects)
# is noticed within redis_timeout (docs/redis.md "Redis outages"):
#  - one stack: both Redis connections log "not answering" once, about
#    redis_timeout after the stop, and no reconnect counts as connected
#    while Redis is stopped; messages answer `unavailable` meanwhile; after
#    SIGCONT both reconnect and a chat is delivered again;
#  - two stacks on one Redis, stopped for 2 x heartbeat TTL: every alive
#    key expires meanwhile, yet no stack reaps the other's player once
#    Redis is back, neither with redis_timeout below the stop (the
#    connections are replaced; what was queued on the old ones still runs
#    when Redis resumes) nor above it (the queued beats and reaps run on
#    the same connections).
# Diagnostics report the times measured.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);
use IO::Select;
use IO::Socket::INET;

use Rooms::Test qw(http_get wait_until);
use Rooms::Test::Traffic;

my $TIMEOUT = 1000;   # --redis-timeout, ms
my $INTERVAL = 200;   # --heartbeat-interval-ms
my $TTL = 1000;       # --heartbeat-ttl-ms
my $SLACK = 0.5;      # s, for a loaded machine

# Redis processes stopped by this test: continued whatever happens, or
# they would ignore the harness's TERM.
my @stopped;

sub stop_redis {
    my ($t) = @_;
    my $pid = $t->pid('redis') or die "no redis in stack " . $t->name;
    push @stopped, $pid;
    kill 'STOP', $pid or die "SIGSTOP $pid: $!";
    return time;
}

sub cont_redis {
    kill 'CONT', splice @stopped;
    return time;
}

END { kill 'CONT', @stopped if @stopped }

# A stack's sidecar log from a byte offset on.
sub log_since {
    my ($t, $from) = @_;
    open my $fh, '<', $t->sidecar_log or return '';
    seek $fh, $from, 0;
    local $/;
    return <$fh> // '';
}

# The time (epoch seconds) of the first line from `from` on matching re,
# waiting for it up to `timeout` seconds; undef if none came.
sub log_time {
    my ($t, $from, $re, $timeout) = @_;
    my $line;
    wait_until(sub {
        ($line) = grep { /$re/ } split /\n/, log_since($t, $from);
        return defined $line;
    }, timeout => $timeout, interval => 0.01);
    return undef unless defined $line;
    $line =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z/ or return undef;
    return timegm($6, $5, $4, $3, $2 - 1, $1) + $7 / 1000;
}

sub names { join ',', sort map { $_->{name} } @{ $_[0]{data}{players} } }

# One Redis command on a new connection: its reply (arrays as array refs),
# undef if none came within 2 s.
sub redis_cmd {
    my ($port, @argv) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 2) or return undef;
    syswrite($s, '*' . @argv . "\r\n"
        . join('', map { '$' . length($_) . "\r\n$_\r\n" } @argv));
    my $r = { s => $s, sel => IO::Select->new($s), buf => '',
        deadline => time + 2 };
    return eval { resp_value($r) };
}

sub resp_more {
    my ($r) = @_;
    my $left = $r->{deadline} - time;
    die "no reply\n" if $left <= 0 || !$r->{sel}->can_read($left)
        || !sysread($r->{s}, $r->{buf}, 65536, length $r->{buf});
}

sub resp_value {
    my ($r) = @_;
    resp_more($r) while $r->{buf} !~ /\r\n/;
    $r->{buf} =~ s/^(.)(.*?)\r\n//s;
    my ($type, $v) = ($1, $2);
    return $v unless $type eq '*' || $type eq '$';
    return undef if $v < 0;
    return [ map { resp_value($r) } 1 .. $v ] if $type eq '*';
    resp_more($r) while length $r->{buf} < $v + 2;
    my $data = substr($r->{buf}, 0, $v);
    substr($r->{buf}, 0, $v + 2) = '';
    return $data;
}

# --- one stack -----------------------------------------------------------

my $ta = Rooms::Test->new(name => 'a');
$ta->start_redis;
$ta->start_sidecar(undef, args => [ '--redis-timeout', $TIMEOUT ]);
$ta->start_nginx;

my $a1 = $ta->connect('HANG', 'a1');
ok(ref $a1, 'a1 joins')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
my $w = $a1->recv_json(5);
is($w && $w->{type}, 'welcome', 'a1: welcome');
$a1->send_json({ type => 'chat', data => { text => 'before' } });
my $m = $a1->wait_for(type => 'chat', timeout => 5);
is($m && $m->{data}{text}, 'before', 'a chat before the stop');

my $from = -s $ta->sidecar_log;
my $t_stop = stop_redis($ta);

# A chat that reaches the stopped Redis: answered `unavailable` within
# the timeout, and never published, although Redis runs the command it
# had read once it resumes (the publish script refuses it: past its
# deadline).
$a1->send_json({ type => 'chat', data => { text => 'in-flight' },
    ref => 'r-inflight' });

my %noticed;
for my $conn (qw(command subscriber)) {
    my $at = log_time($ta, $from,
        qr/\[warn\] redis $conn connection not answering for \d+ ms/,
        $TIMEOUT / 1000 * 1.25 + $SLACK + 2);
    ok(defined $at, "$conn connection: 'not answering' logged") or next;
    $noticed{$conn} = $at - $t_stop;
    # The oldest request was sent at most one probe period (timeout / 4)
    # before the stop, and the check runs at most one period late.
    cmp_ok($noticed{$conn}, '<=', $TIMEOUT / 1000 * 1.25 + $SLACK,
        "$conn connection: noticed within timeout + timeout/4 + slack");
    cmp_ok($noticed{$conn}, '>=', $TIMEOUT / 1000 * 0.75 - 0.05,
        "$conn connection: not given up before timeout - timeout/4");
}
diag(sprintf('SIGSTOP -> "not answering": command %.3fs, subscriber %.3fs',
    $noticed{command} // -1, $noticed{subscriber} // -1));

my $inflight = $a1->wait_for(type => 'error', timeout => 3);
my $t_answer = time;
is($inflight && $inflight->{data}{code}, 'unavailable',
    'the chat in flight to the stopped Redis: unavailable');
is($inflight && $inflight->{data}{ref}, 'r-inflight', '... with its ref');
cmp_ok($t_answer - $t_stop, '<=', $TIMEOUT / 1000 + $SLACK,
    '... within the timeout');

# Meanwhile a message is refused at once instead of waiting on Redis.
$a1->send_json({ type => 'chat', data => { text => 'during' } });
my $err = $a1->wait_for(type => 'error', timeout => 2);
is($err && $err->{data}{code}, 'unavailable',
    'a chat while Redis hangs: error unavailable');

# Stay stopped for 3 timeouts: the reconnects reach Redis's listen
# backlog, but none may count as connected (and then hang again).
my $hold = $t_stop + 3 * $TIMEOUT / 1000 - time;
sleep $hold if $hold > 0;
my $stall_log = log_since($ta, $from);
my $t_cont = cont_redis();

for my $conn (qw(command subscriber)) {
    my @n = $stall_log =~ /redis $conn connection not answering/g;
    is(scalar @n, 1, "$conn connection: one 'not answering' per stall");
    unlike($stall_log, qr/redis $conn connected/,
        "$conn connection: not connected while Redis was stopped");
}

my %back;
for my $conn (qw(command subscriber)) {
    my $at = log_time($ta, $from, qr/\[info\] redis $conn connected/, 5);
    ok(defined $at, "$conn connection: reconnected after SIGCONT");
    $back{$conn} = defined $at ? $at - $t_cont : -1;
}

my $n = 0;
my $chat;
wait_until(sub {
    $n++;
    $a1->send_json({ type => 'chat', data => { text => "after-$n" } });
    $chat = $a1->wait_for(type => 'chat', timeout => 0.2,
        match => sub { $_[0]{data}{text} =~ /^after-/ });
    return $chat;
}, timeout => 5, interval => 0);
my $t_chat = time;
ok($chat, 'a chat sent after SIGCONT is delivered');
ok(!$a1->closed, 'a1 stayed connected');
my $hist = redis_cmd($ta->redis_port, 'LRANGE', 'room:{HANG}:history', 0, -1);
ok(ref $hist && grep(/"after-/, @$hist), 'the history has the later chat');
ok(ref $hist && !grep(/in-flight/, @$hist),
    'the chat answered unavailable was never published');
diag(sprintf('SIGCONT -> connected: command %.3fs, subscriber %.3fs; '
    . '-> chat delivered %.3fs (%d sent)', $back{command}, $back{subscriber},
    $t_chat - $t_cont, $n));
$a1->close;

# --- two stacks on one Redis ---------------------------------------------

# Stops their Redis for 2 TTLs: every alive key expires meanwhile.  With
# redis_timeout 1000 both sidecars give up their connections (the beats
# and reaps they queued meanwhile still run when Redis resumes); with
# 5000 they keep them and the queued beats and reaps run on them.
# Either way no stack may reap the other: Redis keeps both players (the
# same entries: nobody was removed and registered again), no `state`
# lacks one, and a chat from b reaches c again.
sub two_stacks {
    my ($timeout) = @_;

    my $tb = Rooms::Test->new;
    my $tc = Rooms::Test->new;
    my ($nb, $nc) = ($tb->name, $tc->name);
    my $redis = $tb->start_redis;
    # The reconnect delay stays well below the TTL: a server that
    # reconnects first waits one TTL before it reaps, in which the others
    # must beat.
    my @args = (args => [ '--redis-timeout', $timeout,
        '--heartbeat-interval-ms', $INTERVAL, '--heartbeat-ttl-ms', $TTL,
        '--redis-backoff-max-ms', 250 ]);
    $tb->start_sidecar($redis, @args);
    $tc->start_sidecar($redis, @args);
    $tb->start_nginx;
    $tc->start_nginx;

    my $b1 = $tb->connect('DUO', "${nb}1");
    my $c1 = $tc->connect('DUO', "${nc}1");
    ok(ref $b1 && ref $c1, "timeout $timeout: ${nb}1 and ${nc}1 join")
        or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
    my $both = "${nb}1,${nc}1";
    for ([ "${nb}1" => $b1 ], [ "${nc}1" => $c1 ]) {
        my ($who, $cl) = @$_;
        my $s = $cl->wait_for(type => 'state', timeout => 5,
            match => sub { names($_[0]) eq $both });
        ok($s, "$who: state lists both");
    }

    # A sidecar does not reap for one TTL after it connected: let that
    # pass, so that each sends `reap dead` every interval when Redis stops.
    sleep(($TTL + 2 * $INTERVAL) / 1000);

    my $presence = redis_cmd($tb->redis_port, 'HGETALL',
        'room:{DUO}:presence');
    my %from = map { $_->name => -s $_->sidecar_log } $tb, $tc;
    my $t_stop = stop_redis($tb);
    sleep 2 * $TTL / 1000;
    my $t_cont = cont_redis();

    # b1 chats until c1 gets one; then both keep listening for 3 TTLs
    # (the reap pause is one TTL, then a reap runs every interval).
    my (%states, $delivered);
    my $next_send = time;
    my $deadline = time + 10;
    my $n = 0;
    while (time < $deadline) {
        if (!$delivered && time >= $next_send) {
            $n++;
            $b1->send_json({ type => 'chat', data => { text => "x-$n" } });
            $next_send = time + 0.2;
        }
        for ([ $nb => $b1 ], [ $nc => $c1 ]) {
            my ($who, $cl) = @$_;
            while (my $msg = $cl->recv_json(0.02)) {
                push @{ $states{$who} }, $msg if $msg->{type} eq 'state';
                $delivered //= time if $who eq $nc
                    && $msg->{type} eq 'chat' && $msg->{data}{text} =~ /^x-/;
            }
        }
        last if $delivered && time >= $delivered + 3 * $TTL / 1000;
    }
    ok($delivered, "timeout $timeout: after the stall a chat from $nb "
        . "reaches $nc");
    diag(sprintf('two stacks, timeout %d: stopped %.3fs; SIGCONT -> chat '
        . '%s -> %s %.3fs', $timeout, $t_cont - $t_stop, $nb, $nc,
        ($delivered // $t_cont - 1) - $t_cont));

    for my $who ($nb, $nc) {
        my @bad = grep { names($_) ne $both } @{ $states{$who} || [] };
        ok(!@bad, "timeout $timeout: ${who}1 saw no state without a player")
            or diag(join "\n", map { names($_) } @bad);
    }
    is_deeply({ @{ redis_cmd($tb->redis_port, 'HGETALL',
        'room:{DUO}:presence') || [] } }, { @{ $presence || [] } },
        "timeout $timeout: Redis has the same presence entries as before");
    for my $t ($tb, $tc) {
        my $log = log_since($t, $from{ $t->name });
        unlike($log, qr/missed its heartbeat/,
            "timeout $timeout: stack " . $t->name . ' reaped no server');
        if ($timeout < 2 * $TTL) {
            like($log, qr/redis command connection not answering/,
                "timeout $timeout: stack " . $t->name
                . ' gave up its connection');
        } else {
            unlike($log, qr/not answering/,
                "timeout $timeout: stack " . $t->name
                . ' kept its connections');
        }
    }
    my ($status, $head, $body) = http_get($tb->port, '/rooms');
    like($body // '', qr/"code":"DUO","count":2/,
        "timeout $timeout: GET /rooms: DUO has 2");

    $_->close for $b1, $c1;
}

two_stacks($TIMEOUT);
two_stacks(5000);

# --- answers across a short stall ----------------------------------------

# Redis resumes right after the sidecar gave its connections up: the
# commands it had read on them still run.  A chat every 50 ms through it:
# each is answered once, delivered or `unavailable`, never both (a
# message given up with the connection is settled on the new one if
# Redis answers again in time, and refused by its deadline otherwise).
{
    my $th = Rooms::Test->new(name => 'h');
    $th->start_redis;
    $th->start_sidecar(undef, args => [ '--redis-timeout', $TIMEOUT ]);
    $th->start_nginx;

    my $tr = Rooms::Test::Traffic->new;
    for my $n (qw(h1 hp)) {
        my $c = $th->connect('SHORT', $n);
        ref $c or BAIL_OUT("$n: upgrade refused");
        my $w = $c->recv_json(5);
        $tr->add($n => $c, welcome => $w, rate => $n eq 'hp' ? 20 : 0);
    }
    $tr->drain(0.3);
    $_->{frames} = [] for map { $tr->client($_) } qw(h1 hp);

    my $from = -s $th->sidecar_log;
    my $stopped;
    $tr->run(4, at => {
        0.5 => sub { $stopped = stop_redis($th) },
        # just after "not answering" (about the timeout after the stop)
        0.5 + $TIMEOUT / 1000 * 1.1 => sub { cont_redis() },
    });
    $tr->drain(1.5);

    like(log_since($th, $from), qr/command connection not answering/,
        'short stall: the sidecar gave its connection up');
    my $st = $tr->check_room(receivers => ['h1'], publishers => ['hp']);
    diag(sprintf('short stall: sent %d, delivered %d, refused %d, lost %d',
        @{ $st->{hp} }{qw(sent delivered refused lost)}));
}

$ta->finish;
