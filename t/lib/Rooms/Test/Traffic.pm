package Rooms::Test::Traffic;

# Steady traffic through a room while something restarts, and the exact
# accounting of what every client got (SPEC 2.2-2.4, 5).  One process, one
# select loop over every client: publishers send paced chats, each with a
# `ref`; every client's frames are recorded as they come.  Nothing sleeps
# but the loop's own wait for the next frame or the next send.
#
#   my $tr = Rooms::Test::Traffic->new;
#   $tr->add(a1 => $client);                      # a receiver
#   $tr->add(pa => $client, rate => 20);          # also a publisher
#   $tr->run(4, at => { 1.0 => sub { ... } });    # 4 s, an event at 1 s
#   $tr->drain(3);                                # until quiet
#   $tr->check_room(\@receivers, \@publishers);   # the assertions

use strict;
use warnings;

use IO::Select;
use Test::More;
use Time::HiRes qw(time);


sub new {
    my ($class) = @_;
    return bless { clients => {}, order => [] }, $class;
}


# add(name => client, rate => msgs/s (0: receiver only)).  The client
# has read its welcome; its id is taken from there by the caller
# (set_id) or from the welcome passed as `welcome`.
sub add {
    my ($self, $name, $c, %o) = @_;

    $self->{clients}{$name} = {
        c => $c, rate => $o{rate} // 0, sent => 0, next => 0,
        frames => [], id => $o{welcome} ? $o{welcome}{data}{you}{id} : undef,
        last_id => $o{welcome} ? $o{welcome}{data}{last_id} : 0,
    };
    push @{ $self->{order} }, $name;
}


sub client { $_[0]{clients}{$_[1]} }


# run(seconds, at => { offset => code }): publishes and records for that
# long; each event runs once when its offset is reached.
sub run {
    my ($self, $secs, %o) = @_;

    my $start = time;
    my $end = $start + $secs;
    my @events = map { [ $start + $_, $o{at}{$_} ] }
        sort { $a <=> $b } keys %{ $o{at} || {} };

    for my $cl (values %{ $self->{clients} }) {
        $cl->{next} = $start if $cl->{rate};
    }

    while ((my $now = time) < $end) {
        while (@events && $events[0][0] <= $now) {
            (shift @events)->[1]->();
        }

        my $next = $end;
        $next = $events[0][0] if @events && $events[0][0] < $next;

        for my $name (@{ $self->{order} }) {
            my $cl = $self->{clients}{$name};
            next unless $cl->{rate};
            if ($cl->{next} <= $now) {
                $self->_send($name);
                $cl->{next} += 1 / $cl->{rate};
            }
            $next = $cl->{next} if $cl->{next} < $next;
        }

        $self->_read($next - time);
    }

    $_->[1]->() for @events;
}


# drain(quiet): records until no client got anything for `quiet` seconds
# (bounded by 10 s).
sub drain {
    my ($self, $quiet) = @_;

    my $deadline = time + 10;
    my $last = time;
    while (time < $deadline && time - $last < $quiet) {
        $last = time if $self->_read(0.05);
    }
}


sub _send {
    my ($self, $name) = @_;

    my $cl = $self->{clients}{$name};
    my $k = ++$cl->{sent};
    $cl->{sent_at}{"$name-$k"} = time;
    $cl->{c}->send_json({ type => 'chat', data => { text => '', src => $name, k => $k },
        ref => "$name-$k" });
}


# Reads every frame that is there, waiting at most $wait for the first.
# Returns how many frames came.
sub _read {
    my ($self, $wait) = @_;

    my %by_fh;
    for my $name (@{ $self->{order} }) {
        my $c = $self->{clients}{$name}{c};
        next unless $c->is_open;
        $by_fh{ fileno $c->{sock} } = $name;
    }
    my $sel = IO::Select->new(map { $self->{clients}{$_}{c}{sock} }
        values %by_fh);

    my $n = 0;
    my @ready = $sel->can_read($wait > 0 ? $wait : 0);
    for my $fh (@ready) {
        my $cl = $self->{clients}{ $by_fh{ fileno $fh } };
        while (defined(my $m = $cl->{c}->recv_json(0.001))) {
            $m->{_t} = time;
            push @{ $cl->{frames} }, $m;
            $n++;
        }
    }

    return $n;
}


# _answers(publisher): its own copies and the errors about its messages,
# counted by k, and its first copy.
sub _answers {
    my ($self, $p) = @_;

    my (%copy, %error, $first);
    for my $m (@{ $self->{clients}{$p}{frames} }) {
        my $ref = $m->{type} eq 'error' ? $m->{data}{ref} : $m->{ref};
        next unless defined $ref && $ref =~ /^\Q$p\E-(\d+)$/;
        if ($m->{type} eq 'error') {
            $error{$1}++;
        } elsif ($m->{type} eq 'chat') {
            $copy{$1}++;
            $first //= $m;
        }
    }

    return (\%copy, \%error, $first);
}


