#!/usr/bin/perl

# nginx's access controls apply to the WebSocket upgrade as to any
# request (SPEC section 5):
#   - limit_conn: a slot is held for the life of the WebSocket, not only
#     for the handshake: with "limit_conn 2" the third upgrade from one
#     address gets 503 while two are open, and a slot comes back when a
#     client leaves;
#   - limit_req (burst, nodelay; 503 or limit_req_status);
#   - allow/deny (403);
#   - auth_request (401/403 from the auth location, 2xx lets it through);
# and what a held limit_conn slot costs: the worker memory of idle
# WebSockets with and without limit_conn, per connection.  The slot goes
# back exactly once on every way out: the client leaves, a reload's drain
# closes it (1001), the worker exits (the harness checks error.log for
# alerts, "http request already closed" among them).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(process_alive wait_until);
use Rooms::Test::Raw;

my $IDLE = 200;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;

my $dir = $t->dir;
# logged at the upgrade: the memory measured is what a held slot costs,
# not a line at the close (t/46_access_log.t)
my $port = $t->start_nginx(main => 'worker_shutdown_timeout 1s;',
    ws => 'rooms_log_at upgrade;', http => <<'EOF', server => <<"EOF" . <<'EOF');
    rooms_shutdown_spread 200ms;
    limit_conn_zone $binary_remote_addr zone=perip:1m;
    limit_conn_zone $binary_remote_addr zone=many:1m;
    limit_req_zone $binary_remote_addr zone=burst:1m rate=1r/m;
    limit_req_zone $binary_remote_addr zone=strict:1m rate=1r/m;
EOF
        location = /ws-conn {
            rooms_websocket;
            limit_conn perip 2;
            access_log $dir/ws-conn.log;
            rooms_log_at upgrade;
        }
EOF

        location = /ws-many {
            rooms_websocket;
            rooms_log_at upgrade;
            limit_conn many 1000;
        }

        location = /ws-burst {
            rooms_websocket;
            limit_req zone=burst burst=2 nodelay;
        }

        location = /ws-strict {
            rooms_websocket;
            limit_req zone=strict;
            limit_req_status 429;
        }

        location = /ws-deny {
            rooms_websocket;
            deny 127.0.0.1;
        }

        location = /ws-allow {
            rooms_websocket;
            allow 127.0.0.1;
            deny all;
        }

        location = /ws-auth {
            rooms_websocket;
            auth_request /auth;
        }

        location = /auth {
            internal;

            if ($http_x_token = "good") {
                return 204;
            }

            if ($http_x_token = "forbidden") {
                return 403;
            }

            return 401;
        }
EOF


# An upgrade on path; the client, or the HTTP status of the refusal.
my %answers;    # of /ws-conn upgrades, as the clients saw them

sub upgrade {
    my ($path, $room, $name, %o) = @_;

    my $c = Rooms::Test::Raw->connect(port => $port, path => $path,
        room => $room, name => $name, %o);
    $answers{ref $c ? 101 : $c}++ if $path eq '/ws-conn';

    return $c;
}


# Upgrades until $n were accepted (slots coming back), for $timeout
# seconds at most; returns the clients accepted.
sub upgrades {
    my ($n, $room, $name, $timeout) = @_;

    my @got;
    wait_until(sub {
        my $c = upgrade('/ws-conn', $room, $name);
        push @got, $c if ref $c;
        return @got == $n;
    }, timeout => $timeout);

    return @got;
}


# The client is in the room: its welcome came.
sub welcomed {
    my ($c) = @_;

    return 0 unless ref $c;
    my $w = $c->wait_json(type => 'welcome', timeout => 5);
    return $w ? 1 : 0;
}


# --- limit_conn: a slot for the life of the WebSocket -----------------------

my @held = map { upgrade('/ws-conn', 'CONN', "held$_") } 1 .. 2;
ok(welcomed($held[0]) && welcomed($held[1]),
    'limit_conn 2: two upgrades from one address join');

