#!/usr/bin/perl

# Frame-level abuse, measured (SPEC 3: "whatever a client sends, the
# memory and CPU it costs are bounded"; issue 9).  One worker; its CPU
# (from /proc/PID/schedstat) and RSS (from /proc/PID/status) are taken
# around each hostile client and compared with a well-behaved one:
#
# - well-behaved: 16 KiB chats, the reference CPU per byte;
# - pong flood: unsolicited pongs (125-byte and empty) produce no output,
#   cost CPU per byte within a small factor of the chats and no memory;
# - 1-byte fragments: a 16 KiB message sent as 1-byte continuation frames
#   costs time linear in its size (the same bytes on the wire cost about
#   the same in 16 KiB messages as in 8 KiB ones, not twice) and within a
#   bound of the same messages unfragmented;
# - many tiny frames (empty pings interleaved with 1-byte text messages):
#   refused (rate_limited, or unavailable once they outrun the sidecar and
#   fill rooms_hold_size) and closed with 1008, CPU per byte bounded, the
#   worker answers another client meanwhile;
# - tiny messages while the sidecar is stopped: the worker holds no more
#   than rooms_hold_size says (it counts each message's entry too);
# - busy connections (pipelined floods of control frames) cannot
#   monopolize the worker: another client's chat round trip stays short
#   (the read loop gives way after 64 KiB, ngx_posted_next_events);
# - a client that stops reading in a busy room gets close 1008 "slow
#   consumer" as a close frame, promptly (the kick drops the unsent
#   queue); the room does not stall for the others;
# - after each hostile client leaves, the worker's memory is back near
#   where it was (the module trims glibc's heap once a megabyte or more
#   was freed).
#
# The figures are printed with diag() so that they can be quoted.  The
# bounds are wide: other builds and tests share this machine's 2 cores.

use strict;
use warnings;

use List::Util qw(max);
use POSIX qw(_exit);
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(proc_cpu proc_rss);
use Rooms::Test::Raw qw(frame);

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar(undef, log_level => 'info');
# a large receive buffer, as a server taking big uploads may have: a
# client's socket can hold megabytes that one read event would drain
my $port = $t->start_nginx(workers => 1, log_level => 'info',
    listen => 'rcvbuf=4m');

my ($worker) = $t->workers;
ok($worker, "one worker ($worker)");

my $KEY = "\x11\x22\x33\x44";     # one mask key: frames built by repetition
my $NAME = 0;

