#!/usr/bin/perl

# rooms_access_log (issue 11, item 6): a WebSocket's line written at its
# close, without keeping its request until then.  Asserts:
#   - no line while the client is open; one at the close, with the
#     values of the upgrade ($request, $status, headers, $rooms_room,
#     $rooms_player_id) and those of the close ($rooms_session_time, the
#     counters, $rooms_close_code, $time_local, $msec, $bytes_sent);
#   - values escaped as nginx's log does ('"', '\', non-ASCII as \xXX),
#     "-" for a variable not found; a format of several strings;
#   - close codes 1000, 1006 (no close frame), 1001 (a reload's drain);
#   - rooms_access_log makes nginx's own access_log line of the location
#     an upgrade one (rooms_log_at's default there);
#   - "nginx -s reopen" (USR1): after a rename, the next line goes to a
#     new file;
#   - a write error is logged once; a path that cannot be opened, a bad
#     format and an unknown variable fail "nginx -t" with a clear message;
#   - an idle WebSocket with rooms_access_log costs the worker about what
#     it costs with "rooms_log_at upgrade" (not the 8 KiB of a request
#     kept for the close: t/46).

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(wait_until);
use Rooms::Test::Raw;
use Rooms::Test::Counted;

my $IDLE = 100;

my $t = Rooms::Test->new;
my $dir = $t->dir;

# conf/nginx.conf's fields, plus what this test looks at
my $fmt = q{'$remote_addr [$time_local] "$request" $status '
            'room=$rooms_room name=$rooms_name player=$rooms_player_id '
            'time=$rooms_session_time '
            'in=$rooms_messages_in/$rooms_bytes_in '
            'out=$rooms_messages_out/$rooms_bytes_out '
            'close=$rooms_close_code ua="$http_user_agent" '
            'ref=$http_referer sent=$bytes_sent ms=$msec '
            'iso=${time_iso8601}'};


# conf/nginx.conf's, for the memory of an idle WebSocket
my $prod = q{'$remote_addr [$time_local] "$request" $status '
             'room=$rooms_room player=$rooms_player_id '
             'time=$rooms_session_time '
             'in=$rooms_messages_in/$rooms_bytes_in '
             'out=$rooms_messages_out/$rooms_bytes_out '
             'close=$rooms_close_code'};


# --- nginx -t --------------------------------------------------------------

my ($rc, $out) = $t->nginx_t("rooms_access_log $dir/ok.log $fmt;");
is($rc, 0, 'nginx -t accepts the format') or diag($out);

($rc, $out) = $t->nginx_t(
    "rooms_access_log $dir/no/such/dir/x.log '\$rooms_room';");
isnt($rc, 0, 'nginx -t fails on a log file that cannot be opened');
like($out, qr{open\(\) "\Q$dir\E/no/such/dir/x\.log" failed},
    '... naming the file') or diag($out);

($rc, $out) = $t->nginx_t("rooms_access_log $dir/x.log '\${rooms_room';");
isnt($rc, 0, 'an unclosed "${" is refused');
like($out, qr/the closing bracket in "rooms_room" variable is missing/,
    '... with a clear message') or diag($out);

($rc, $out) = $t->nginx_t(
    "rooms_access_log $dir/x.log 'a=\$no_such_var';");
isnt($rc, 0, 'an unknown variable is refused');
like($out, qr/unknown "no_such_var" variable/, '... by its name')
    or diag($out);

($rc, $out) = $t->nginx_t("rooms_access_log $dir/x.log;");
isnt($rc, 0, 'a path without a format is refused');
like($out, qr/needs a format/, '... saying so') or diag($out);


# --- the stack ---------------------------------------------------------------

$t->start_redis;
$t->start_sidecar;

my $port = $t->start_nginx(workers => 1, connections => 2048,
    main => 'worker_shutdown_timeout 1s;', http => <<"EOF", server => <<"EOF");
    rooms_shutdown_spread 100ms;
    log_format up '\$status \$rooms_room close=\$rooms_close_code';
EOF
        location = /ws-ral {
            rooms_websocket;
            rooms_access_log $dir/ral.log $fmt;
        }

        location = /ws-both {
            rooms_websocket;
            access_log $dir/nginx.log up;
            rooms_access_log $dir/both.log '\$rooms_room \$rooms_close_code';
        }

        location = /ws-full {
            rooms_websocket;
            rooms_access_log /dev/full '\$rooms_room';
        }

        location = /ws-idle-upgrade {
            rooms_websocket;
            rooms_log_at upgrade;
        }

        location = /ws-idle-ral {
            rooms_websocket;
            rooms_access_log $dir/idle.log $prod;
        }
EOF


sub log_lines {
    my ($file) = @_;
    return Rooms::Test::read_lines($file =~ m{^/} ? $file : "$dir/$file");
}


