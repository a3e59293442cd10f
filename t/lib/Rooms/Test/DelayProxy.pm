package Rooms::Test::DelayProxy;

# A TCP proxy for Redis that holds back what Redis sends on some
# connections: the connections whose first client bytes match `match`
# (default: a SUBSCRIBE, i.e. a sidecar's subscriber connection) get every
# byte from Redis `delay` seconds late, in order; the others pass at once.
# This makes the subscriber connection lag behind the command connection,
# which is what a loaded machine does now and then: a script's reply can
# reach the sidecar before messages that Redis published earlier.
#
#   my $p = Rooms::Test::DelayProxy->start(port => $redis_port,
#       delay => 0.1);
#   $t->start_sidecar($p->url);
#   ...
#   $p->stop;          # also done when the object goes away
#
# The proxy is a forked child, stopped by its PID.

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use POSIX qw(_exit);
use Time::HiRes qw(time);


sub start {
    my ($class, %o) = @_;

    my $listen = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 64,
        Proto => 'tcp', ReuseAddr => 1,
    ) or die "DelayProxy: listen: $!\n";
    my $port = $listen->sockport;

    my $pid = fork() // die "DelayProxy: fork: $!\n";
    if ($pid == 0) {
        $SIG{INT} = $SIG{TERM} = sub { _exit(0) };
        eval { _run($listen, $o{port}, $o{delay} // 0.1,
            $o{match} // qr/SUBSCRIBE/i) };
        _exit(0);
    }
    close $listen;

    return bless { pid => $pid, port => $port, owner => $$ }, $class;
}


sub port { $_[0]{port} }
sub url { 'redis://127.0.0.1:' . $_[0]{port} }


sub stop {
    my ($self) = @_;

    my $pid = delete $self->{pid} or return;
    return unless $$ == $self->{owner};
    kill 'TERM', $pid;
    waitpid($pid, 0);
}


sub DESTROY { $_[0]->stop }


# The child's loop.  Per connection: client socket, Redis socket, whether
# it is delayed (decided on its first client bytes), and the queue of
# [release time, bytes] from Redis.
sub _run {
    my ($listen, $redis_port, $delay, $match) = @_;

    my $sel = IO::Select->new($listen);
    my %peer;      # fileno -> connection
    my @conns;

    while (1) {
        my $next;
        for my $c (@conns) {
            my $q = $c->{queue};
            $next = $q->[0][0] if @$q && (!defined $next || $q->[0][0] < $next);
        }
        my $wait = defined $next ? $next - time : 1;
        $wait = 0 if $wait < 0;

        for my $fh ($sel->can_read($wait)) {
            if ($fh == $listen) {
                my $cl = $listen->accept or next;
                my $rs = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $redis_port, Proto => 'tcp');
                unless ($rs) {
                    close $cl;
                    next;
                }
                my $c = { cl => $cl, rs => $rs, delayed => undef,
                    queue => [] };
                push @conns, $c;
                $peer{fileno $cl} = $c;
                $peer{fileno $rs} = $c;
                $sel->add($cl, $rs);
                next;
            }

            my $c = $peer{fileno $fh} or next;
            my $n = sysread($fh, my $buf, 65536);
            unless ($n) {
                _drop($c, $sel, \%peer, \@conns);
                next;
            }
            if ($fh == $c->{cl}) {
                $c->{delayed} //= $buf =~ $match ? 1 : 0;
                _write_all($c->{rs}, $buf)
                    or _drop($c, $sel, \%peer, \@conns);
            } elsif ($c->{delayed}) {
                push @{ $c->{queue} }, [ time + $delay, $buf ];
            } else {
                _write_all($c->{cl}, $buf)
                    or _drop($c, $sel, \%peer, \@conns);
            }
        }

        my $now = time;
        for my $c (@conns) {
            my $q = $c->{queue};
            while (@$q && $q->[0][0] <= $now) {
                my $item = shift @$q;
                unless (_write_all($c->{cl}, $item->[1])) {
                    _drop($c, $sel, \%peer, \@conns);
                    last;
                }
            }
        }
    }
}


sub _drop {
    my ($c, $sel, $peer, $conns) = @_;

    for my $fh ($c->{cl}, $c->{rs}) {
        next unless defined fileno $fh;
        delete $peer->{fileno $fh};
        $sel->remove($fh);
        close $fh;
    }
    $c->{queue} = [];
    @$conns = grep { $_ != $c } @$conns;
}


sub _write_all {
    my ($fh, $buf) = @_;

    while (length $buf) {
        my $n = syswrite($fh, $buf);
        return 0 unless $n;
        substr($buf, 0, $n, '');
    }
    return 1;
}

1;
