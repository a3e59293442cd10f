#!/usr/bin/perl

# nginx without a sidecar answers upgrades with 503 and never hangs; once
# the sidecar starts the same nginx serves chat; when it stops, new
# upgrades get 503 again.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(wait_until);

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_nginx(workers => 2);

my @st = map { $t->connect('DOWN', "u$_", timeout => 5) } 1 .. 6;
is_deeply(\@st, [ (503) x 6 ], 'no sidecar: every upgrade answers 503');

$t->start_sidecar;

# The workers reconnect with backoff; retry each join until it is taken.

sub join_room {
    my ($name) = @_;

    my $c = wait_until(sub {
        my $r = $t->connect('DOWN', $name, timeout => 5);
        return ref $r ? $r : 0;
    }, timeout => 10, interval => 0.1);

    return ref $c ? $c : undef;
}

my $alice = join_room('Alice');
ok($alice, 'sidecar up: Alice upgrades within 10s');
my $bob = join_room('Bob');
ok($bob, 'sidecar up: Bob upgrades within 10s');

SKIP: {
    skip 'no clients', 5 unless $alice && $bob;

    is(($alice->recv_json(5) || {})->{type}, 'welcome', 'Alice: welcome');
    is(($bob->recv_json(5) || {})->{type}, 'welcome', 'Bob: welcome');

    $alice->send_json({ type => 'chat', data => { text => 'back' } });

    for ([Alice => $alice], [Bob => $bob]) {
        my ($who, $c) = @$_;
        my $m = $c->wait_for(type => 'chat', timeout => 5);
        is($m && $m->{data}{text}, 'back', "$who receives the chat");
    }

    ok(wait_until(sub {
        my ($s) = Rooms::Test::http_get($t->port, '/rooms');
        return defined $s && $s == 200;
    }, timeout => 5), 'GET /rooms answers 200 with the sidecar up');
}

is($t->stop_sidecar, 0, 'sidecar exits 0 on TERM');
ok(!-e $t->sidecar_socket, 'sidecar removed its socket file');

# Connected clients are detached, not dropped, while the sidecar is away.
SKIP: {
    skip 'no clients', 1 unless $alice && $bob;

    # a coalesced `state` may still be on its way: it is not a close
    my $m = $alice->recv_json(0.3);
    $m = $alice->recv_json(0.3) while $m && ($m->{type} // '') eq 'state';
    ok(!$m && $alice->is_open,
        'sidecar stopped: a connected client stays connected')
        or diag(defined $m ? "got $m->{type}" : 'connection closed, code '
            . ($alice->close_code // 'none'));
}

# The workers see the link drop as an event of their own; allow them a
# moment, then every new upgrade must be refused.
ok(wait_until(sub {
    for (1 .. 6) {
        my $r = $t->connect('DOWN', 'late', timeout => 5);
        return 0 unless !ref $r && $r == 503;
    }
    return 1;
}, timeout => 5), 'sidecar stopped: new upgrades answer 503 again');

$alice->close if $alice;
$bob->close if $bob;

$t->finish;
