#!/usr/bin/perl

# nginx -s reload (SIGHUP) drops no one (SPEC 5).
#
# 1. Under load: clients in a room on the old workers, a publisher on a
#    second stack at 20 msg/s through the reload.  The old clients are
#    served through the drain (both directions) until
#    worker_shutdown_timeout; then they get 1001 spread over
#    rooms_shutdown_spread, come back with since= and miss nothing; new
#    clients land on new workers; the old workers exit; GET /rooms counts
#    each connection once (see Rooms::Test::Drain).
# 2. Without worker_shutdown_timeout, and with no per-client timer (pings
#    and idle timeout off): the old worker serves its clients as long as
#    they stay, reconnects its link when the sidecar restarts meanwhile,
#    and exits once the last one has left.
# 3. rooms_shutdown_spread 0: the drain's end closes everyone at once.
#
# The harness checks error.log for [alert]/[crit].

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(process_alive wait_until);
use Rooms::Test::Drain qw(run_drain join_client pump);

my $DRAIN = 3;
my $SPREAD = 2;

my $t = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $tc = Rooms::Test->new(name => 'c');
my $td = Rooms::Test->new(name => 'd');

my $redis = $t->start_redis;
$t->start_sidecar($redis);
$tb->start_sidecar($redis);
$tc->start_sidecar($redis);
$td->start_sidecar($redis);

$t->start_nginx(workers => 2, main => "worker_shutdown_timeout ${DRAIN}s;",
    http => "rooms_shutdown_spread ${SPREAD}s;");
$tb->start_nginx(workers => 1);

my $master = $t->pid('nginx');

my $res = run_drain(t => $t, pub => $tb, drain => $DRAIN, spread => $SPREAD,
    room => 'RELOAD', trigger => sub {
        ok(kill('HUP', $master), 'SIGHUP sent to the nginx master');
        return time;
    });

ok(kill(0, $master), 'master still running');


# 2. The drain lasts as long as the clients stay.

$tc->start_nginx(workers => 1,
    http => "rooms_ping_interval 0;\n    rooms_idle_timeout 0;");

my ($old) = $tc->workers('nginx');
my @x = map { join_client($tc, 'STAY', "x$_") } 1 .. 2;
ok(!grep({ !$_ } @x), 'two clients join (no pings, no idle timeout)')
    or BAIL_OUT('join failed');

ok(kill('HUP', $tc->pid('nginx')), 'SIGHUP to the second nginx');
ok(pump(\@x, sub {
    open my $fh, '<', "/proc/$old/cmdline" or return 1;
    return <$fh> =~ /shutting down/;
}, 10), 'its old worker is shutting down');

$tc->stop_sidecar;
$tc->start_sidecar($redis);

# what is sent while the link is down may be refused: send until through

my ($through, $k) = (0, 0);
pump(\@x, sub {
    return $through = 1 if grep { $_ eq "k$k" } @{ $x[1]{texts} };
    if (!$x[0]{sent_at} || time - $x[0]{sent_at} > 0.5) {
        $k++;
        $x[0]{c}->send_json({ type => 'chat', data => { text => "k$k" } });
        $x[0]{sent_at} = time;
    }
    return 0;
}, 10);
ok($through, 'sidecar restarted: the old worker relinked, chat goes through');
ok(!grep({ $_->{closed_at} } @x), 'no client was closed');
ok(process_alive($old), 'the old worker serves them');

$x[0]{c}->close;
ok(!pump([ $x[1] ], sub { !process_alive($old) }, 1),
    'one client left: the old worker stays for the other');
ok(!$x[1]{closed_at}, '... which is still open');

$x[1]{c}->close;
my $left = time;
ok(wait_until(sub { !process_alive($old) }, timeout => 5, interval => 0.02),
    'the last client left: the old worker exits');
diag(sprintf('old worker gone %.2f s after its last client left',
    time - $left));


# 3. All at once.

$td->start_nginx(workers => 1, main => 'worker_shutdown_timeout 1s;',
    http => 'rooms_shutdown_spread 0;');

my @z = map { join_client($td, 'ONCE', "z$_") } 1 .. 4;
ok(!grep({ !$_ } @z), 'four clients join (spread 0)') or BAIL_OUT('join');

my $hup = time;
ok(kill('HUP', $td->pid('nginx')), 'SIGHUP to the third nginx');
ok(pump(\@z, sub { !grep { !$_->{closed_at} } @z }, 10),
    'the clients are closed');

my @at = sort { $a <=> $b } map { ($_->{closed_at} // 0) - $hup } @z;
diag(sprintf('closed %.2f .. %.2f s after the signal', @at[0, -1]));
cmp_ok($at[0], '>=', 1, 'not before worker_shutdown_timeout');
cmp_ok($at[-1] - $at[0], '<', 0.3, 'all at once');
is(scalar(grep { ($_->{close_code} // 0) == 1001 } @z), 4, 'with 1001');

$_->close for map { $_->{c} } @{ $res->{all} || [] };

$t->finish;
