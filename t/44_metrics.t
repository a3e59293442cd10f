#!/usr/bin/perl

# rooms_metrics (SPEC 5, docs/metrics.md): the page is the Prometheus text
# format that promtool accepts; its counters move by what known traffic
# did, summed over both workers whichever one answers; the sidecar's
# figures come with it; with the sidecar stopped the page still answers,
# with rooms_sidecar_up 0; counters survive a reload.

use strict;
use warnings;

use File::Temp qw(tempfile);
use Test::More;

use Rooms::Test qw(wait_until http_get);

my $MIN = 6;       # clients, at least, and on both workers
my $MAX = 30;
my $CHATS = 10;

my $PROMTOOL = Rooms::Test::which('promtool');

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
$t->start_nginx(workers => 2, reuseport => 1,
    ws => '            rooms_origins https://good.example;',
    server => "        location = /metrics {\n"
        . "            rooms_metrics;\n"
        . "        }\n");

# page() -> (hash of sample => value, body, head)
sub page {
    my ($st, $head, $body) = http_get($t->port, '/metrics');
    return unless defined $st && $st == 200;

    my %s;
    for (split /\n/, $body) {
        next if /^#/ || !/\S/;
        my ($k, $v) = /^(\S+(?:\{[^}]*\})?) (\S+)$/ or next;
        $s{$k} = $v;
    }

    return (\%s, $body, $head);
}

sub promtool_ok {
    my ($body, $what) = @_;

    SKIP: {
        skip 'promtool not installed (Debian package prometheus)', 2
            unless $PROMTOOL;

        my ($fh, $file) = tempfile(UNLINK => 1);
        print {$fh} $body;
        close $fh;

        my $out = `$PROMTOOL check metrics < $file 2>&1`;
        is($? >> 8, 0, "$what: promtool check metrics exits 0");
        is($out, '', "$what: promtool has no complaint")
            or diag($out);
    }
}

my $UP = 'rooms_upgrades_total{code="%s"}';
my $CLOSE = 'rooms_closes_total{code="%s"}';

my ($s0, $body, $head) = page();
ok($s0, 'the metrics page answers 200');
like($head // '', qr{^Content-Type: text/plain; version=0\.0\.4\r?$}mi,
    'Content-Type is the text format 0.0.4');