# A raw client in $room after its welcome.
sub join_room {
    my ($room, %o) = @_;

    my $name = 'u' . ++$NAME;
    my $c = Rooms::Test::Raw->connect(port => $port, room => $room,
        name => $name, %o);
    return unless ref $c;

    my $w = $c->next_json(5);
    return unless $w && ($w->{type} // '') eq 'welcome';

    return $c;
}

# Reads $c until $n answers (own chats or errors) came, a close frame or
# EOF, or $timeout; returns (chats, errors, close code or undef, error
# codes seen).
sub answers {
    my ($c, $n, $timeout) = @_;

    my ($chats, $errors, %codes) = (0, 0);
    my $deadline = time + $timeout;

    while ($chats + $errors < $n) {
        my $left = $deadline - time;
        last if $left <= 0;
        my $m = $c->next_json($left) or last;
        my $type = $m->{type} // '';
        $chats++ if $type eq 'chat';
        if ($type eq 'error') {
            $errors++;
            $codes{ $m->{data}{code} // '' }++;
        }
    }

    return ($chats, $errors, $c->{close} ? $c->{close}[0] : undef, \%codes);
}

# The worker's CPU seconds while $code runs.
sub cpu_of {
    my ($code) = @_;

    my $before = proc_cpu($worker);
    my @r = $code->();
    return (proc_cpu($worker) - $before, @r);
}


# Sends $bytes from a child process while $c reads its $n answers (within
# $timeout s); returns (the worker's CPU seconds, the chats that came).
sub send_counted {
    my ($c, $bytes, $n, $timeout) = @_;

    return cpu_of(sub {
        my $pid = push_bytes($c, $bytes);
        my ($chats) = answers($c, $n, $timeout);
        reap($pid, 5);
        return $chats;
    });
}

# The worker's RSS once it settled: the smallest of a few readings.
sub rss_now {
    my $min;
    for (1 .. 5) {
        my $r = proc_rss($worker);
        $min = $r if !defined $min || $r < $min;
        sleep 0.02;
    }
    return $min;
}

sub percentile {
    my ($p, @v) = @_;
    return 0 unless @v;
    @v = sort { $a <=> $b } @v;
    return $v[ int($p / 100 * $#v + 0.5) ];
}

# probe($c, $seconds, $interval): chat round trips of $c, one every
# $interval, for $seconds; an echo that does not come within 10 s counts
# 10 s.  Returns the round trips in seconds.
my $PROBE = 0;
my %PROBE_ERRORS;       # code => how many probes were refused

sub probe {
    my ($c, $seconds, $interval, $each) = @_;

    my @rtt;
    my $end = time + $seconds;
    my $next = time;

    while (time < $end) {
        my $ref = 'p' . ++$PROBE;
        my $sent = time;
        $c->send_json({ type => 'chat', ref => $ref,
            data => { text => 'probe' } }) or last;
        my $m = $c->wait_json(timeout => 10, match => sub {
            ($_[0]{ref} // $_[0]{data}{ref} // '') eq $ref });
        push @rtt, $m ? time - $sent : 10;
        $PROBE_ERRORS{ $m->{data}{code} // '' }++
            if $m && $m->{type} eq 'error';
        $each->() if $each;
        last unless $m;
        $next += $interval;
        $next = time if $next < time;
        sleep($next - time) if $next > time;
    }

    return @rtt;
}

sub rtt_figures {
    my (@rtt) = @_;
    return sprintf('%d round trips, p50 %.1f ms, p99 %.1f ms, max %.1f ms',
        scalar @rtt, 1000 * percentile(50, @rtt),
        1000 * percentile(99, @rtt), 1000 * (max(@rtt) // 0));
}

# A child process that runs $code (writing to a socket of the parent's);
# returns its pid.
sub child {
    my ($code) = @_;

    my $pid = fork() // die "fork: $!\n";
    return $pid if $pid;

    $code->();
    _exit(0);
}

# Writes $bytes to $c from a child process while the caller reads the
# answers (a client that writes a lot without reading would be closed as
# a slow consumer); returns the child's pid.
sub push_bytes {
    my ($c, $bytes) = @_;

    return child(sub {
        for (my $off = 0; $off < length $bytes; $off += 65536) {
            $c->send_raw(substr($bytes, $off, 65536)) or last;
        }
    });
}

sub reap {
    my ($pid, $timeout) = @_;

    my $deadline = time + $timeout;
    while (time < $deadline) {
        return 1 if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.02;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return 0;
}

# a client at rest in its own room, to measure the others' latency
my $calm = join_room('CALM');
ok($calm, 'a calm client joins its own room') or BAIL_OUT('no upgrade');

my @idle = probe($calm, 0.5, 0.025);
diag('idle worker: ' . rtt_figures(@idle));

# Bounded memory back after a hostile client leaves: the worker's RSS
# near what it was before that client came ($before).
sub memory_back {
    my ($what, $before) = @_;

    my $rss;
    wait_until_small(sub { $rss = rss_now(); $rss - $before < 1024 });
    diag(sprintf('%s: worker RSS %d KiB after it left (%+d KiB)',
        $what, $rss, $rss - $before));
    Rooms::Test::mem_cmp_ok($rss - $before, '<', 2048,
        "$what: the worker's memory is back within 2 MiB");
}

sub wait_until_small {
    my ($check) = @_;
    Rooms::Test::wait_until($check, timeout => 3, interval => 0.1);
}


# --- well-behaved: 16 KiB chats, the reference ------------------------------

my $CHATS = 80;       # pipelined, under the default burst of 100
my $TEXT = 'w' x 16000;

my $good = join_room('GOOD');
ok($good, 'a well-behaved client joins');

my $chat_frame = frame(op => 1, key => $KEY, payload =>
    qq({"type":"chat","data":{"text":"$TEXT"}}));
my $chat_bytes = $CHATS * length $chat_frame;

my ($chat_cpu, $got) = send_counted($good, $chat_frame x $CHATS, $CHATS, 20);
is($got, $CHATS, "well-behaved: all $CHATS chats of 16 KiB come back");

my $chat_per_mb = 1000 * $chat_cpu / ($chat_bytes / 1e6);
diag(sprintf('well-behaved: %d chats, %.1f MB sent: worker CPU %.1f ms, '
    . '%.2f ms/MB (read, sent to the sidecar, the copy written back)',
    $CHATS, $chat_bytes / 1e6, 1000 * $chat_cpu, $chat_per_mb));
$good->close;


# --- pong flood -------------------------------------------------------------

{
    my $PONGS = 200_000;      # half of them 125 bytes, half empty
    my $c = join_room('PONG');
    ok($c, 'pong flood: client joins');

    my $big = frame(op => 10, key => $KEY, payload => 'p' x 125);
    my $empty = frame(op => 10, key => $KEY);
    my $block = ($big . $empty) x 1000;
    my $bytes = length($block) * $PONGS / 2000;

    my $rss = rss_now();
    my ($cpu, $chats, $other) = cpu_of(sub {
        for (1 .. $PONGS / 2000) {
            $c->send_raw($block) or last;
        }
        $c->send_json({ type => 'chat', ref => 'after',
            data => { text => 'after' } });

        # nothing but the chat's copy (and states) may come back
        my ($chats, $other) = (0, 0);
        while (my $f = $c->read_frame(10)) {
            if ($f->{op} == 1 && $f->{payload} =~ /"ref":"after"/) {
                $chats++;
                last;
            }
            $other++ unless $f->{op} == 1
                && $f->{payload} =~ /"type":"state"/;
        }
        return ($chats, $other);
    });
    my $grown = proc_rss($worker) - $rss;
    my $per_mb = 1000 * $cpu / ($bytes / 1e6);

    is($chats, 1, 'pong flood: a chat sent after it comes back');
    is($other, 0, 'pong flood: no output for unsolicited pongs');
    diag(sprintf('pong flood: %d pongs, %.1f MB: worker CPU %.1f ms, '
        . '%.2f ms/MB (%.2fx the chats), RSS %+d KiB', $PONGS,
        $bytes / 1e6, 1000 * $cpu, $per_mb, $per_mb / $chat_per_mb,
        $grown));
    Rooms::Test::cpu_cmp_ok($per_mb, '<', 3 * $chat_per_mb,
        'pong flood: CPU per byte under 3x a well-behaved client\'s');
    Rooms::Test::mem_cmp_ok($grown, '<', 1024, 'pong flood: the worker grew under 1 MiB');

    $c->close;
    memory_back('pong flood', $rss);
}


# --- 1-byte fragments -------------------------------------------------------

# One text message of $size bytes of payload as 1-byte frames (or one
# frame).
sub message {
    my ($size, $fragmented) = @_;

    my $text = 'f' x ($size - length('{"type":"chat","data":{"text":""}}'));
    my $payload = qq({"type":"chat","data":{"text":"$text"}});

    return frame(op => 1, key => $KEY, payload => $payload)
        unless $fragmented;

    # frames of one byte: the first is text, the rest continuation, all
    # masked with one key, so each is 2 + 4 + 1 bytes
    my $k = ord substr($KEY, 0, 1);
    my $out = '';
    my @b = unpack('C*', $payload);
    for my $i (0 .. $#b) {
        my $b0 = ($i == 0 ? 1 : 0) | ($i == $#b ? 0x80 : 0);
        $out .= pack('CC', $b0, 0x81) . $KEY . chr($b[$i] ^ $k);
    }

    return $out;
}

my %frag;
{
    my $rss = rss_now();
    my $N = 30;       # 16 KiB messages; twice as many of 8 KiB, under the
                      # default burst of 100

    # The same bytes on the wire in 8 KiB and in 16 KiB messages: the
    # kernel's share (the socket's receive queue, which a 6.9 MB burst
    # fills where a 3.4 MB one did not) is then the same in both, and a
    # cost quadratic in the message's length doubles the ratio.  Four
    # rounds, their mean: a round costs the worker either about 20 ms or,
    # now and then, about 11 ms (its reads keeping pace with the sender
    # or not), so the cheapest round of each, as this took before, gave
    # 0.64-1.71x for a linear parser.  (Before that, twice the bytes in
    # messages of twice the size: 2.1-3.4x.)
    my $ROUNDS = 4;
    for my $case (([ 8192, 1 ], [ 16384, 1 ], [ 16384, 0 ]) x $ROUNDS) {
        my ($size, $fragmented) = @$case;
        my $n = $N * 16384 / $size;
        my $c = join_room('FRAG');
        my $msg = message($size, $fragmented);
        my $wire = $n * length $msg;

        my ($cpu, $chats) = send_counted($c, $msg x $n, $n, 30);

        my $what = sprintf('%d messages of %d KiB %s', $n, $size / 1024,
            $fragmented ? 'in 1-byte frames' : 'in one frame each');
        is($chats, $n, "$what: all come back");
        diag(sprintf('%s: %.2f MB on the wire, worker CPU %.1f ms',
            $what, $wire / 1e6, 1000 * $cpu));
        $frag{"$size/$fragmented"} += $cpu / $ROUNDS;
        $c->close;
    }

    my $scale = $frag{'16384/1'} / ($frag{'8192/1'} || 1e-6);
    my $ratio = $frag{'16384/1'} / ($frag{'16384/0'} || 1e-6);
    my $per_mb = 1000 * $frag{'16384/1'} / ($N * length(message(16384, 1))
        / 1e6);
    diag(sprintf('fragments: the same bytes in 16 KiB / in 8 KiB messages '
        . '%.2fx (linear 1, quadratic 2); fragmented / unfragmented %.1fx; '
        . '%.2f ms/MB on the wire, %.1fx the chats', $scale, $ratio,
        $per_mb, $per_mb / $chat_per_mb));

    # measured here: 5-10x now; 56x with the buffer grown to the exact
    # size at each fragment (before 08f2608), where 1-byte frames cost
    # 7.7x the chats' CPU per byte (1.5x now)
    Rooms::Test::cpu_cmp_ok($ratio, '<', 25, 'fragments: 1-byte frames '
        . 'cost within 25x the same messages unfragmented');
    Rooms::Test::cpu_cmp_ok($per_mb, '<', 4 * $chat_per_mb, 'fragments: '
        . 'CPU per byte on the wire within 4x a well-behaved client\'s');
    Rooms::Test::cpu_cmp_ok($scale, '<', 1.5, 'fragments: the same bytes '
        . 'in messages of twice the size cost about the same time');

    memory_back('fragments', $rss);
}


# --- many tiny frames -------------------------------------------------------

{
    my $PAIRS = 100_000;      # an empty ping and a 1-byte text message
    my $c = join_room('TINY');
    ok($c, 'tiny frames: client joins');

    my $pair = frame(op => 9, key => $KEY) . frame(op => 1, key => $KEY,
        payload => '1');
    my $block = $pair x 1000;
    my $bytes = length($block) * $PAIRS / 1000;

    my $rss = rss_now();
    my $side0 = proc_cpu($t->pid('sidecar'));
    my $cpu0 = proc_cpu($worker);

    my $flood = child(sub {
        for (1 .. $PAIRS / 1000) {
            $c->send_raw($block) or last;
        }
    });

    my $peak = $rss;
    %PROBE_ERRORS = ();
    my @rtt = probe($calm, 1.5, 0.025,
        sub { $peak = max($peak, proc_rss($worker)) });
    my ($chats, $errors, $code, $codes) = answers($c, 1e9, 10);
    reap($flood, 10);
    my $cpu = proc_cpu($worker) - $cpu0;
    my $side = proc_cpu($t->pid('sidecar')) - $side0;
    my $grown = max($peak, proc_rss($worker)) - $rss;
    my $per_mb = 1000 * $cpu / ($bytes / 1e6);

    diag(sprintf('tiny frames: %d pings and %d 1-byte messages, %.1f MB: '
        . 'worker CPU %.1f ms, %.2f ms/MB (%.1fx the chats); sidecar CPU '
        . '%.1f ms; RSS %+d KiB; answers: %s; close %s', $PAIRS, $PAIRS,
        $bytes / 1e6, 1000 * $cpu, $per_mb, $per_mb / $chat_per_mb,
        1000 * $side, $grown,
        join(', ', map { "$_ $codes->{$_}" } sort keys %$codes),
        $code // 'none'));
    diag('tiny frames, the calm client meanwhile: ' . rtt_figures(@rtt));

    diag('tiny frames: the calm client\'s chats refused: '
        . join(', ', map { "$_ $PROBE_ERRORS{$_}" } sort keys %PROBE_ERRORS))
        if %PROBE_ERRORS;

    # Pipelined, the messages outrun the sidecar's verdicts: the worker
    # may hold rooms_hold_size of them before the first rate_limited
    # comes back, and refuse the rest with unavailable.
    ok($codes->{rate_limited} || $codes->{unavailable}, 'tiny frames: '
        . 'refused (rate_limited, or unavailable past rooms_hold_size)');
    is($code, 1008, 'tiny frames: the client is closed with 1008');

    # one client takes at most half of rooms_hold_size
    ok(!%PROBE_ERRORS, 'tiny frames: the calm client\'s chats are '
        . 'not refused meanwhile');
    # measured 3-13x: the answers (100s of errors, or 1000s of unavailable
    # when the flood outruns the sidecar) are part of the cost
    Rooms::Test::cpu_cmp_ok($per_mb, '<', 30 * $chat_per_mb,
        'tiny frames: CPU per byte within 30x a well-behaved client\'s');
    cmp_ok(percentile(99, @rtt), '<', 0.5,
        'tiny frames: the calm client\'s p99 round trip stays under 500 ms');

    $c->close;

    # what one client may hold: half of rooms_hold_size (2 MiB of
    # entries), each also in a link frame; measured +1.8 to +4.5 MiB, and
    # +6.4 MiB once when the flood outran a sidecar slowed by other tests
    # (4,293 unavailable): frames queued on the link on top of the held
    Rooms::Test::mem_cmp_ok($grown, '<', 8192,
        'tiny frames: the worker grew under 8 MiB');
    memory_back('tiny frames', $rss);
}


# --- tiny messages while the sidecar does not answer -------------------------

# Every message waits in the worker until the sidecar answers it, within
# rooms_hold_size (4m); each 1-byte message held costs the worker ~240
# bytes (its entry and its link frame).  With the sidecar stopped, 300,000
# of them (2.1 MB on the wire) must not take more than the bound says:
# past it they are refused.  (When the bound counted payload bytes only,
# they all fitted in it: the worker grew by ~70 MiB.)

{
    my $MSGS = 300_000;
    my $c = join_room('HELD');
    ok($c, 'held messages: client joins');
    my $calm = join_room('CALM');
    ok($calm, 'held messages: a calm client joins another room');

    my $rss = rss_now();
    my $sidecar = $t->pid('sidecar');
    ok(kill('STOP', $sidecar), 'held messages: sidecar stopped (SIGSTOP)');

    $c->send_raw(frame(op => 1, key => $KEY, payload => '1') x $MSGS);

    # the worker has read it all once its RSS stops growing
    my ($peak, $last) = (0, -1);
    Rooms::Test::wait_until(sub {
        my $r = proc_rss($worker);
        $peak = max($peak, $r);
        my $still = $r == $last;
        $last = $r;
        return $still;
    }, timeout => 4, interval => 0.2);
    my $refused = grep { /message refused/ } do {
        open my $fh, '<', $t->error_log or die; <$fh>
    };

    # the flood took its share of rooms_hold_size, not all of it: the
    # calm client's message is held too, and published when the sidecar
    # is back (before the per-client share it got unavailable at once)
    $calm->send_json({ type => 'chat', data => { text => 'calm' } });
    my $early = $calm->wait_json(type => 'error', timeout => 0.5);
    ok(!$early, 'held messages: the calm client\'s message is held, '
        . 'not refused') or diag(explain($early));

    ok(kill('CONT', $sidecar), 'held messages: sidecar resumed');
    my $m = $calm->wait_json(timeout => 10,
        match => sub { ($_[0]{type} // '') =~ /^(chat|error)$/ });
    is($m && $m->{type}, 'chat', 'held messages: ... and published once '
        . 'the sidecar is back') or diag(explain($m));
    $calm->close;

    diag(sprintf('held messages: %d 1-byte messages (%.1f MB) while the '
        . 'sidecar is stopped: worker RSS %+d KiB at the peak', $MSGS,
        $MSGS * 7 / 1e6, $peak - $rss));
    Rooms::Test::mem_cmp_ok($peak - $rss, '<', 24 * 1024, 'held messages: the worker grew '
        . 'under 24 MiB (rooms_hold_size 4m, and the link frames)');
    ok($refused, 'held messages: past the bound they are refused (logged)');
    # (the flood alone reaches its share, half of rooms_hold_size, first)
    ok((grep { /this client's messages wait for the sidecar/ } do {
        open my $fh, '<', $t->error_log or die; <$fh>
    }), 'held messages: by the per-client share of rooms_hold_size');

    $c->close;

    # the sidecar answers (or refuses) the held ones, which are freed
    memory_back('held messages', $rss);
}


# --- busy connections cannot monopolize the worker --------------------------

# Clients pipelining pongs as fast as they can, each from its own process,
# in 256 KiB writes, for 3 s; meanwhile the calm client measures its chat
# round trip every 25 ms.  One client sending 125-byte pongs does not
# hold the worker for long even without a read budget: the worker soon
# drains the socket, a short read ends its loop.  Eight clients sending
# empty pongs (the most frames per byte) do: each read event drains a
# socket of up to 8 MB (rcvbuf=4m, doubled by the kernel; capped by
# net.core.rmem_max), and the calm client waits for all of them (here,
# without a budget, p50 ~1.1 s; with a 64 KiB budget per read event
# posted to the next cycle, ~10 ms).

sub busy {
    my ($what, $clients, $frame) = @_;

    my $SECONDS = 3;
    my $rss = rss_now();
    my @c = map { join_room('BUSY') } 1 .. $clients;
    is(scalar(grep { $_ } @c), $clients, "$what: clients join");

    my $block = $frame x int(256 * 1024 / length $frame);
    my @kids;
    for my $c (@c) {
        pipe(my $r, my $w) or die "pipe: $!";
        push @kids, [ $r, child(sub {
            close $r;
            my ($n, $end) = (0, time + $SECONDS);
            while (time < $end && $n < 4e9) {
                $c->send_raw($block) or last;
                $n += length $block;
            }
            print {$w} "$n\n";
            close $w;
        }) ];
        close $w;
    }

    my $cpu0 = proc_cpu($worker);
    my @rtt = probe($calm, $SECONDS, 0.025);
    my $bytes = 0;
    for my $kid (@kids) {
        reap($kid->[1], 30);
        my $r = $kid->[0];
        $bytes += (<$r> // 0);
    }
    my $cpu = proc_cpu($worker) - $cpu0;

    diag(sprintf('%s: %.0f MB of pongs in %ds, worker CPU %.0f ms; the '
        . 'calm client meanwhile: %s', $what, $bytes / 1e6, $SECONDS,
        1000 * $cpu, rtt_figures(@rtt)));

    my $read = 0;
    for my $c (@c) {
        my $ref = 'end' . ++$PROBE;
        $c->send_json({ type => 'chat', ref => $ref, data => { text => 'x' } });
        $read++ if $c->wait_json(type => 'chat', timeout => 30,
            match => sub { ($_[0]{ref} // '') eq $ref });
        $c->close;
    }
    is($read, $clients, "$what: the worker read the whole flood");

    memory_back($what, $rss);

    return @rtt;
}

{
    my @rtt = busy('one busy connection', 1,
        frame(op => 10, key => $KEY, payload => 'b' x 125));
    cmp_ok(percentile(99, @rtt), '<', 0.5, 'one busy connection: the calm '
        . 'client\'s p99 round trip stays under 500 ms');

    @rtt = busy('eight busy connections', 8, frame(op => 10, key => $KEY));

    cmp_ok(percentile(50, @rtt), '<', 0.05, 'eight busy connections: '
        . 'the calm client\'s median round trip stays under 50 ms');
    cmp_ok(percentile(99, @rtt), '<', 0.15, 'eight busy connections: '
        . 'the calm client\'s p99 round trip stays under 150 ms');
}


# --- a client that stops reading in a busy room ------------------------------

# Its own stack: small socket buffers on both sides (sndbuf on the listen
# socket, SO_RCVBUF on the client) and a small output queue, as in t/22.
# Once kicked, the client should get the close frame right after what
# its socket buffers hold (a frame or two), not after its queue.
{
    my $N = 40;
    my $TEXT8 = 'm' x 8000;

    my $tb = Rooms::Test->new;
    $tb->start_redis;
    $tb->start_sidecar(undef, log_level => 'info');
    my $pb = $tb->start_nginx(workers => 1, log_level => 'notice',
        listen => 'sndbuf=4k', ws => 'rooms_output_queue_size 64k;');
    my ($wb) = $tb->workers;

    my $join = sub {
        my (%o) = @_;
        my $c = Rooms::Test::Raw->connect(port => $pb, room => 'SLOW',
            name => 'u' . ++$NAME, %o);
        return unless ref $c;
        my $w = $c->next_json(5);
        return $w && ($w->{type} // '') eq 'welcome' ? $c : undef;
    };

    my $sender = $join->();
    my $reader = $join->();
    my $rss_b = proc_rss($wb);
    my $slow = $join->(rcvbuf => 2048);
    ok($sender && $reader && $slow, 'slow consumer: three clients join');

    my (@lat, %sent_at);
    my $next = time;

    # 8 KB chats at 20 a second; the reader measures their latency (it,
    # and the sender, may not stall for 0.4 s: 64k is 8 chats)
    for my $i (1 .. $N) {
        $sent_at{"s$i"} = time;
        $sender->send_json({ type => 'chat', ref => "s$i",
            data => { text => $TEXT8 } });
        $next += 0.05;
        while (time < $next) {
            while (my $m = $reader->next_json(0.002)) {
                next unless ($m->{type} // '') eq 'chat';
                push @lat, time - $sent_at{ $m->{ref} // '' };
            }
            1 while $sender->next_json(0.001);
        }
    }
    while (@lat < $N) {
        my $m = $reader->next_json(5) or last;
        next unless ($m->{type} // '') eq 'chat';
        push @lat, time - $sent_at{ $m->{ref} // '' };
    }

    is(scalar @lat, $N, "slow consumer: the reader got all $N chats");
    diag('slow consumer: the reader\'s latency meanwhile: '
        . rtt_figures(@lat));
    cmp_ok(percentile(99, @lat), '<', 0.5,
        'slow consumer: no stall for the others (p99 under 500 ms)');

    # the slow client reads now: what is left of the room's stream
    my ($frames, $code, $reason) = (0, undef, undef);
    my $start = time;
    while (my $f = $slow->read_frame(5)) {
        if ($f->{op} == 8) {
            ($code, $reason) = unpack('n a*', $f->{payload});
            last;
        }
        $frames++;
    }
    my $took = time - $start;
    my $eof = $slow->wait_eof(5);
    diag(sprintf('slow consumer: read %d frames, then %s after %.2f s',
        $frames, defined $code ? "close $code \"$reason\""
            : $slow->eof ? 'EOF without a close frame' : 'nothing', $took));

    ok($eof, 'slow consumer: the connection is closed');

    is($code, 1008, 'slow consumer: close frame 1008');
    is($reason, 'slow consumer', 'slow consumer: reason "slow consumer"');
    cmp_ok($frames, '<=', 3, 'slow consumer: the close frame comes '
        . 'promptly, not after its queue (up to 8 chats)');

    $slow->close;
    my $rss;
    wait_until_small(sub { $rss = proc_rss($wb); $rss - $rss_b < 1024 });
    diag(sprintf('slow consumer: worker RSS %d KiB after it left (%+d KiB)',
        $rss, $rss - $rss_b));
    Rooms::Test::mem_cmp_ok($rss - $rss_b, '<', 2048,
        "slow consumer: the worker's memory is back within 2 MiB");

    $sender->send_json({ type => 'chat', ref => 'after',
        data => { text => 'after' } });
    ok($reader->wait_json(type => 'chat', timeout => 5,
        match => sub { ($_[0]{ref} // '') eq 'after' }),
        'slow consumer: the room still flows');

    $_->close for $sender, $reader;
}

my @after = probe($calm, 0.5, 0.025);
diag('after all: ' . rtt_figures(@after));
cmp_ok(percentile(50, @after), '<', 0.2,
    'the calm client is served as before');

$calm->close;
$t->finish;