sub fields {
    my ($line) = @_;
    my %f = $line =~ /(\w+)=("[^"]*"|\S*)/g;
    s/^"(.*)"$/$1/ for values %f;
    @f{qw(addr tlocal request status)} =
        $line =~ /^(\S+) \[([^\]]+)\] "([^"]*)" (\d+) /;
    return \%f;
}


# a client that counts its bytes after the 101, both ways
sub counted {
    return Rooms::Test::Counted->connect(port => $port, @_);
}


# --- a full session, closed cleanly --------------------------------------

my $ua = qq{agent "A" \\ caf\xc3\xa9};

my $t0 = time;
my $alice = counted(path => '/ws-ral', room => 'RAL1', name => 'Alice',
    headers => { 'User-Agent' => $ua });
ok(ref $alice, 'Alice upgraded');
my $welcome = $alice->recv_json(sub { $_[0]{type} eq 'welcome' });

for my $i (1 .. 3) {
    $alice->send_counted(op => 1,
        payload => qq({"type":"chat","data":{"text":"m$i"}}));
}

ok($alice->recv_json(sub { ($_[0]{data}{text} // '') eq 'm3' }),
    'Alice saw her third message');
sleep 0.3;
is(scalar(log_lines('ral.log')), 0, 'no line while Alice is open');

$alice->send_counted(op => 8, payload => pack('n', 1000));
while (my $f = $alice->recv_counted(5)) {
    last if $f->{op} == 8;
}
ok($alice->wait_eof(5), 'the server ends the connection');
my $t1 = time;

ok(wait_until(sub { scalar(log_lines('ral.log')) == 1 }),
    'one line once Alice has closed');
my $line = (log_lines('ral.log'))[0] // '';
my $a = fields($line);
note($line);

is($a->{addr}, '127.0.0.1', '$remote_addr');
is($a->{status}, 101, '$status 101');
is($a->{request}, 'GET /ws-ral?room=RAL1&name=Alice HTTP/1.1', '$request');
is($a->{room}, 'RAL1', '$rooms_room');
is($a->{name}, 'Alice', '$rooms_name');
is($a->{player}, $welcome->{data}{you}{id},
    '$rooms_player_id is the welcome\'s');
is($a->{in}, "3/$alice->{sent_bytes}",
    "\$rooms_messages_in/\$rooms_bytes_in: 3 chats, $alice->{sent_bytes} "
    . 'bytes');
is($a->{out}, "$alice->{recv_data}/$alice->{recv_bytes}",
    "\$rooms_messages_out/\$rooms_bytes_out: $alice->{recv_data} frames, "
    . "$alice->{recv_bytes} bytes");
is($a->{close}, 1000, '$rooms_close_code 1000');
ok($a->{time} >= 0.3 && $a->{time} <= $t1 - $t0 + 0.1,
    "\$rooms_session_time $a->{time} is the session's (0.3 s sleep, "
    . sprintf('%.3f s in all)', $t1 - $t0));
ok($a->{ms} >= $t0 + 0.3 && $a->{ms} <= time + 0.01,
    "\$msec $a->{ms} is the time of the close");
ok($a->{sent} > $alice->{recv_bytes}, "\$bytes_sent $a->{sent}: the 101 and "
    . 'the frames');
like($a->{time}, qr/^\d+\.\d{3}$/, 'session time with milliseconds');
like($line, qr{\[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]},
    '$time_local');
like($a->{iso}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/,
    '${time_iso8601}');
is($a->{ua}, 'agent \x22A\x22 \x5C caf\xC3\xA9',
    '"\\" and non-ASCII bytes escaped as \xXX');
is($a->{ref}, '-', '"-" for a header not sent');

# --- other ways out -------------------------------------------------------

my $bob = counted(path => '/ws-ral', room => 'RAL1', name => 'Bob');
ok(ref $bob, 'Bob upgraded');
$bob->recv_json(sub { $_[0]{type} eq 'welcome' });
$bob->close;
ok(wait_until(sub { scalar(log_lines('ral.log')) == 2 }),
    'a line once Bob is gone');
my $b = fields((log_lines('ral.log'))[1] // '');
is($b->{name}, 'Bob', 'the line is Bob\'s');
is($b->{close}, 1006, '$rooms_close_code 1006 without a close frame');

# --- nginx's own line, at the upgrade -------------------------------------

my $carol = counted(path => '/ws-both', room => 'RAL2', name => 'Carol');
ok(ref $carol, 'Carol upgraded');
ok(wait_until(sub { scalar(log_lines('nginx.log')) == 1 }),
    'with rooms_access_log, access_log writes its line at the upgrade');
is((log_lines('nginx.log'))[0], '101 RAL2 close=-', '... with no close code');
is(scalar(log_lines('both.log')), 0, 'and rooms_access_log none yet');
$carol->close;
ok(wait_until(sub { scalar(log_lines('both.log')) == 1 }),
    'rooms_access_log\'s line at the close');
is((log_lines('both.log'))[0], 'RAL2 1006', '... with the close code');
is(scalar(log_lines('nginx.log')), 1, 'nginx\'s line was written once');

# --- nginx -s reopen --------------------------------------------------------

my $reopened = sub {
    scalar grep { /reopening logs/ } log_lines($t->error_log);
};
my $reopens = $reopened->();
rename "$dir/ral.log", "$dir/ral.log.1" or die "rename: $!";
$t->signal('nginx', 'USR1');
ok(wait_until(sub { -e "$dir/ral.log" }), 'USR1 makes a new ral.log');
# the master, then the worker, say so before they reopen
ok(wait_until(sub { $reopened->() >= $reopens + 2 }),
    'the worker reopens its logs too');

my $dave = counted(path => '/ws-ral', room => 'RAL3', name => 'Dave');
ok(ref $dave, 'Dave upgraded');
$dave->close;
ok(wait_until(sub { scalar(log_lines('ral.log')) == 1 }),
    'Dave\'s line is in the new file');
like((log_lines('ral.log'))[0] // '', qr/ name=Dave /, '... and is his');
is(scalar(log_lines('ral.log.1')), 2, 'the old file kept its two lines');

# --- a write error is logged once -------------------------------------------

for my $n (1 .. 3) {
    my $c = counted(path => '/ws-full', room => "FULL$n", name => "f$n");
    ok(ref $c, "client $n of /dev/full upgraded");
    $c->close;
}

my $failed = qr{write\(\) to "/dev/full" failed};
ok(wait_until(sub { grep { /$failed/ } log_lines($t->error_log) }),
    'a write error is logged');
sleep 0.5;
my @full = grep { /$failed/ } log_lines($t->error_log);
is(scalar(@full), 1, 'once for three lines') or diag(join "\n", @full);
like($full[0] // '', qr/\(28: No space left on device\)/, '... with errno');

# the expected [alert], so that finish() looks for others
Rooms::Test::write_file($t->error_log,
    join '', map { "$_\n" } grep { !/$failed/ } log_lines($t->error_log));

# --- a reload's drain -------------------------------------------------------

my $erin = counted(path => '/ws-ral', room => 'RAL4', name => 'Erin');
ok(ref $erin, 'Erin upgraded');
$t->signal('nginx', 'HUP');
ok(wait_until(sub { grep { / name=Erin / } log_lines('ral.log') },
    timeout => 15), 'Erin\'s line once the old worker lets her go');
like((grep { / name=Erin / } log_lines('ral.log'))[0] // '',
    qr/ close=1001 /, '$rooms_close_code 1001 at the end of the drain');
$erin->close;
ok($t->wait_workers(1), 'the old worker is gone');

# --- memory per idle WebSocket ----------------------------------------------

sub open_idle {
    my ($path, $tag) = @_;
    return Rooms::Test::Raw::open_idle(port => $port, path => $path,
        count => $IDLE, tag => $tag, per_room => 10);
}

# a first batch (and its room) warms the worker up: the read buffer,
# the heap; then two rounds of each kind, added up
my @warm = open_idle('/ws-idle-upgrade', 'W');
my (@up, @ral);
my ($kb_up, $kb_ral) = (0, 0);

for my $round (1 .. 2) {
    my $m0 = $t->workers_dirty_kb;
    push @up, open_idle('/ws-idle-upgrade', "U$round");
    my $m1 = $t->workers_dirty_kb;
    push @ral, open_idle('/ws-idle-ral', "R$round");
    my $m2 = $t->workers_dirty_kb;
    $kb_up += $m1 - $m0;
    $kb_ral += $m2 - $m1;
}

is(scalar(@up) + scalar(@ral), 4 * $IDLE, 4 * $IDLE . ' idle WebSockets');

my $per_up = $kb_up * 1024 / (2 * $IDLE);
my $per_ral = $kb_ral * 1024 / (2 * $IDLE);

diag(sprintf 'worker memory per idle WebSocket: %.0f bytes with '
    . '"rooms_log_at upgrade" and no line, %.0f bytes with '
    . 'rooms_access_log and conf/nginx.conf\'s format (%+.0f)',
    $per_up, $per_ral, $per_ral - $per_up);

Rooms::Test::mem_cmp_ok($per_ral - $per_up, '<', 512,
    'rooms_access_log costs less than 512 bytes more per idle WebSocket');

$_->close for @warm, @up, @ral;
ok(wait_until(sub { scalar(log_lines('idle.log')) == 2 * $IDLE },
    timeout => 15), 2 * $IDLE . " lines for as many idle clients");
is(scalar(grep { / close=1006$/ } log_lines('idle.log')), 2 * $IDLE,
    '... each with its close code');

$t->finish;
