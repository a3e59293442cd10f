#!/usr/bin/perl

# The access log line of a WebSocket is written when it closes (SPEC
# section 5; issue 10, item 2), and the $rooms_* variables tell what it
# did.  Asserts, in a location with "access_log ... ws" and the default
# "rooms_log_at close":
#   - no line while the client is open; one line once it has closed;
#   - the request's own strings are intact at the close ($request,
#     $http_user_agent, $host, a 3000-byte cookie that took a large
#     header buffer, $arg_room, a regex location's named capture), although the
#     header buffers were freed at the upgrade;
#   - $rooms_messages_in/out and $rooms_bytes_in/out equal what the
#     client sent and received after the 101, frames and headers counted
#     byte for byte; $rooms_room, $rooms_name, $rooms_player_id equal the
#     welcome's; $rooms_session_time and $request_time agree;
#   - $rooms_close_code: 1000 for a clean close, 1006 for a client gone
#     without a close frame, 1002 after a protocol error, 1001 when the
#     worker is reloaded;
#   - limit_conn's slot is still held for the life of the WebSocket and
#     comes back once, with the line written at the close;
#   - "rooms_log_at upgrade": the line is written at the 101, the close
#     code is "-" there;
# and prints what keeping the request costs per idle WebSocket against
# logging at the upgrade.

use strict;
use warnings;

use Test::More;

use Rooms::Test qw(wait_until);
use Rooms::Test::Raw;
use Rooms::Test::Counted;

my $IDLE = 150;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;

my $dir = $t->dir;
my $fmt = '$status "$request" ua="$http_user_agent" host=$host '
    . 'arg=$arg_room ck=$cookie_big room=$rooms_room name=$rooms_name '
    . 'player=$rooms_player_id t=$rooms_session_time rt=$request_time '
    . 'in=$rooms_messages_in out=$rooms_messages_out '
    . 'bin=$rooms_bytes_in bout=$rooms_bytes_out close=$rooms_close_code';

my $port = $t->start_nginx(workers => 1,
    main => 'worker_shutdown_timeout 1s;', http => <<"EOF", server => <<"EOF");
    rooms_shutdown_spread 100ms;
    log_format ws '$fmt';
    log_format re 'cap=\$cap room=\$rooms_room close=\$rooms_close_code';
    limit_conn_zone \$binary_remote_addr zone=one:1m;
EOF
        location = /ws-log {
            rooms_websocket;
            access_log $dir/ws.log ws;
        }

        location = /ws-up {
            rooms_websocket;
            rooms_log_at upgrade;
            access_log $dir/up.log ws;
        }

        location = /ws-lim {
            rooms_websocket;
            limit_conn one 1;
            access_log $dir/lim.log ws;
        }

        location ~ ^/ws-re/(?<cap>\\w+)\$ {
            rooms_websocket;
            access_log $dir/re.log re;
        }

        location = /ws-idle-close {
            rooms_websocket;
            access_log $dir/idle.log ws;
        }

        location = /ws-idle-upgrade {
            rooms_websocket;
            rooms_log_at upgrade;
            access_log $dir/idle.log ws;
        }
EOF


sub log_lines {
    my ($file) = @_;
    return Rooms::Test::read_lines("$dir/$file");
}


sub fields {
    my ($line) = @_;
    my %f = $line =~ /(\w+)=("[^"]*"|\S*)/g;
    s/^"(.*)"$/$1/ for values %f;
    ($f{status}) = $line =~ /^(\d+)/;
    ($f{request}) = $line =~ /^\d+ "([^"]*)"/;
    return \%f;
}


# a client that counts its bytes after the 101, both ways
sub counted {
    return Rooms::Test::Counted->connect(port => $port, @_);
}


# --- a full session, closed cleanly --------------------------------------

my $big = 'x' x 3000;

my $alice = counted(path => '/ws-log', room => 'LOG1', name => 'Alice',
    headers => { 'User-Agent' => 'agent-A/1.0', Cookie => "a=1; big=$big" });
ok(ref $alice, 'Alice upgraded with a 3000-byte cookie');

my $welcome = $alice->recv_json(sub { $_[0]{type} eq 'welcome' });
my $bob = counted(path => '/ws-log', room => 'LOG1', name => 'Bob');
ok(ref $bob, 'Bob upgraded');

for my $i (1 .. 3) {
    $alice->send_counted(op => 1,
        payload => qq({"type":"chat","data":{"text":"m$i"}}));
}

