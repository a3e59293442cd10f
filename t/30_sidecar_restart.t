#!/usr/bin/perl

# A sidecar restart loses nothing (SPEC 5, issue 8).  Stack a: five
# clients in a room and a publisher (20 msg/s); stack b, on the same
# Redis: a publisher (40 msg/s).  a's sidecar is killed (kill -9, back
# 0.5 s later; SIGTERM, back at once; kill -9, back after 3 s with a's
# publisher at 50 msg/s: 150 held messages, more than a rate-limit burst,
# and more than the default history, which is raised here) under that
# traffic.  Exact
# accounting: nobody is disconnected; every client gets every published
# chat once, in id order (b's published while a's sidecar was away come
# from history); each of a's publisher's messages is answered once,
# delivered or `unavailable`; no `state` ever lacks a player who never
# left; player ids do not change.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use Rooms::Test;
use Rooms::Test::Traffic;

my $ta = Rooms::Test->new(name => 'a');
my $tb = Rooms::Test->new(name => 'b');
my $redis = $ta->start_redis;
my @args = (args => [ '--history-length', 500 ]);
$ta->start_sidecar($redis, @args);
$tb->start_sidecar($redis, @args);
$ta->start_nginx;
$tb->start_nginx;


sub join_room {
    my ($t, $name) = @_;

    my $c = $t->connect('RESTART', $name);
    ref $c or BAIL_OUT("$name: upgrade refused: $Rooms::Test::Client::LAST");
    my $w = $c->recv_json(5);
    ($w && $w->{type} eq 'welcome') or BAIL_OUT("$name: no welcome");

    return ($c, $w);
}


my $tr = Rooms::Test::Traffic->new;
my @receivers = map { "a$_" } 1 .. 5;
my @ids;

for my $name (@receivers) {
    my ($c, $w) = join_room($ta, $name);
    $tr->add($name => $c, welcome => $w);
    push @ids, $w->{data}{you}{id};
}

for ([pa => $ta, 20], [pb => $tb, 40]) {
    my ($name, $t, $rate) = @$_;
    my ($c, $w) = join_room($t, $name);
    $tr->add($name => $c, welcome => $w, rate => $rate);
    push @ids, $w->{data}{you}{id};
}

# Every join's state has gone by before the accounting starts.
ok(Rooms::Test::wait_until(sub {
    my $s = $tr->client('a1')->{c}->wait_for(type => 'state', timeout => 0.2);
    return $s && @{ $s->{data}{players} } == @ids;
}, timeout => 5), 'a1 sees all 7 players');
$tr->drain(0.3);
$_->{frames} = [] for map { $tr->client($_) } @receivers, qw(pa pb);


my %events = (
    'kill -9, back after 0.5 s' => {
        0.8 => sub { $ta->kill_proc('sidecar', 'KILL') },
        1.3 => sub { $ta->start_sidecar($redis, @args) },
    },
    'SIGTERM, back at once' => {
        0.8 => sub {
            $ta->kill_proc('sidecar', 'TERM');
            $ta->start_sidecar($redis, @args);
        },
    },
    'kill -9, back after 3 s, 50 msg/s' => {
        0.8 => sub { $ta->kill_proc('sidecar', 'KILL') },
        3.8 => sub { $ta->start_sidecar($redis, @args) },
    },
);

for my $what (sort keys %events) {
    my $log_from = -s $ta->sidecar_log;
    my $long = $what =~ /3 s/;
    $tr->client('pa')->{rate} = $long ? 50 : 20;

    $tr->run($long ? 5 : 3, at => $events{$what});
    $tr->drain(1);

    note("--- $what");
    my $st = $tr->check_room(receivers => \@receivers,
        publishers => [qw(pa pb)], players => \@ids);

    for my $p (qw(pa pb)) {
        my $s = $st->{$p};
        diag("$what: $p sent $s->{sent}, delivered $s->{delivered}, "
            . "refused $s->{refused}, lost $s->{lost}");
    }
    is($st->{pb}{refused}, 0, "$what: nothing of b's was refused");
    is($st->{pa}{refused}, 0, "$what: nothing of a's was refused (held, "
        . 'then published in order, not rate limited)');

    my $log = Rooms::Test::tail($ta->sidecar_log, 400);
    like($log, qr/open link=\d+ conn=\d+ room=RESTART id=\S+ name="a1" resume/,
        "$what: a1 was resumed, not joined again");
    unlike(substr(slurp($ta->sidecar_log), $log_from),
        qr/cleared players=[1-9]/, "$what: no player reaped");

    # the next round starts from a clean record
    $_->{frames} = [], $_->{sent} = 0 for map { $tr->client($_) }
        @receivers, qw(pa pb);
}

Rooms::Test::finish();


sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}
