package Rooms::Test::Drain;

# A graceful shutdown of nginx under load, and its accounting (SPEC 5,
# "nginx reload and binary upgrade"); shared by t/25_reload.t (SIGHUP)
# and t/27_binary_upgrade.t (USR2, WINCH, QUIT).
#
#   run_drain(t => $t, pub => $tb, trigger => sub { ...; return time },
#             drain => 3, spread => 2);
#
# Clients in a room on the workers of stack `t`; on stack `pub` (same
# Redis) a publisher sends chat {k} at 20 msg/s through the whole
# shutdown and a watcher records the room's chat ids.  `trigger` sends
# the signals and returns the time the old workers were told to shut
# down; `during` (optional) runs once the new clients are in.  Checks:
# - new clients land on new workers;
# - no old client is closed during the drain: each keeps receiving, in
#   id order, and can still send (the new clients get its chat);
# - once worker_shutdown_timeout (`drain`) ends the drain, the old
#   clients get 1001 "server shutting down" spread over
#   rooms_shutdown_spread (`spread`);
# - each reconnects with since=<last id it saw> and gets exactly what it
#   missed: its chat ids before and after are the watcher's;
# - the old workers exit soon after their last client;
# - GET /rooms counts every connection once.
#
# Every wait reads all clients (so close times are measured when the
# frames arrive) and is bounded.

use strict;
use warnings;

use Exporter qw(import);
use JSON::PP ();
use List::Util qw(max min);
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(time);

use Rooms::Test qw(wait_until http_get publish_paced process_alive);

our @EXPORT_OK = qw(run_drain join_client pump);

my $RATE = 20;


