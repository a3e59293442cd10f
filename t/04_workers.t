#!/usr/bin/perl

# One room whose members sit on both nginx workers (reuseport): every
# message reaches every member exactly once.

use strict;
use warnings;

use Test::More;

use Rooms::Test;

my $MIN = 12;
my $MAX = 40;

my $t = Rooms::Test->new;
$t->start_redis;
$t->start_sidecar;
$t->start_nginx(workers => 2, reuseport => 1);

my (@c, %pids);
my $welcomed = 0;

# Open clients until there are at least $MIN and both workers have some.
while (@c < $MIN || (keys %pids < 2 && @c < $MAX)) {
    my $n = @c + 1;
    my $c = $t->connect('MANY', "user$n");
    unless (ref $c) {
        fail("client $n upgrades");
        diag("upgrade refused: $Rooms::Test::Client::LAST");
        last;
    }

    my $w = $c->recv_json(5);
    if ($w && ($w->{type} // '') eq 'welcome') {
        $welcomed++;
        my ($pid) = ($w->{data}{you}{id} // '') =~ /\.(\d+)\.\d+$/;
        $pids{$pid}++ if defined $pid;
    }

    push @c, $c;
}

my $n = @c;
is($welcomed, $n, "all $n clients got a welcome");
cmp_ok(scalar keys %pids, '>=', 2,
    "members sit on at least 2 workers (" . join(', ',
        map { "$_: $pids{$_}" } sort keys %pids) . ")");

my @texts = map { "m$_-" . int(rand 1e9) } 0 .. $n - 1;

$c[$_]->send_json({ type => 'chat', data => { text => $texts[$_] } })
    for 0 .. $n - 1;

my ($all, $once) = (1, 1);

my @got;
for my $i (0 .. $n - 1) {
    $got[$i] = [ $c[$i]->collect(type => 'chat', count => $n,
        timeout => 10, quiet => $i == $n - 1 ? 0.5 : 0) ];
}

# After the last client's quiet time, any duplicate is already buffered.
push @{ $got[$_] }, $c[$_]->collect(type => 'chat', timeout => 0.05)
    for 0 .. $n - 1;

for my $i (0 .. $n - 1) {
    my @got = @{ $got[$i] };

    my %count;
    $count{ $_->{data}{text} // '' }++ for @got;

    my @missing = grep { !$count{$_} } @texts;
    my @dup = grep { $count{$_} > 1 } keys %count;

    if (@missing) {
        $all = 0;
        diag("client $i missed " . scalar(@missing) . " message(s)");
    }
    if (@dup || @got != $n) {
        $once = 0;
        diag("client $i got " . scalar(@got) . " messages, duplicates: @dup");
    }
}

ok($all, "every client received all $n messages");
ok($once, 'every client received each message exactly once');

$_->close for @c;

$t->finish;
