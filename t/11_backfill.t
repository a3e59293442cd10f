#!/usr/bin/perl

# Gap-free joins (SPEC 2.4): while a client on a second stack publishes into
# the room continuously, each of many joiners on the first stack gets the
# backfill and then live traffic with no gap, no duplicate and strictly
# increasing ids.  Then since= resume: the exact tail, and reset after
# trimming or when since is above the room's last id.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use Rooms::Test qw(publish_paced);

my $JOINS = 25;
my $PUBLISH = 1500;        # messages, one every 4 ms
my $HISTORY = 20;

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $redis = $ta->start_redis;
my @args = (args => [ '--history-length', $HISTORY, '--rate-limit', 0 ]);
$ta->start_sidecar($redis, @args);
$tb->start_sidecar($redis, @args);
$ta->start_nginx;
$tb->start_nginx;

my $pub = $tb->connect('FLOW', 'pub');
ok(ref $pub, 'publisher joins on stack b')
    or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");
is($pub->recv_json(5)->{type}, 'welcome', 'publisher: welcome');

# The publisher runs in a child: chat "k" for k = 1 .. $PUBLISH, in order.
my $child = publish_paced($pub, $PUBLISH, 0.004);

# Wait until some messages flowed, so joins see a full history.
my $probe = $ta->connect('FLOW', 'probe');
$probe->recv_json(5);
ok($probe->wait_for(type => 'chat', timeout => 5,
    match => sub { $_[0]{data}{k} > $HISTORY + 5 }), 'publishing has begun');
$probe->close;

my ($joins, $ok, $detail) = $ta->check_joins(count => $JOINS, room => 'FLOW',
    history => $HISTORY, stop_at => $PUBLISH);

is($ok, $joins, "every join ($joins) exact: $HISTORY backfilled, "
    . 'then live, no gap, no duplicate, ids increasing') or diag($detail);
cmp_ok($joins, '>=', 15, 'many joins happened while publishing');

waitpid($child, 0);
is($?, 0, 'publisher finished');
$pub->close;

# --- since= ------------------------------------------------------------------

my $c = $ta->connect('SINCE', 'writer');
$c->recv_json(5);
my @ids;
for my $n (1 .. 3) {
    $c->send_json({ type => 'chat', data => { text => '', n => $n } });
    $c->send_json({ type => 'typing', data => {} });
    push @ids, $c->wait_for(type => 'chat', timeout => 5)->{id};
}

sub join_since {
    my ($since) = @_;

    my $j = $ta->connect('SINCE', 'reader', query => { since => $since });
    my $w = $j->recv_json(5);
    my @got;
    while (my $m = $j->recv_json(2)) {
        last if $m->{type} eq 'state';
        push @got, $m;
    }
    $j->close;
    return ($w, @got);
}

my ($w, @got) = join_since($ids[0]);
is($w->{type}, 'welcome', 'since: welcome first');
is_deeply([ map { $_->{type} . ':' . ($_->{data}{n} // '') } @got ],
    [ 'chat:2', 'chat:3' ], 'since=first id: exactly the kept tail after it');

(undef, @got) = join_since($w->{data}{last_id});
is(scalar @got, 0, 'since=last_id: nothing to backfill');

(undef, @got) = join_since(0);
is_deeply([ map { $_->{data}{n} } @got ], [ 1, 2, 3 ],
    'since=0 before any trimming: everything, no reset');

# Trim: HISTORY + 5 more chats.
for my $n (4 .. $HISTORY + 8) {
    $c->send_json({ type => 'chat', data => { text => '', n => $n } });
}
$c->wait_for(type => 'chat', timeout => 5,
    match => sub { $_[0]{data}{n} == $HISTORY + 8 });

($w, @got) = join_since($ids[1]);
is($got[0]{type}, 'reset', 'since below the trimmed part: reset first');
is($got[0]{data}{last_id}, $w->{data}{last_id}, 'reset carries last_id');
is_deeply([ map { $_->{data}{n} } @got[1 .. $#got] ],
    [ 9 .. $HISTORY + 8 ], 'then the last N');

($w, @got) = join_since($w->{data}{last_id} + 1000);
is($got[0] && $got[0]{type}, 'reset', 'since above last_id: reset');
is(scalar @got, $HISTORY + 1, 'then the last N');

$c->close;

$ta->finish;