ok($alice->recv_json(sub { ($_[0]{data}{text} // '') eq 'm3' }),
    'Alice saw her third message');
is(scalar(log_lines('ws.log')), 0, 'no line while the clients are open');

$alice->send_counted(op => 8, payload => pack('n', 1000));
my $close;
while (my $f = $alice->recv_counted(5)) {
    if ($f->{op} == 8) { $close = unpack 'n', $f->{payload}; last }
}
is($close, 1000, 'the close is echoed');
ok($alice->wait_eof(5), 'the server ends the connection');

ok(wait_until(sub { scalar(log_lines('ws.log')) == 1 }),
    'one line once Alice has closed');
my $a = fields((log_lines('ws.log'))[0]);

is($a->{status}, 101, 'status 101');
is($a->{request}, 'GET /ws-log?room=LOG1&name=Alice HTTP/1.1',
    '$request intact');
is($a->{ua}, 'agent-A/1.0', '$http_user_agent intact');
is($a->{host}, '127.0.0.1', '$host intact');
is($a->{arg}, 'LOG1', '$arg_room intact');
is($a->{ck}, $big, 'the cookie from the large header buffer intact');
is($a->{room}, 'LOG1', '$rooms_room');
is($a->{name}, 'Alice', '$rooms_name');
is($a->{player}, $welcome->{data}{you}{id}, '$rooms_player_id is the id '
    . 'in the welcome');
is($a->{in}, 3, '$rooms_messages_in: 3 chats');
is($a->{out}, $alice->{recv_data}, "\$rooms_messages_out: the "
    . "$alice->{recv_data} data frames Alice read");
is($a->{bin}, $alice->{sent_bytes}, "\$rooms_bytes_in: the "
    . "$alice->{sent_bytes} bytes Alice wrote after the request");
is($a->{bout}, $alice->{recv_bytes}, "\$rooms_bytes_out: the "
    . "$alice->{recv_bytes} bytes Alice read after the 101");
is($a->{close}, 1000, '$rooms_close_code 1000');
ok(abs($a->{t} - $a->{rt}) < 0.1,
    "\$rooms_session_time $a->{t} agrees with \$request_time $a->{rt}");

# --- other ways out -------------------------------------------------------

$bob->close;
ok(wait_until(sub { scalar(log_lines('ws.log')) == 2 }),
    'a line once Bob is gone');
my $b = fields((log_lines('ws.log'))[1]);
is($b->{name}, 'Bob', 'the line is Bob\'s');
is($b->{close}, 1006, '$rooms_close_code 1006 without a close frame');
is($b->{in}, 0, 'Bob sent no message');

my $carol = counted(path => '/ws-log', room => 'LOG1', name => 'Carol');
ok(ref $carol, 'Carol upgraded');
$carol->send_counted(op => 1, payload => 'x', rsv => 2);
my ($code) = $carol->expect_close(5);
is($code, 1002, 'a reserved bit gets 1002');
ok(wait_until(sub { scalar(log_lines('ws.log')) == 3 }),
    'a line for Carol');
is(fields((log_lines('ws.log'))[2])->{close}, 1002,
    '$rooms_close_code 1002 after a protocol error');
$carol->close;

# --- logged at the upgrade ------------------------------------------------

my $dave = counted(path => '/ws-up', room => 'LOG2', name => 'Dave');
ok(ref $dave, 'Dave upgraded');
ok(wait_until(sub { scalar(log_lines('up.log')) == 1 }),
    'rooms_log_at upgrade: the line is written while Dave is open');
my $d = fields((log_lines('up.log'))[0]);
is($d->{close}, '-', 'no close code at the upgrade');
is($d->{room}, 'LOG2', '$rooms_room at the upgrade');
$dave->close;

# --- a regex location's capture -------------------------------------------

my $erin = counted(path => '/ws-re/abc', room => 'LOG3', name => 'Erin');
ok(ref $erin, 'Erin upgraded through a regex location');
$erin->close;
ok(wait_until(sub { scalar(log_lines('re.log')) == 1 }), 'a line for Erin');
is((log_lines('re.log'))[0], 'cap=abc room=LOG3 close=1006',
    'the location\'s named capture intact at the close');

# --- limit_conn: the slot is held, and comes back once --------------------

my $f1 = counted(path => '/ws-lim', room => 'LOG4', name => 'Frank');
ok(ref $f1, 'Frank holds the only slot');
is(counted(path => '/ws-lim', room => 'LOG4', name => 'Gus'), 503,
    'a second client gets 503');
$f1->send_counted(op => 8, payload => pack('n', 1000));
ok($f1->wait_eof(5), 'Frank leaves');
ok(wait_until(sub { scalar(log_lines('lim.log')) >= 1 }),
    'Frank\'s line');
my @lim = log_lines('lim.log');
is(scalar(grep { / name=Frank / } @lim), 1, 'one line for Frank');
like($lim[-1], qr/ close=1000$/, 'with his close code');
my $f2 = counted(path => '/ws-lim', room => 'LOG4', name => 'Gus');
ok(ref $f2, 'the slot came back');

# --- a reload closes with 1001, logged -------------------------------------

$t->signal('nginx', 'HUP');
ok(wait_until(sub { grep { / name=Gus / } log_lines('lim.log') },
    timeout => 15), 'Gus\'s line once the old worker lets him go');
like((grep { / name=Gus / } log_lines('lim.log'))[0], qr/ close=1001$/,
    '$rooms_close_code 1001 for the end of a reload\'s drain');
$f2->close;
ok($t->wait_workers(1), 'the old worker is gone');

# --- what keeping the request costs ---------------------------------------

sub open_idle {
    my ($path, $tag) = @_;
    return Rooms::Test::Raw::open_idle(port => $port, path => $path,
        count => $IDLE, tag => $tag, per_room => 1);
}

my $m0 = $t->workers_dirty_kb;
my @up = open_idle('/ws-idle-upgrade', 'U');
my $m1 = $t->workers_dirty_kb;
my @cl = open_idle('/ws-idle-close', 'C');
my $m2 = $t->workers_dirty_kb;

is(scalar(@up) + scalar(@cl), 2 * $IDLE, 2 * $IDLE . ' idle WebSockets');

my $per_up = ($m1 - $m0) * 1024 / $IDLE;
my $per_close = ($m2 - $m1) * 1024 / $IDLE;

diag(sprintf 'worker memory per idle WebSocket: %.0f bytes logged at the '
    . 'upgrade, %.0f bytes logged at the close (+%.0f)',
    $per_up, $per_close, $per_close - $per_up);

Rooms::Test::mem_cmp_ok($per_close - $per_up, '<', 12 * 1024,
    'a request kept for the close costs less than 12 KiB more');

$_->close for @up, @cl;
ok(wait_until(sub { scalar(log_lines('idle.log')) == 2 * $IDLE },
    timeout => 15), "every idle client logged once: $IDLE at the upgrade, "
    . "$IDLE at the close");

$t->finish;