# _chats_from(client, publisher): the k of each of the publisher's chats
# the client got, in arrival order.
sub _chats_from {
    my ($cl, $p) = @_;

    return map { $_->{data}{k} } grep {
        $_->{type} eq 'chat' && ($_->{data}{src} // '') eq $p
    } @{ $cl->{frames} };
}


# tally(receivers => [...], publishers => [...]): the figures without
# asserting anything (bench/drill prints them).  Per publisher: sent,
# delivered (its own copy came back), refused (an error with its ref),
# lost (neither), both, twice (a copy or an error more than once).  Per
# client: open, and per publisher how many of its delivered chats are
# missing, doubled, or out of order.
sub tally {
    my ($self, %o) = @_;

    my %t;
    for my $p (@{ $o{publishers} }) {
        my ($copy, $error, $first) = $self->_answers($p);
        my %s = (sent => $self->{clients}{$p}{sent}, delivered => 0,
            refused => 0, lost => 0, both => 0, twice => 0, first => $first);
        for my $k (1 .. $s{sent}) {
            $s{delivered}++ if $copy->{$k};
            $s{refused}++ if $error->{$k};
            $s{both}++ if $copy->{$k} && $error->{$k};
            $s{lost}++ unless $copy->{$k} || $error->{$k};
            $s{twice}++ if ($copy->{$k} // 0) > 1 || ($error->{$k} // 0) > 1;
        }
        $s{refused_keys} = { map { $_ => 1 } keys %$error };
        $t{publishers}{$p} = \%s;
    }

    for my $r (@{ $o{receivers} }, @{ $o{publishers} }) {
        my $cl = $self->{clients}{$r};
        my %c = (open => $cl->{c}->is_open ? 1 : 0,
            close_code => $cl->{c}->close_code);
        for my $p (@{ $o{publishers} }) {
            my $s = $t{publishers}{$p};
            my @got = _chats_from($cl, $p);
            my %seen;
            my $dup = grep { $seen{$_}++ } @got;
            my $disorder = grep { $got[$_] < $got[$_ - 1] } 1 .. $#got;
            my $missing = grep { !$seen{$_} && !$s->{refused_keys}{$_} }
                1 .. $s->{sent};
            $c{$p} = { got => scalar @got, missing => $missing,
                doubled => $dup, disorder => $disorder };
        }
        $t{clients}{$r} = \%c;
    }

    return \%t;
}


# check_room(receivers => [...], publishers => [...], players => [ids]):
#  - nobody was disconnected;
#  - each client got each publisher's delivered chats exactly once, in
#    the order sent, and every chat in strictly increasing id order;
#  - each publisher got exactly one answer per message: its own copy
#    (with its ref) or an error with its ref, never both, never neither;
#    every client got exactly the delivered ones;
#  - every state lists every player in `players` (no leave/join churn),
#    and a publisher's copies carry its own id as data.from_id.
# Returns tally()'s figures per publisher.
sub check_room {
    my ($self, %o) = @_;

    my @all = (@{ $o{receivers} }, @{ $o{publishers} });
    my $t = $self->tally(%o);

    for my $p (@{ $o{publishers} }) {
        my $s = $t->{publishers}{$p};
        is($s->{first}{data}{from_id}, $self->{clients}{$p}{id},
            "$p: from_id is its id") if $s->{first};
        is($s->{lost}, 0, "$p: every message answered ($s->{sent} sent)");
        is($s->{both}, 0, "$p: no message both delivered and refused");
        is($s->{twice}, 0, "$p: no message answered twice");
    }

    for my $r (@all) {
        my $cl = $self->{clients}{$r};
        ok($cl->{c}->is_open, "$r: still connected")
            or diag("$r closed with " . ($cl->{c}->close_code // 'EOF'));

        my @ids = map { $_->{id} } grep { defined $_->{id} }
            grep { $_->{type} ne 'error' } @{ $cl->{frames} };
        my @dec = grep { $ids[$_] <= $ids[$_ - 1] } 1 .. $#ids;
        is(scalar @dec, 0, "$r: ids strictly increasing")
            or diag("$r: ids @ids[0 .. ($#ids < 60 ? $#ids : 60)]");

        for my $p (@{ $o{publishers} }) {
            my $s = $t->{publishers}{$p};
            my @got = _chats_from($cl, $p);
            my @want = grep { !$s->{refused_keys}{$_} } 1 .. $s->{sent};
            is("@got", "@want", "$r: ${p}'s delivered chats, once, in order")
                or diag("$r from $p: got " . scalar(@got) . ", want "
                    . scalar(@want));
        }

        next unless $o{players};
        my @states = grep { $_->{type} eq 'state' } @{ $cl->{frames} };
        my $churn = 0;
        for my $s (@states) {
            my %in = map { $_->{id} => 1 } @{ $s->{data}{players} || [] };
            $churn++ if grep { !$in{$_} } @{ $o{players} };
        }
        is($churn, 0, "$r: every state lists every player ("
            . scalar(@states) . " states)");
    }

    return $t->{publishers};
}


1;
