#!/usr/bin/perl

# Two nginx + sidecar stacks on one Redis: members of one room on both
# stacks see each other's messages, each exactly once.

use strict;
use warnings;

use Test::More;

use Rooms::Test;

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');

my $redis = $ta->start_redis;
$ta->start_sidecar($redis);
$tb->start_sidecar($redis);
$ta->start_nginx;
$tb->start_nginx;

isnt($ta->server_id, $tb->server_id, 'stacks have distinct server ids');

my @members = (
    [ a1 => $ta ], [ a2 => $ta ], [ b1 => $tb ], [ b2 => $tb ],
);

my %c;

for (@members) {
    my ($name, $stack) = @$_;

    my $c = $stack->connect('CROSS', $name);
    ok(ref $c, "$name upgrades on stack " . $stack->name)
        or BAIL_OUT("upgrade refused: $Rooms::Test::Client::LAST");

    my $w = $c->recv_json(5);
    is($w && $w->{type}, 'welcome', "$name: welcome");
    # ids are minted by the worker: <token>.<worker pid>.<conn>
    my ($pid) = ($w && $w->{data}{you}{id} // '') =~ /^[0-9a-f]{12}\.(\d+)\.\d+$/;
    my $ppid = $pid && (split ' ', (slurp("/proc/$pid/stat") // ''))[3];
    is($ppid, $stack->pid('nginx'),
        "$name: id names a worker of stack " . $stack->name);

    $c{$name} = $c;
}

my @names = map { $_->[0] } @members;

$c{$_}->send_json({ type => 'chat', data => { text => "from-$_" } })
    for @names;

for my $name (@names) {
    my @got = $c{$name}->collect(type => 'chat', count => scalar @names,
        timeout => 10, quiet => 0.3);

    is_deeply([ sort map { $_->{data}{text} // '' } @got ],
        [ sort map { "from-$_" } @names ],
        "$name: every message of both stacks exactly once");

    my %from = map { ($_->{data}{text} // '') => $_->{data}{from} } @got;
    is_deeply([ map { $from{"from-$_"} } @names ], \@names,
        "$name: data.from set by the sender's server");
}

$_->close for values %c;

Rooms::Test::finish();


sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return;
    local $/;
    return scalar <$fh>;
}
