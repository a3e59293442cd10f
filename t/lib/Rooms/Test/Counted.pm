package Rooms::Test::Counted;

# A raw client (Rooms::Test::Raw) that counts what crosses its connection
# after the 101, as the $rooms_* variables do: bytes written and read,
# frames with their headers as on the wire, and the data frames read
# (t/46_access_log.t, t/53_rooms_access_log.t).
#
#   my $c = Rooms::Test::Counted->connect(port => $p, room => 'R', ...);
#   $c->send_counted(op => 1, payload => $json);
#   my $m = $c->recv_json(sub { $_[0]{type} eq 'welcome' });
#   $c->{sent_bytes}, $c->{recv_bytes}, $c->{recv_data}

use strict;
use warnings;

use parent -norequire, 'Rooms::Test::Raw';

use JSON::PP ();

use Rooms::Test::Raw;


sub connect {
    my ($class, %o) = @_;

    my $c = $class->SUPER::connect(%o);
    return $c unless ref $c;

    @$c{qw(sent_bytes recv_bytes recv_data)} = (0, 0, 0);

    return $c;
}


# the length on the wire of a frame with this payload
sub wire_len {
    my ($len, $masked) = @_;
    return 2 + ($len < 126 ? 0 : $len < 65536 ? 2 : 8) + ($masked ? 4 : 0)
        + $len;
}


sub send_counted {
    my ($c, %f) = @_;
    my $bytes = Rooms::Test::Raw::frame(%f);
    $c->{sent_bytes} += length $bytes;
    return $c->send_raw($bytes);
}


sub recv_counted {
    my ($c, $timeout) = @_;
    my $f = $c->read_frame($timeout) or return;
    $c->{recv_bytes} += wire_len(length $f->{payload}, 0);
    $c->{recv_data}++ if $f->{op} == 1;
    return $f;
}


# reads until a data message matching $match; returns it decoded
sub recv_json {
    my ($c, $match) = @_;
    while (my $f = $c->recv_counted(5)) {
        next unless $f->{op} == 1;
        my $m = JSON::PP::decode_json($f->{payload});
        return $m if $match->($m);
    }
    return;
}


1;