my @over = map { upgrade('/ws-conn', 'CONN', "over$_") } 1 .. 4;
is_deeply([ map { ref $_ ? 101 : $_ } @over ], [ 503, 503, 503, 503 ],
    'limit_conn 2: four more upgrades while two are open get 503');

# the held ones still chat
$held[0]->send_json({ type => 'chat', data => { text => 'still here' } });
ok($held[1]->wait_json(type => 'chat', timeout => 5,
    match => sub { ($_[0]{data}{text} // '') eq 'still here' }),
    'limit_conn: the two open WebSockets still chat');

# a client leaves: its slot comes back once the worker has closed it
$held[0]->close;
my $back = wait_until(sub {
    my $c = upgrade('/ws-conn', 'CONN', 'back');
    return ref $c ? $c : 0;
}, timeout => 5);
ok(welcomed($back), 'limit_conn: a slot comes back when a client leaves');
is(upgrade('/ws-conn', 'CONN', 'over5'), 503,
    'limit_conn: and only one: the next upgrade gets 503 again');

# a client closing with the close handshake frees its slot too
$back->send_frame(op => 8, payload => pack('n', 1000));
my (undef, undef, $eof) = $back->expect_close(5);
ok($eof, 'limit_conn: a client closes with the close handshake');
my $again = wait_until(sub {
    my $c = upgrade('/ws-conn', 'CONN', 'again');
    return ref $c ? $c : 0;
}, timeout => 5);
ok(welcomed($again), 'limit_conn: its slot comes back too');

# the others leave: both slots come back
$_->close for grep { ref } $held[1], $again;
my @probe = upgrades(2, 'CONN', 'probe', 5);
is(scalar @probe, 2, 'limit_conn: all leave, both slots come back');

# one access log line an upgrade, written at the takeover, also for a
# request kept for the slot (not a second one when it is freed)
my %lines;
if (open my $fh, '<', "$dir/ws-conn.log") {
    while (<$fh>) {
        $lines{$1}++ if m{" (\d{3}) };
    }
    close $fh;
}
# (a probe for a slot coming back may be refused once more: counted too)
is(join(' ', map { "$_:$lines{$_}" } sort keys %lines),
    join(' ', map { "$_:$answers{$_}" } sort keys %answers),
    'limit_conn: one access log line for each upgrade and each refusal');
is($answers{101}, 6, 'limit_conn: 6 upgrades went through');
$_->close for @probe;


# --- limit_req ---------------------------------------------------------------

# rate=1r/m burst=2 nodelay: the first and two in the burst at once
my @burst = map { upgrade('/ws-burst', 'RATE', "b$_") } 1 .. 4;
is_deeply([ map { ref $_ ? 101 : $_ } @burst ], [ 101, 101, 101, 503 ],
    'limit_req burst=2 nodelay: three upgrades go through at once, '
    . 'the fourth gets 503');
ok(welcomed($burst[2]), 'limit_req: an upgrade of the burst joins');
$_->close for grep { ref } @burst;

my @strict = map { upgrade('/ws-strict', 'RATE', "s$_") } 1 .. 2;
is_deeply([ map { ref $_ ? 101 : $_ } @strict ], [ 101, 429 ],
    'limit_req without burst, limit_req_status 429: the second upgrade '
    . 'gets 429');
$_->close for grep { ref } @strict;


# --- allow / deny --------------------------------------------------------------

is(upgrade('/ws-deny', 'ACL', 'denied'), 403, 'deny 127.0.0.1: 403');

my $allowed = upgrade('/ws-allow', 'ACL', 'allowed');
ok(welcomed($allowed), 'allow 127.0.0.1; deny all: the upgrade joins');
$allowed->close if ref $allowed;


# --- auth_request --------------------------------------------------------------

is(upgrade('/ws-auth', 'AUTH', 'anon'), 401,
    'auth_request: 401 from the auth location refuses the upgrade with 401');
is(upgrade('/ws-auth', 'AUTH', 'bad', headers => { 'X-Token' => 'forbidden' }),
    403, 'auth_request: 403 from the auth location refuses with 403');

my @auth = map {
    upgrade('/ws-auth', 'AUTH', "good$_", headers => { 'X-Token' => 'good' })
} 1 .. 2;
ok(welcomed($auth[0]) && welcomed($auth[1]),
    'auth_request: 204 from the auth location lets the upgrade through');
$auth[0]->send_json({ type => 'chat', data => { text => 'authed' } });
ok($auth[1]->wait_json(type => 'chat', timeout => 5,
    match => sub { ($_[0]{data}{text} // '') eq 'authed' }),
    'auth_request: the authorized clients chat');
$_->close for grep { ref } @auth;


# --- what a held slot costs --------------------------------------------------------

# Idle WebSockets, each in its own room (no presence fan-out), first
# without limit_conn, then as many with it; each batch is measured from
# where the one before left the workers, so neither reuses the other's
# freed memory.
sub open_idle {
    my ($path, $tag) = @_;

    my @c;
    for my $i (1 .. $IDLE) {
        my $c = upgrade($path, "$tag$i", "idle$i");
        push @c, $c if ref $c;
    }

    # every one is in its room: the welcomes came
    my $joined = grep { welcomed($_) } @c;

    return ($joined, @c);
}

my $m0 = $t->workers_dirty_kb;

my ($n_plain, @plain) = open_idle('/ws', 'P');
is($n_plain, $IDLE, "$IDLE idle WebSockets without limit_conn");
my $m1 = $t->workers_dirty_kb;

my ($n_held, @limited) = open_idle('/ws-many', 'L');
is($n_held, $IDLE, "$IDLE idle WebSockets, each holding a limit_conn slot");
my $m2 = $t->workers_dirty_kb;

my $per_plain = ($m1 - $m0) * 1024 / $IDLE;
my $per_held = ($m2 - $m1) * 1024 / $IDLE;

diag(sprintf 'worker memory per idle WebSocket: %.0f bytes without '
    . 'limit_conn, %.0f bytes holding a limit_conn slot (+%.0f)',
    $per_plain, $per_held, $per_held - $per_plain);

# about 0.8 KiB (its pool, which replaced the connection's, and its
# room; docs/benchmarks.md), and a held slot costs the request's pool:
# two blocks of request_pool_size (4 KiB)
Rooms::Test::mem_cmp_ok($per_plain, '<', 1536,
    'an idle WebSocket without limit_conn costs less than 1.5 KiB');
Rooms::Test::mem_cmp_ok($per_held - $per_plain, '<', 12 * 1024,
    'a held limit_conn slot costs less than 12 KiB more');

$_->close for @plain, @limited;


# --- the slot and the ways out ---------------------------------------------------

# a reload: the old workers keep their clients and their slots (the zone
# is shared and survives), until the drain ends and closes them with 1001
my @old = map { upgrade('/ws-conn', 'DRAIN', "old$_") } 1 .. 2;
ok(welcomed($old[0]) && welcomed($old[1]), 'two clients hold both slots');

my @before = $t->workers;
$t->signal('nginx', 'HUP');
ok(wait_until(sub {
    my %old = map { $_ => 1 } @before;
    return scalar grep { !$old{$_} } $t->workers;
}, timeout => 10), 'reload: new workers');

is(upgrade('/ws-conn', 'DRAIN', 'new'), 503,
    'reload: the new workers refuse a third while the old ones hold two');

my @codes = map { ($_->expect_close(10, reply => 1))[0] // 0 } @old;
is_deeply(\@codes, [ 1001, 1001 ], 'the drain ends: both get 1001');

my @after = upgrades(2, 'DRAIN', 'after', 10);
is(scalar @after, 2, 'the drain gave both slots back');
ok(wait_until(sub { !grep { process_alive($_) } @before }, timeout => 10),
    'the old workers exit');

# the two stay open: the workers' exit on TERM frees their requests

$t->finish;