# join_client($stack, $room, $name, %query): a client record after its
# welcome (retrying a 503 while new workers connect to the sidecar), or
# undef.  The record collects what pump() reads.
sub join_client {
    my ($t, $room, $name, %query) = @_;

    my $c;
    wait_until(sub {
        $c = $t->connect($room, $name, query => \%query);
        return ref $c || $c != 503;
    }, timeout => 5, interval => 0.1);

    return unless ref $c;

    my $w = $c->recv_json(5);
    return unless $w && ($w->{type} // '') eq 'welcome';

    my $last = $w->{data}{last_id} // 0;

    return {
        name => $name, c => $c, welcome => $w, join_last => $last,
        last_id => $last, ids => [], chats => [], texts => [], errors => [],
        types => [], maxk => 0,
    };
}


# pump(\@records, $until, $timeout): reads every open client until
# $until->() is true (returns 1) or $timeout seconds pass (returns 0).
sub pump {
    my ($recs, $until, $timeout) = @_;

    my $deadline = time + $timeout;

    while (1) {
        return 1 if $until->();
        return 0 if time >= $deadline;

        for my $r (@$recs) {
            my $c = $r->{c};
            next if $r->{closed_at};

            while (my $m = $c->recv_json(0.002)) {
                _take($r, $m);
            }

            if ($c->closed || $c->{eof}) {
                $r->{closed_at} = time;
                $r->{close_code} = $c->close_code;
                $r->{close_reason} = $c->{close_reason};
            }
        }
    }
}


sub _take {
    my ($r, $m) = @_;

    my $type = $m->{type} // '';

    push @{ $r->{types} }, $type;
    push @{ $r->{errors} }, $m if $type eq 'error';

    return unless defined $m->{id};

    push @{ $r->{ids} }, $m->{id};
    $r->{last_id} = $m->{id};

    return unless $type eq 'chat';

    push @{ $r->{chats} }, $m->{id};
    push @{ $r->{texts} }, $m->{data}{text} if defined $m->{data}{text};
    $r->{maxk} = max($r->{maxk}, $m->{data}{k} // 0);
    $r->{last_chat_at} = time;
}


sub _shutting_down {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/cmdline" or return 1;
    my $title = <$fh> // '';

    return $title =~ /shutting down/;
}


sub _increasing {
    my ($ids) = @_;
    return !grep { $ids->[$_] <= $ids->[$_ - 1] } 1 .. $#$ids;
}


sub run_drain {
    my (%o) = @_;

    my ($t, $pub, $drain, $spread) = @o{qw(t pub drain spread)};
    my $room = $o{room} // 'DRAIN';
    my $n = $o{clients} // 8;
    my $news = $o{new_clients} // 2;
    my $count = int(($drain + $spread + 5) * $RATE);

    my @old_workers = $t->workers('nginx');
    my %is_old = map { $_ => 1 } @old_workers;

    diag('old workers: ' . join(', ', @old_workers));

    my @old = grep { $_ } map { join_client($t, $room, "old$_") } 1 .. $n;
    is(scalar @old, $n, "$n old clients joined") or return;

    my @where = map { $t->worker_of($_->{c}) // 0 } @old;
    ok(!grep({ !$is_old{$_} } @where), 'old clients are on the old workers')
        or diag("workers of the old clients: @where");

    my $watch = join_client($pub, $room, 'watcher');
    my $pc = $pub->connect($room, 'publisher');
    ok($watch && ref $pc && $pc->recv_json(5), 'watcher and publisher join')
        or return;

    my @all = (@old, $watch);
    my $child = publish_paced($pc, $count, 1 / $RATE);
    my $published = 0;

    ok(pump(\@all, sub { !grep { $_->{maxk} < 5 } @all }, 10),
        "the publisher's chats flow ($RATE msg/s)");

    my $t_sig = $o{trigger}->();

    ok(pump(\@all, sub { !grep { !_shutting_down($_) } @old_workers }, 10),
        'the old workers are shutting down');

    my @new = grep { $_ } map { join_client($t, $room, "new$_") } 1 .. $news;
    my @nw = map { $t->worker_of($_->{c}) // 0 } @new;
    ok(@new == $news && !grep({ !$_ || $is_old{$_} } @nw),
        'new clients land on new workers') or diag("their workers: @nw");
    push @all, @new;

    $o{during}->() if $o{during};

    # the old clients talk in the middle of the drain

    pump(\@all, sub { time >= $t_sig + $drain / 3 }, $drain);
    ok(!grep({ $_->{closed_at} } @old), 'no old client closed yet');
    $_->{c}->send_json({ type => 'chat', data => { text => "from-$_->{name}" } })
        for @old;

    # the drain ends; every closed client comes back with since=

    my $gone_at;
    my $gone = sub {
        $gone_at //= time unless grep { process_alive($_) } @old_workers;
        return $gone_at;
    };

    my $closed = pump(\@all, sub {
        $gone->();
        for my $r (grep { $_->{closed_at} && !$_->{again} } @old) {
            $r->{again} = join_client($t, $room, $r->{name},
                since => $r->{last_id}) or next;
            push @all, $r->{again};
        }
        return !grep { !$_->{again} } @old;
    }, $drain + $spread + 10);
    ok($closed, 'every old client was closed and came back');

    my @at = sort { $a <=> $b } map { $_->{closed_at} // 0 } @old;
    my ($first, $last) = ($at[0] - $t_sig, $at[-1] - $t_sig);
    diag(sprintf('old clients closed %.2f .. %.2f s after the signal '
        . '(drain %ss, spread %ss)', $first, $last, $drain, $spread));

    cmp_ok($first, '>=', $drain, 'no old client closed during the drain');
    is(scalar(grep { ($_->{close_code} // 0) == 1001
            && ($_->{close_reason} // '') eq 'server shutting down' } @old),
        $n, 'every old client got close 1001 "server shutting down"');
    cmp_ok($last - $first, '>=', 0.5 * $spread,
        'the closes are spread over the window');
    cmp_ok($last - $first, '<=', $spread + 1, '... and within it');
    cmp_ok($last, '<=', $drain + $spread + 2,
        'the drain ends at worker_shutdown_timeout');

    my @errors = map { @{ $_->{errors} } } @old;
    ok(!@errors, 'no old client got an error')
        or diag(JSON::PP->new->canonical->encode(\@errors));
    ok(!grep({ ($_->{last_chat_at} // 0) < $_->{closed_at} - 0.5 } @old),
        'every old client got chats until its close');
    ok(!grep({ !_increasing($_->{ids}) } @old),
        'every old client got its messages in id order');

    my @said = sort map { "from-$_->{name}" } @old;
    ok(!grep({ my %t = map { $_ => 1 } @{ $_->{texts} };
               grep { !$t{$_} } @said } @old, @new),
        'the old clients could send: their chats reached everyone, '
        . 'new workers included');

    # the rest of the publisher's run, then the accounting

    my @back = map { $_->{again} } grep { $_->{again} } @old;
    ok(pump(\@all, sub {
        $gone->();
        $published ||= waitpid($child, WNOHANG) == $child;
        return $published && !grep { $_->{maxk} < $count } $watch, @back;
    }, $count / $RATE + 10), "the watcher and the returned clients got "
        . "all $count chats");
    unless ($published) {
        kill 'KILL', $child;
        waitpid($child, 0);
    }

    my $exact = 0;
    for my $r (grep { $_->{again} } @old) {
        my $floor = max($r->{join_last}, $watch->{join_last});
        my @got = grep { $_ > $floor }
            @{ $r->{chats} }, @{ $r->{again}{chats} };
        my @want = grep { $_ > $floor } @{ $watch->{chats} };

        if ("@got" eq "@want") {
            $exact++;
            next;
        }

        my ($i) = grep { ($got[$_] // -1) != ($want[$_] // -1) }
            0 .. max($#got, $#want);
        diag(sprintf('%s: since=%d, %d chats, the watcher %d; first '
            . 'difference at %d: got %s, want %s', $r->{name},
            $r->{last_id}, scalar @got, scalar @want, $i,
            $got[$i] // '-', $want[$i] // '-'));
    }
    is($exact, $n, 'every old client, before its close and after its '
        . 'return with since=, got exactly the chats the watcher got');
    ok(!grep({ grep { $_ eq 'reset' } @{ $_->{types} } } @back),
        'no reset on return');

    ok(pump(\@all, $gone, 10), 'the old workers exited')
        or diag('still running: '
            . join(' ', grep { process_alive($_) } @old_workers));
    diag(sprintf('old workers gone %.2f s after their last client was told',
        ($gone_at // time) - $at[-1]));
    cmp_ok(($gone_at // time) - $at[-1], '<', 3,
        'the old workers exit once their last client is gone');

    # every connection once: old ones returned, new ones, watcher,
    # publisher; none of the old connections is left behind

    my $want = @back + @new + 2;
    my $got;
    wait_until(sub {
        my ($s, undef, $body) = http_get($t->port, '/rooms');
        return 0 unless defined $s && $s == 200;
        my $rooms = eval { JSON::PP::decode_json($body) } || [];
        ($got) = map { $_->{count} } grep { $_->{code} eq $room } @$rooms;
        return defined $got && $got == $want;
    }, timeout => 5);
    is($got, $want, "GET /rooms counts $want connections in $room");

    return { all => \@all, new => \@new, back => \@back, publisher => $pc };
}


1;
