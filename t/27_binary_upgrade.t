#!/usr/bin/perl

# A binary upgrade drops no one (SPEC 5): USR2 to the nginx master (it
# execs a new master, the same binary, that inherits the sockets), WINCH
# to the old master (its workers shut down gracefully), QUIT to the old
# master (it exits once its workers have).  The same load and accounting
# as t/25_reload.t (Rooms::Test::Drain).
#
# nginx runs as a daemon here ("daemon on", as Debian's nginx.service
# runs it): the old master ignores WINCH unless it is daemonized.  Every
# master is stopped by PID, also on failure: the test process is made a
# subreaper, so that the daemon and the new master become its children.

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

my $redis = $t->start_redis;
$t->start_sidecar($redis);
$tb->start_sidecar($redis);

$t->start_nginx(workers => 2, daemon => 1,
    main => "worker_shutdown_timeout ${DRAIN}s;",
    http => "rooms_shutdown_spread ${SPREAD}s;");
$tb->start_nginx(workers => 1);

my $old = $t->pid('nginx');
my $dir = $t->dir;
my $new;

my $res = run_drain(t => $t, pub => $tb, drain => $DRAIN, spread => $SPREAD,
    room => 'UPGRADE', trigger => sub {
        $new = $t->upgrade_binary;
        ok($new && $new != $old, "USR2: new master $new, old $old");
        ok(wait_until(sub { my @w = $t->workers('nginx'); @w == 2 },
            timeout => 10),
            'the new master started its workers');
        ok($t->signal('nginx_old', 'WINCH'), 'WINCH to the old master');
        return time;
    }, during => sub {
        ok($t->signal('nginx_old', 'QUIT'),
            'QUIT to the old master during the drain');
    });

is($t->wait_exit('nginx_old', 10), 0,
    'the old master exited with 0 once its workers had');
ok(!-e "$dir/nginx.pid.oldbin", 'nginx.pid.oldbin is gone');
is(Rooms::Test::read_pid("$dir/nginx.pid"), $new,
    'nginx.pid names the new master');

# the new master serves on its own

my @y = map { join_client($t, 'AFTER', "y$_") } 1 .. 2;
ok(!grep({ !$_ } @y), 'clients join after the upgrade') or BAIL_OUT('join');
$y[0]{c}->send_json({ type => 'chat', data => { text => 'after' } });
ok(pump(\@y, sub { !grep { !grep { $_ eq 'after' } @{ $_->{texts} } } @y },
    5), 'and chat');

$_->close for map { $_->{c} } @{ $res->{all} || [] }, @y;

$t->finish;
