#!/usr/bin/perl

# Two rooms on one server: messages never leak from one room to the other.

use strict;
use warnings;

use Test::More;

use Rooms::Test;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
$t->start_nginx;

my %room = (alice => 'ROOMA', bob => 'ROOMA', carol => 'ROOMB',
    dave => 'roomb');
my %c;

for my $who (sort keys %room) {
    my $c = $t->connect($room{$who}, ucfirst $who);
    ok(ref $c, "$who upgrades into $room{$who}")
        or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");

    my $w = $c->recv_json(5);
    is($w && $w->{type}, 'welcome', "$who: welcome first");
    is($w && $w->{data}{room}, uc $room{$who},
        "$who: welcome room is the upper-cased code");

    $c{$who} = $c;
}

# Everyone sends one message, then one "end" marker; a member is done once
# it has its room's markers, plus a short quiet time for late leaks.

for my $who (sort keys %c) {
    $c{$who}->send_json({ type => 'chat', data => { text => "msg-$who" } });
}
for my $who (sort keys %c) {
    $c{$who}->send_json({ type => 'chat', data => { text => "end-$who" } });
}

for my $who (sort keys %c) {
    my $r = uc $room{$who};
    my @mates = sort grep { uc $room{$_} eq $r } keys %room;
    my @others = sort grep { uc $room{$_} ne $r } keys %room;

    my @got = map { $_->{data}{text} }
        $c{$who}->collect(type => 'chat', count => 2 * @mates,
            timeout => 5, quiet => 0.3);

    is_deeply([ sort @got ],
        [ sort map { ("msg-$_", "end-$_") } @mates ],
        "$who ($r): exactly the messages of $r");

    my %seen = map { $_ => 1 } @got;
    ok(!(grep { $seen{"msg-$_"} || $seen{"end-$_"} } @others),
        "$who ($r): nothing from the other room");
}

$_->close for values %c;

$t->finish;
