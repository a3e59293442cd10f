package Rooms::Test::Cluster;

# A Redis Cluster for the tests: N masters with R replicas each, every
# node a redis-server started in the foreground on a free 127.0.0.1 port
# (its cluster bus on port + 10000) in a temporary directory, remembered
# by PID and stopped by PID, also when a test dies (END).  Made with
# `redis-cli --cluster create`; start() returns once every node says
# cluster_state:ok and all 16384 slots are served.
#
#   my $c = Rooms::Test::Cluster->start(masters => 3, replicas => 1);
#   my $n = $c->owner_of('room:{ABCD}:pub');   # { port, pid, id, role }
#   my $r = $c->command($n, 'SPUBLISH', 'room:{ABCD}:pub', 'hi');
#   $c->move_slot($slot, $from, $to);          # keys follow
#   (or step by step: migrate_start, migrate_keys, migrate_end)
#   my $new = $c->kill_master($n);              # its replica, promoted
#   $t->start_sidecar($c->seed_url);            # a Rooms::Test stack
#   $c->stop;                                   # also done by END
#
# Replies are Perl values: strings and integers as scalars, nil as undef,
# arrays as array refs, errors as Rooms::Test::Cluster::Error objects
# (is_error($r), "$r" the message).  Rooms::Test::Cluster::Conn is a
# connection of its own (a subscriber).
#
# Environment: ROOMS_TEST_KEEP as Rooms::Test (keep the node directories
# of a failed run).

use strict;
use warnings;

use Exporter qw(import);
use File::Path qw(remove_tree);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h _exit);
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test qw(free_port wait_until);

our @EXPORT_OK = qw(is_error);

my $OWNER = $$;
my @CLUSTERS;

my $START_TIMEOUT = 20;   # create + agreement of every node
my $STOP_TIMEOUT = 10;


# start(masters => 3, replicas => 0, node_timeout => 1000,
# redis_args => [...]): a running cluster, or the test is skipped (plan
# skip_all) when redis-server or redis-cli is missing.  redis_args go to
# every node's command line.
sub start {
    my ($class, %o) = @_;

    for my $prog (qw(redis-server redis-cli)) {
        plan(skip_all => "$prog not found in PATH")
            unless defined Rooms::Test::which($prog);
    }

    my $masters = $o{masters} // 3;
    my $replicas = $o{replicas} // 0;
    my $self = bless {
        dir => tempdir('rooms-cluster-XXXXXX', TMPDIR => 1, CLEANUP => 0),
        nodes => [],
        node_timeout => $o{node_timeout} // 1000,
        redis_args => $o{redis_args} // [],
    }, $class;
    push @CLUSTERS, $self;

    for (1 .. $masters * (1 + $replicas)) {
        $self->_start_node(_free_node_port());
    }

    my $log = "$self->{dir}/create.log";
    my @addrs = map { "127.0.0.1:$_->{port}" } @{ $self->{nodes} };
    my $rc = system('sh', '-c', 'exec "$@" >"$0" 2>&1', $log,
        'timeout', $START_TIMEOUT, Rooms::Test::which('redis-cli'),
        '--cluster', 'create', @addrs, '--cluster-replicas', $replicas,
        '--cluster-yes');
    die "redis-cli --cluster create failed ($rc):\n"
        . Rooms::Test::tail($log, 20) if $rc != 0;

    $self->wait_ok($START_TIMEOUT)
        or die "cluster not ok within ${START_TIMEOUT}s\n";
    $self->refresh;
    $self->wait_replicas($START_TIMEOUT)
        or die "replicas not in sync within ${START_TIMEOUT}s\n";

    return $self;
}


sub dir { $_[0]{dir} }

# A seed address for a client (a sidecar's redis URL): a live master.
sub seed_url {
    my ($m) = $_[0]->masters or return;
    return "redis://127.0.0.1:$m->{port}";
}

# Every node started (killed ones too, with pid undef).
sub nodes { @{ $_[0]{nodes} } }

sub masters { grep { $_->{pid} && $_->{role} eq 'master' } $_[0]->nodes }

