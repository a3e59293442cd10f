#!/usr/bin/perl

# Keepalive: with rooms_ping_interval 1s and rooms_idle_timeout 3s, a
# client that never answers gets pings and then close 1001 "idle
# timeout"; a client that answers the pings stays and can still chat.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test;
use Rooms::Test::Raw;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
my $port = $t->start_nginx(server => <<'EOF');
        location = /ws-ka {
            rooms_websocket;
            rooms_ping_interval 1s;
            rooms_idle_timeout 3s;
        }
EOF

sub join_room {
    my ($name) = @_;

    my $c = Rooms::Test::Raw->connect(port => $port, path => '/ws-ka',
        room => 'KA', name => $name);
    ok(ref $c, "$name upgrades") or BAIL_OUT('upgrade refused');
    my $w = $c->next_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome");

    return $c;
}

my $silent = join_room('silent');
my $start = time;
my $alive = join_room('alive');

my (@pings, $code, $reason, $closed_at);
my $end = $start + 4.5;

while (time < $end) {

    # the silent one only watches
    if (!defined $code) {
        if (my $f = $silent->read_frame(0.05)) {
            push @pings, time - $start if $f->{op} == 9;
            if ($f->{op} == 8) {
                ($code, $reason) = unpack('n a*', $f->{payload});
                $closed_at = time - $start;
            }
        }
    }

    # the other one answers pings (next_json does) and reads everything
    my $m = $alive->next_json(0.05);
    fail('alive client got a close frame') if $alive->{close};
    last if $alive->{close};
}

cmp_ok(scalar @pings, '>=', 2, 'silent client got pings')
    or diag("pings at @pings");
cmp_ok($pings[0] // 0, '>=', 0.8, 'first ping after about 1s')
    or diag("pings at @pings");
is($code, 1001, 'silent client: close 1001');
is($reason, 'idle timeout', 'silent client: reason "idle timeout"');
ok(defined $closed_at && $closed_at > 2.7 && $closed_at < 4.2,
    'silent client closed after about 3s')
    or diag('closed at ' . ($closed_at // 'never'));

# The close wait ends at once when the client answers.
$silent->send_frame(op => 8, payload => pack('n', 1001));
ok($silent->wait_eof(2), 'silent client: connection closed after its close');

cmp_ok(scalar @{ $alive->{pings} || [] }, '>=', 2,
    'answering client got pings too');
ok(!$alive->eof && !$alive->{close}, 'answering client is still connected');

$alive->send_json({ type => 'chat', data => { text => 'still here' } });
my $m = $alive->wait_json(type => 'chat', timeout => 5);
is($m && $m->{data}{text}, 'still here', 'answering client still chats');

$alive->send_frame(op => 8, payload => pack('n', 1000));
my ($c) = $alive->expect_close(5);
is($c, 1000, 'answering client closes cleanly');

$t->finish;