promtool_ok($body // '', 'live page');
is($s0->{rooms_sidecar_up}, 1, 'rooms_sidecar_up 1');
is($s0->{rooms_workers}, 2, 'both workers counted');
ok(wait_until(sub { (page())[0]{rooms_link_up} == 2 }, timeout => 10),
    'rooms_link_up reaches 2');

# Clients until both workers have some.
my (@c, %pids);
while (@c < $MIN || (keys %pids < 2 && @c < $MAX)) {
    my $n = @c + 1;
    my $c = $t->connect('METRICS', "user$n");
    unless (ref $c) {
        fail("client $n upgrades");
        last;
    }
    my $w = $c->wait_for(type => 'welcome', timeout => 5);
    my ($pid) = (($w // {})->{data}{you}{id} // '') =~ /\.(\d+)\.\d+$/;
    $pids{$pid}++ if defined $pid;
    push @c, $c;
}

my $m = @c;
cmp_ok(scalar keys %pids, '>=', 2,
    "$m clients on both workers (" . join(', ',
        map { "$_: $pids{$_}" } sort keys %pids) . ')');

# $CHATS chats from the clients in turn; everyone gets every one.
my @texts = map { "metrics chat $_" } 1 .. $CHATS;
$c[$_ % $m]->send_json({ type => 'chat', data => { text => $texts[$_] } })
    for 0 .. $CHATS - 1;

my $all = 1;
for my $c (@c) {
    my @got = $c->collect(type => 'chat', count => $CHATS, timeout => 10);
    $all = 0 unless @got == $CHATS;
}
ok($all, "every client received the $CHATS chats");

# The workers count as they write: the last frames may be counted a
# moment after the client read them.
my $s1;
wait_until(sub {
    ($s1) = page();
    return $s1 && $s1->{rooms_messages_sent_total}
        - $s0->{rooms_messages_sent_total} >= $CHATS * $m;
}, timeout => 5);

sub delta { $s1->{$_[0]} - $s0->{$_[0]} }

is(delta(sprintf $UP, 101), $m, "upgrades{101} += $m");
is(delta('rooms_messages_received_total'), $CHATS,
    "messages_received_total += $CHATS");
cmp_ok(delta('rooms_messages_sent_total'), '>=', $CHATS * $m,
    'messages_sent_total counts every chat to every client');
cmp_ok(delta('rooms_received_bytes_total'), '>', 0, 'received bytes move');
cmp_ok(delta('rooms_sent_bytes_total'), '>',
    delta('rooms_messages_sent_total'), 'sent bytes move');
is($s1->{rooms_connections}, $m, "rooms_connections is $m");
is(delta('rooms_sidecar_published_total'), $CHATS,
    "sidecar published_total += $CHATS");
cmp_ok(delta('rooms_sidecar_deliveries_total'), '>=', $CHATS * $m,
    'sidecar deliveries_total counts every member');
is($s1->{rooms_sidecar_rooms}, 1, 'sidecar serves 1 room');
is($s1->{rooms_sidecar_members}, $m, "sidecar serves $m members");
is($s1->{'rooms_redis_up{connection="command"}'}, 1, 'Redis command up');
my $h = 'rooms_redis_command_duration_seconds';
cmp_ok($s1->{"${h}_count"}, '>', 0, 'Redis latency observed');
is($s1->{"${h}_bucket{le=\"+Inf\"}"}, $s1->{"${h}_count"},
    'histogram +Inf bucket is the count');

# Whichever worker answers, the page is the same sum (no traffic now).
my %seen;
for (1 .. 8) {
    my ($s) = page();
    $seen{ join ',', map { $s->{$_} // 'none' }
        sprintf($UP, 101), 'rooms_messages_received_total',
        'rooms_connections' }++;
}
is(scalar keys %seen, 1, 'every answer has the same sums')
    or diag(join "\n", keys %seen);

# Refusals: a foreign origin (403), no room (400).
is($t->connect('METRICS', 'evil',
        headers => { Origin => 'https://evil.example' }), 403,
    'a foreign origin is refused 403');
is($t->connect(undef, 'noroom'), 400, 'no room is refused 400');

my ($s2) = page();
is($s2->{sprintf $UP, 403} - $s1->{sprintf $UP, 403}, 1,
    'upgrades{403} += 1');
is($s2->{sprintf $UP, 400} - $s1->{sprintf $UP, 400}, 1,
    'upgrades{400} += 1');
is($s2->{sprintf $UP, 101}, $s1->{sprintf $UP, 101},
    'refusals are not counted as 101');

# A clean close (1000), and a client that just goes away (1006).
$c[0]->close(1000);
CORE::close($c[1]{sock});
delete $c[1]{sock};

my $s3;
ok(wait_until(sub {
    ($s3) = page();
    return $s3 && $s3->{rooms_connections} == $m - 2;
}, timeout => 10), 'rooms_connections drops by the 2 gone');
is($s3->{sprintf $CLOSE, 1000} - $s2->{sprintf $CLOSE, 1000}, 1,
    'closes{1000} += 1 after a clean close');
is($s3->{sprintf $CLOSE, 1006} - $s2->{sprintf $CLOSE, 1006}, 1,
    'closes{1006} += 1 for a client gone without a close frame');

# The sidecar stops: the page answers with the module's own figures.
is($t->stop_sidecar, 0, 'sidecar stopped');

my $s4;
ok(wait_until(sub {
    ($s4, $body) = page();
    return $s4 && $s4->{rooms_link_up} == 0;
}, timeout => 10), 'rooms_link_up drops to 0');
is($s4->{rooms_sidecar_up}, 0, 'sidecar stopped: rooms_sidecar_up 0');
ok(!exists $s4->{rooms_sidecar_members}, 'and no sidecar figures');
is($s4->{rooms_connections}, $m - 2, 'the clients stay connected');
promtool_ok($body // '', 'page without the sidecar');

# A message sent meanwhile is held, and answered unavailable after
# rooms_hold_time (5 s by default) if no sidecar comes: not awaited here,
# but the hold gauge counts it now.
$c[2]->send_json({ type => 'chat', data => { text => 'held' } });
ok(wait_until(sub { ((page())[0] // {})->{rooms_held_messages} == 1 },
    timeout => 5), 'rooms_held_messages 1 while the sidecar is away');

# Back: each worker's link is made again.
$t->start_sidecar;
my $s5;
ok(wait_until(sub {
    ($s5) = page();
    return $s5 && $s5->{rooms_link_up} == 2 && $s5->{rooms_sidecar_up} == 1;
}, timeout => 15), 'sidecar back: both links up, its figures again');
is($s5->{rooms_link_reconnects_total} - $s4->{rooms_link_reconnects_total},
    2, 'link_reconnects_total += 2 (one per worker)');
ok(wait_until(sub { ((page())[0] // {})->{rooms_held_messages} == 0 },
    timeout => 5), 'the held message went to the sidecar');

# A reload keeps the zone: once the old workers are gone (their clients
# closed first), the new ones show the counts from before and go on.
$_->close for grep { $_->{sock} } @c;
ok(wait_until(sub { ((page())[0] // {})->{rooms_connections} == 0 },
    timeout => 10), 'every client closed');
my ($s6) = page();

my %old = map { $_ => 1 } $t->workers;
ok(kill('HUP', $t->pid('nginx')), 'SIGHUP to nginx');
ok(wait_until(sub {
    my @w = $t->workers;
    return @w == 2 && !grep { $old{$_} } @w;
}, timeout => 15), 'only new workers after the reload');

my ($s7) = page();
is($s7->{sprintf $UP, 101}, $s6->{sprintf $UP, 101},
    'upgrades{101} did not reset on reload');
is($s7->{rooms_messages_received_total},
    $s6->{rooms_messages_received_total},
    'messages_received_total did not reset on reload');
is($s7->{rooms_workers}, 2, 'the old workers are not counted any more');

my $late = wait_until(sub {
    my $c = $t->connect('METRICS', 'late');
    return ref $c ? $c : 0;
}, timeout => 10, interval => 0.1);
ok(ref $late, 'a client joins after the reload');
my ($s8) = page();
is($s8->{sprintf $UP, 101} - $s7->{sprintf $UP, 101}, 1,
    'the new workers count on: upgrades{101} += 1');
is($s8->{rooms_connections}, 1, 'rooms_connections 1');
$late->close if ref $late;

$t->finish;