sub replicas_of {
    my ($self, $m) = @_;
    return grep { $_->{pid} && ($_->{master} // '') eq $m->{id} }
        $self->nodes;
}

sub live { grep { $_->{pid} } $_[0]->nodes }


# command($node_or_port, @args): one command on a new connection; its
# reply, or an error object 'no reply' after 2 s.
sub command {
    my ($self, $node, @args) = @_;

    my $c = Rooms::Test::Cluster::Conn->new(ref $node ? $node->{port} : $node)
        or return Rooms::Test::Cluster::Error->new('no connection');
    return $c->call(@args);
}


# Each live node's own view of itself (the "myself" line of its CLUSTER
# NODES: a node learns the others' roles by gossip, later): id, role,
# master and slot ranges.
sub refresh {
    my ($self) = @_;

    for my $n ($self->live) {
        my $text = $self->command($n, 'CLUSTER', 'NODES');
        die "CLUSTER NODES on $n->{port}: $text\n" if is_error($text);
        my ($line) = grep { /\bmyself\b/ } split /\n/, $text
            or die "CLUSTER NODES on $n->{port}: no myself line\n";
        my ($id, undef, $flags, $master, undef, undef, undef, undef,
            @slots) = split ' ', $line;
        $n->{id} = $id;
        $n->{role} = $flags =~ /master/ ? 'master' : 'replica';
        $n->{master} = $master eq '-' ? undef : $master;
        $n->{slots} = [ grep { !/^\[/ } @slots ];
    }
}


# The node serving a key (or a slot number: slot => N) now, asked of the
# cluster (CLUSTER SLOTS on a live node).
sub owner_of {
    my ($self, $key, %o) = @_;

    my ($any) = $self->live or return;
    my $slot = $o{slot} // $self->slot_of($key);
    my $map = $self->command($any, 'CLUSTER', 'SLOTS');
    return if is_error($map);

    for my $range (@$map) {
        next unless $range->[0] <= $slot && $slot <= $range->[1];
        my $port = $range->[2][1];
        my ($n) = grep { $_->{port} == $port } $self->nodes;
        return $n;
    }

    return;
}


sub slot_of {
    my ($self, $key) = @_;

    my ($any) = $self->live;
    my $slot = $self->command($any, 'CLUSTER', 'KEYSLOT', $key);
    die "CLUSTER KEYSLOT: $slot\n" if is_error($slot);

    return $slot;
}


# True once every live node says cluster_state:ok with all slots ok and
# they agree on who serves each slot; waits at most `timeout` seconds.
# Option during => code: called between two looks instead of sleeping
# (a test's clients go on sending and reading meanwhile; it should
# return within about 50 ms).
sub wait_ok {
    my ($self, $timeout, %o) = @_;

    return wait_until(sub {
        $o{during}->() if $o{during};
        my %maps;
        for my $n ($self->live) {
            my $info = $self->command($n, 'CLUSTER', 'INFO');
            return 0 if is_error($info)
                || $info !~ /^cluster_state:ok\r?$/m
                || $info !~ /^cluster_slots_ok:16384\r?$/m;
            my $map = $self->command($n, 'CLUSTER', 'SLOTS');
            return 0 if is_error($map);
            $maps{ join ',', sort map { "$_->[0]-$_->[1]:$_->[2][1]" }
                @$map } = 1;
        }
        return keys %maps == 1;
    }, timeout => $timeout // 10, interval => $o{during} ? 0 : 0.05);
}


# True once every live replica's link to its master is up (it has had
# its first sync: a failover target with the master's data); waits at
# most `timeout` seconds.  CLUSTER SLOTS of Redis 7.0 lists a replica
# only later, once gossip told its master's peers that it replicates
# (several seconds with a 1 s node timeout): clients must not count on
# replicas being listed.
sub wait_replicas {
    my ($self, $timeout) = @_;

    return wait_until(sub {
        for my $n ($self->live) {
            next unless $n->{role} eq 'replica';
            my $role = $self->command($n, 'ROLE');
            return 0 if is_error($role) || ref $role ne 'ARRAY'
                || $role->[0] ne 'slave' || $role->[3] ne 'connected';
        }
        return 1;
    }, timeout => $timeout // 10, interval => 0.05);
}


# move_slot($slot, $from, $to): moves a slot and its keys from one master
# to another as redis-cli --cluster reshard does, while clients may go on
# using it: migrate_start, migrate_keys, migrate_end.  Returns the number
# of keys moved.
sub move_slot {
    my ($self, $slot, $from, $to) = @_;

    $self->migrate_start($slot, $from, $to);
    my $moved = $self->migrate_keys($slot, $from, $to);
    $self->migrate_end($slot, $from, $to);

    return $moved;
}


# IMPORTING on the target, then MIGRATING on the source: from now on the
# source answers ASK for the slot's keys it does not have.
sub migrate_start {
    my ($self, $slot, $from, $to) = @_;

    _ok($self->command($to, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING',
        $from->{id}), 'SETSLOT IMPORTING');
    _ok($self->command($from, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING',
        $to->{id}), 'SETSLOT MIGRATING');
}


# migrate_keys($slot, $from, $to, @keys): MIGRATE of the given keys, or
# without keys of every key of the slot in batches of 100 until the
# source has none (new keys meanwhile go to the target: ASK; bounded to
# 10 s).  Returns the number of keys moved.
sub migrate_keys {
    my ($self, $slot, $from, $to, @only) = @_;

    my $migrate = sub {
        _ok($self->command($from, 'MIGRATE', '127.0.0.1', $to->{port}, '',
            0, 5000, 'KEYS', @_), 'MIGRATE');
        return scalar @_;
    };
    return $migrate->(@only) if @only;

    my $moved = 0;
    my $deadline = time + 10;
    while (1) {
        die "migrate_keys: keys still in slot $slot after 10 s\n"
            if time > $deadline;
        my $keys = $self->command($from, 'CLUSTER', 'GETKEYSINSLOT', $slot,
            100);
        die "GETKEYSINSLOT: $keys\n" if is_error($keys);
        last unless @$keys;
        $moved += $migrate->(@$keys);
    }

    return $moved;
}


# SETSLOT NODE on the target, the source and every other master: the
# slot is the target's (the source drops its sharded subscriptions).
sub migrate_end {
    my ($self, $slot, $from, $to) = @_;

    for my $n ($to, $from, grep { $_ != $to && $_ != $from } $self->masters) {
        _ok($self->command($n, 'CLUSTER', 'SETSLOT', $slot, 'NODE',
            $to->{id}), "SETSLOT NODE on $n->{port}");
    }
    $self->refresh;
}


# kill_master($node, timeout => 15, during => code): SIGKILL, then waits
# until one of its replicas is a master and the cluster is ok again
# (during: as wait_ok's, called while waiting).  Returns the promoted
# node.
sub kill_master {
    my ($self, $m, %o) = @_;

    my @candidates = $self->replicas_of($m)
        or die "kill_master: $m->{port} has no replica\n";
    $self->_kill($m);

    my $promoted;
    wait_until(sub {
        $o{during}->() if $o{during};
        for my $r (@candidates) {
            my $role = $self->command($r, 'ROLE');
            next if is_error($role) || ref $role ne 'ARRAY';
            if ($role->[0] eq 'master') {
                $promoted = $r;
                return 1;
            }
        }
        return 0;
    }, timeout => $o{timeout} // 15, interval => $o{during} ? 0 : 0.05)
        or die "kill_master: no replica of $m->{port} promoted\n";

    $self->wait_ok($o{timeout} // 15, during => $o{during})
        or die "kill_master: cluster not ok after the failover\n";
    $self->refresh;

    return $promoted;
}


# Stops every node by PID (TERM, then KILL after 10 s) and removes the
# directory unless ROOMS_TEST_KEEP says to keep it.
sub stop {
    my ($self) = @_;

    return unless $$ == $OWNER;

    for my $n ($self->nodes) {
        kill 'TERM', $n->{pid} if $n->{pid};
    }
    for my $n ($self->nodes) {
        next unless $n->{pid};
        my $deadline = time + $STOP_TIMEOUT;
        my $gone = 0;
        while (!($gone = waitpid($n->{pid}, WNOHANG) != 0)
            && time < $deadline) {
            sleep 0.02;
        }
        $gone ? ($n->{pid} = undef) : $self->_kill($n);
    }

    my $passing = Test::More->builder->is_passing;
    my $keep = $ENV{ROOMS_TEST_KEEP} // '';
    if ($keep eq 'always' || (!$passing && $keep)) {
        diag("kept $self->{dir}");
    } else {
        remove_tree($self->{dir});
    }

    @CLUSTERS = grep { $_ != $self } @CLUSTERS;
}


sub is_error { ref $_[0] eq 'Rooms::Test::Cluster::Error' }


# --- internals --------------------------------------------------------------

# A port whose cluster bus port (+10000) is free too.
sub _free_node_port {
    for (1 .. 50) {
        my $p = free_port();
        next if $p + 10000 > 65535;
        my $bus = IO::Socket::INET->new(Listen => 1,
            LocalAddr => '127.0.0.1', LocalPort => $p + 10000,
            Proto => 'tcp', ReuseAddr => 1) or next;
        close $bus;
        return $p;
    }
    die "no free port pair for a cluster node\n";
}


sub _start_node {
    my ($self, $port) = @_;

    my $dir = "$self->{dir}/$port";
    mkdir $dir or die "mkdir $dir: $!";
    my $log = "$dir/redis.log";

    my @cmd = (Rooms::Test::which('redis-server'), '--port', $port,
        '--bind', '127.0.0.1', '--dir', $dir, '--save', '',
        '--appendonly', 'no', '--daemonize', 'no',
        '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
        '--cluster-node-timeout', $self->{node_timeout},
        # a replica takes over however long it was cut off (tests kill
        # masters right after writing)
        '--cluster-replica-validity-factor', 0,
        # a replica's first sync at once, not after 5 s of waiting for
        # other replicas to share it
        '--repl-diskless-sync-delay', 0, @{ $self->{redis_args} });

    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or _exit(127);
        open STDERR, '>&', \*STDOUT;
        exec { $cmd[0] } @cmd or _exit(127);
    }

    my $n = { port => $port, pid => $pid, dir => $dir, log => $log,
        role => 'master' };
    push @{ $self->{nodes} }, $n;

    wait_until(sub {
        if (waitpid($pid, WNOHANG) == $pid) {
            $n->{pid} = undef;
            die "redis-server $port exited during startup:\n"
                . Rooms::Test::tail($log, 20);
        }
        return Rooms::Test::redis_ping($port);
    }, timeout => 10, interval => 0.02)
        or die "redis-server $port not ready within 10 s\n";

    return $n;
}


sub _kill {
    my ($self, $n) = @_;

    return unless $n->{pid};
    kill 'KILL', $n->{pid};
    waitpid($n->{pid}, 0);
    $n->{pid} = undef;
}


sub _ok {
    my ($r, $what) = @_;
    die "$what: $r\n" if is_error($r);
    return $r;
}


END {
    my $rc = $?;
    $_->stop for @CLUSTERS;
    $? = $rc;
}


# --- a connection --------------------------------------------------------

package Rooms::Test::Cluster::Error;

use overload '""' => sub { ${ $_[0] } }, fallback => 1;

sub new { my ($class, $msg) = @_; return bless \$msg, $class }


package Rooms::Test::Cluster::Conn;

# One RESP2 connection to a node: call() sends a command and reads its
# reply; send() and reply(timeout) split the two (a subscriber reads its
# pushes with reply()).

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

sub new {
    my ($class, $port) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Proto => 'tcp', Timeout => 2) or return;

    return bless { s => $s, sel => IO::Select->new($s), buf => '',
        port => $port }, $class;
}

sub port { $_[0]{port} }

sub send {
    my ($self, @args) = @_;

    my $req = '*' . @args . "\r\n";
    $req .= '$' . length($_) . "\r\n$_\r\n" for @args;
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite($self->{s}, $req, length($req) - $off, $off);
        return 0 unless $n;
        $off += $n;
    }

    return 1;
}

sub call {
    my ($self, @args) = @_;

    $self->send(@args)
        or return Rooms::Test::Cluster::Error->new('send failed');
    $self->{deadline} = time + 2;
    my $r = eval { $self->_value };

    return $@ ? Rooms::Test::Cluster::Error->new("no reply: $@") : $r;
}

# The next reply (a push) within `timeout` seconds, or undef.
sub reply {
    my ($self, $timeout) = @_;

    $self->{deadline} = time + ($timeout // 2);
    my $r = eval { $self->_value };

    return $@ ? undef : $r;
}

sub _line {
    my ($self) = @_;

    my $eol;
    $self->_more while ($eol = index($self->{buf}, "\r\n")) < 0;
    my $line = substr($self->{buf}, 0, $eol);
    substr($self->{buf}, 0, $eol + 2) = '';

    return $line;
}

sub _more {
    my ($self) = @_;

    my $left = $self->{deadline} - time;
    die "timeout\n" if $left <= 0 || !$self->{sel}->can_read($left);
    sysread($self->{s}, $self->{buf}, 65536, length $self->{buf})
        or die "closed\n";
}

sub _value {
    my ($self) = @_;

    my $line = $self->_line;
    my ($type, $rest) = (substr($line, 0, 1), substr($line, 1));

    return $rest if $type eq '+' || $type eq ':';
    return Rooms::Test::Cluster::Error->new($rest) if $type eq '-';
    return undef if $rest < 0;
    return [ map { $self->_value } 1 .. $rest ] if $type eq '*';
    die "unexpected reply type $type\n" unless $type eq '$';

    $self->_more while length $self->{buf} < $rest + 2;
    my $data = substr($self->{buf}, 0, $rest);
    substr($self->{buf}, 0, $rest + 2) = '';

    return $data;
}


1;
