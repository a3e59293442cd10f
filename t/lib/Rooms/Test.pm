package Rooms::Test;

# Integration test harness: one object per "stack" (redis-server,
# rooms-sidecar, nginx with ngx_http_rooms_module), each in its own
# temporary directory, on free loopback ports.  Every process is started
# in the foreground (fork/exec), remembered by PID and stopped by PID, also
# when a test dies.  finish() stops everything, checks every error.log for
# [alert]/[crit] lines and calls done_testing().
#
# Environment:
#   ROOMS_BUILD_DIR      build tree (default <repo>/build)
#   ROOMS_NGINX          nginx binary (default /usr/sbin/nginx)
#   ROOMS_MODULE_STATIC  1: the module is compiled into ROOMS_NGINX
#                        (--add-module): no load_module, no .so needed
#   ROOMS_SANITIZE       1: the binaries are built with ASan/UBSan
#                        (scripts/sanitize): slower starts and stops
#   ROOMS_TEST_KEEP      keep temp dirs of a failed run ("always": of
#                        every run)
#   ROOMS_TEST_LOG_LEVEL nginx error_log level (default info)

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Fcntl qw(F_SETFD);
use POSIX qw(:sys_wait_h _exit dup2);
use Socket qw(SOCK_DGRAM SOCK_STREAM);
use Test::More;
use Time::HiRes qw(time sleep);

use Rooms::Test::Client;

our @EXPORT_OK = qw(wait_until free_port http_get publish_paced
    process_alive proc_stat proc_cpu proc_rss proc_hwm redis_command
    redis_reply);

my $REPO = abs_path(File::Spec->catdir(dirname(__FILE__), '..', '..', '..'));

my $BUILD = $ENV{ROOMS_BUILD_DIR} || "$REPO/build";
$BUILD = abs_path($BUILD) // $BUILD if -d $BUILD;
my $NGINX = $ENV{ROOMS_NGINX} || '/usr/sbin/nginx';
my $SIDECAR = "$BUILD/sidecar/rooms-sidecar";
my $MODULE = "$BUILD/ngx_http_rooms_module.so";
my $STATIC = $ENV{ROOMS_MODULE_STATIC};

# sanitized processes start slower and check for leaks when they exit
my $SLOW = $ENV{ROOMS_SANITIZE} ? 3 : 1;
my $START_TIMEOUT = 10 * $SLOW;
my $STOP_TIMEOUT = 10 * $SLOW;

my $OWNER = $$;
my @STACKS;
my $NEXT_ID = 0;


# A signal should run the END block, which stops the servers.
$SIG{INT} = $SIG{TERM} = $SIG{HUP} = sub { exit 1 };
$SIG{PIPE} = 'IGNORE';


# new(%opts).  Options: name, packaged (the test runs installed packages,
# not the build tree: no built module or sidecar needed).
sub new {
    my ($class, %opts) = @_;

    my $why = missing($opts{packaged});
    plan(skip_all => $why) if defined $why;

    my $name = $opts{name} || chr(ord('a') + $NEXT_ID);
    $NEXT_ID++;

    my $dir = tempdir("rooms-test-$name-XXXXXX", TMPDIR => 1, CLEANUP => 0);

    my $self = bless {
        name => $name,
        dir => $dir,
        procs => {},
        server_id => "t${OWNER}$name",
    }, $class;

    push @STACKS, $self;

    return $self;
}


# Returns the reason why the tests cannot run, or undef; missing(1): for
# a test of the installed packages.
sub missing {
    my ($packaged) = @_;

    return "nginx not found at $NGINX (set ROOMS_NGINX)" unless -x $NGINX;
    return 'redis-server not found in PATH'
        if $packaged && !defined which('redis-server');
    return if $packaged;
    return "module not built: $MODULE (set ROOMS_BUILD_DIR)"
        unless $STATIC || -f $MODULE;
    return "sidecar not built: $SIDECAR (set ROOMS_BUILD_DIR)"
        unless -x $SIDECAR;
    return 'redis-server not found in PATH' unless defined which('redis-server');
    return;
}


# The load_module line of an nginx.conf: empty if the module is
# compiled in.
sub load_module {
    return $STATIC ? '' : "load_module $MODULE;\n";
}


sub which {
    my ($prog) = @_;

    for my $d (File::Spec->path) {
        my $p = File::Spec->catfile($d, $prog);
        return $p if -x $p && !-d $p;
    }

    return;
}


sub dir { $_[0]{dir} }
sub name { $_[0]{name} }
sub server_id { $_[0]{server_id} }
sub port { $_[0]{port} }
sub redis_url { $_[0]{redis_url} }
sub redis_port { $_[0]{redis_port} }
sub sidecar_socket { "$_[0]{dir}/sidecar.sock" }
sub error_log { "$_[0]{dir}/error.log" }
sub sidecar_log { "$_[0]{dir}/sidecar.log" }


# --- processes --------------------------------------------------------------

# start_redis(%opts).  Options: port (default: a free one; pass the old
# redis_port to restart a killed Redis where its clients expect it), aof
# (appendonly yes, fsync always: a killed Redis comes back with its data),
# cluster (a cluster of this one node, serving every slot: Redis then
# refuses a command or script whose keys are in several slots with
# CROSSSLOT, as a real cluster does).
sub start_redis {
    my ($self, %opts) = @_;

    my $dir = "$self->{dir}/redis";
    # (the cluster bus port too is a free one: port + 10000 may not be)
    my $port = $self->start_redis_node('redis', %opts,
        $opts{cluster} ? (args => [ '--cluster-enabled', 'yes',
            '--cluster-config-file', "$dir/nodes.conf",
            '--cluster-port', free_port() ]) : ());
    if ($opts{cluster}) {
        redis_command($port, 'CLUSTER', 'ADDSLOTSRANGE', 0, 16383) eq '+OK'
            or die "redis: CLUSTER ADDSLOTSRANGE failed\n";
        # until the node sees its slots, keyed commands get CLUSTERDOWN
        $self->_wait_ready('redis',
            sub { redis_command($port, 'EXISTS', 'probe') =~ /^:/ });
        redis_command($port, 'CONFIG', 'RESETSTAT');  # those CLUSTERDOWNs
    }

    $self->{redis_port} = $port;
    $self->{redis_url} = "redis://127.0.0.1:$port";

    return $self->{redis_url};
}


# start_redis_node(what, %opts): a redis-server as process `what` of this
# stack (its files in <dir>/<what>); options as start_redis, replicaof =>
# port (a replica of that master), args => [ more redis-server options ].
# Returns its port.
sub start_redis_node {
    my ($self, $what, %opts) = @_;

    my $port = $opts{port} // free_port();
    my $dir = "$self->{dir}/$what";
    -d $dir or mkdir $dir or die "mkdir $dir: $!";

    $self->_spawn($what, "$self->{dir}/$what.log", {},
        which('redis-server'), '--port', $port, '--bind', '127.0.0.1',
        '--save', '', '--appendonly', $opts{aof} ? 'yes' : 'no',
        '--appendfsync', 'always', '--daemonize', 'no',
        '--dir', $dir,
        $opts{replicaof} ? ('--replicaof', '127.0.0.1', $opts{replicaof})
                         : (),
        @{ $opts{args} || [] });

    $self->_wait_ready($what, sub { redis_ping($port) });

    return $port;
}


# start_sentinels(%opts): a Sentinel setup on free ports: a master and
# `replicas` replicas (default 1; redis-server, processes node0, node1,
# ...; every node started with the extra arguments `redis_args`, e.g.
# [ '--min-replicas-to-write', 1 ]) and three sentinels (redis-sentinel,
# processes sentinel0..2, quorum 2) monitoring them as `master` (default
# mymaster), with down_after (ms, default 1000) and failover_timeout (ms,
# default 3000).  Returns once every replica is in sync and every
# sentinel knows the replicas and the two other sentinels (bounded
# waits): { master => NAME, nodes => [port0, port1, ...], sentinels =>
# [ports] }.  Every process is stopped by PID with the stack (also on
# failure).
sub start_sentinels {
    my ($self, %opts) = @_;

    my $name = $opts{master} // 'mymaster';
    my $replicas = $opts{replicas} // 1;
    # a replica's first sync starts at once (not after 5 s)
    my @node_args = (args => [ '--repl-diskless-sync-delay', 0,
        @{ $opts{redis_args} || [] } ]);
    my $m = $self->start_redis_node('node0', @node_args);
    my @nodes = ($m);
    for my $i (1 .. $replicas) {
        push @nodes, $self->start_redis_node("node$i", replicaof => $m,
            @node_args);
    }
    for my $r (@nodes[1 .. $#nodes]) {
        wait_until(sub {
            (redis_reply($r, 'INFO', 'replication') // '')
                =~ /master_link_status:up/;
        }, timeout => 10, interval => 0.05)
            or die "replica $r did not sync with the master\n";
    }
    my @ports;

    for my $i (0 .. 2) {
        my $port = free_port();
        my $dir = "$self->{dir}/sentinel$i";
        -d $dir or mkdir $dir or die "mkdir $dir: $!";
        write_file("$dir/sentinel.conf", join '', map { "$_\n" }
            "port $port", 'bind 127.0.0.1', 'daemonize no', "dir $dir",
            "sentinel monitor $name 127.0.0.1 $m 2",
            "sentinel down-after-milliseconds $name "
                . ($opts{down_after} // 1000),
            "sentinel failover-timeout $name "
                . ($opts{failover_timeout} // 3000));
        $self->_spawn("sentinel$i", "$self->{dir}/sentinel$i.log", {},
            which('redis-sentinel'), "$dir/sentinel.conf");
        $self->_wait_ready("sentinel$i", sub { redis_ping($port) });
        push @ports, $port;
    }

    my $known = wait_until(sub {
        for my $p (@ports) {
            my %m = @{ redis_reply($p, 'SENTINEL', 'MASTER', $name) || [] };
            return 0 unless ($m{'num-slaves'} // 0) >= $replicas
                && ($m{'num-other-sentinels'} // 0) >= 2;
        }
        return 1;
    }, timeout => 20, interval => 0.2);
    die "sentinels did not discover each other and the replicas\n"
        unless $known;

    return { master => $name, nodes => \@nodes, sentinels => \@ports };
}


# spawn(what, ready, command...): any helper process of this stack (its
# output in <dir>/<what>.log), ready when ready->() is true (bounded
# wait); stopped by PID with the stack.
sub spawn {
    my ($self, $what, $ready, @cmd) = @_;

    $self->_spawn($what, "$self->{dir}/$what.log", {}, @cmd);
    $self->_wait_ready($what, $ready);
}


# sentinel_master(sentinel_port, name): the port of the master that
# sentinel names (undef without an answer).
sub sentinel_master {
    my ($port, $name) = @_;

    my $a = redis_reply($port, 'SENTINEL', 'get-master-addr-by-name', $name);
    return ref $a eq 'ARRAY' ? $a->[1] : undef;
}


# start_sidecar(redis_url, %opts); the URL defaults to this stack's Redis.
# Options: server_id, log_level, args => [ extra arguments ], command =>
# [ what runs instead of the built sidecar, e.g. a setpriv wrapper around
# an installed one; the harness's arguments follow it ], listen_fd
# (socket activation as systemd does it: the sidecar gets listen_socket()
# as fd 3 with LISTEN_FDS=1 and LISTEN_PID, and is ready when it says
# READY=1 on NOTIFY_SOCKET; a restarted sidecar gets the same socket).
sub start_sidecar {
    my ($self, $url, %opts) = @_;

    $url //= $self->{redis_url} // die "start_sidecar: no redis url\n";
    $self->{server_id} = $opts{server_id} if defined $opts{server_id};

    my $sock = $self->sidecar_socket;
    my %child;
    my $ready = sub {
        my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock);
        return 0 unless $s;
        close $s;
        return 1;
    };

    if ($opts{listen_fd}) {
        # a connect() to a held socket succeeds before anyone accepts
        my $notify = $self->_notify_socket;
        $child{fd3} = $self->listen_socket;
        $child{env} = { NOTIFY_SOCKET => $notify->hostpath };
        $ready = sub { notified($notify, 'READY=1') };
    }

    $self->_spawn('sidecar', $self->sidecar_log, \%child,
        @{ $opts{command} || [$SIDECAR] },
        '--listen', $sock, '--redis', $url,
        '--server-id', $self->{server_id},
        '--log-level', $opts{log_level} || 'debug',
        @{ $opts{args} || [] });

    $self->_wait_ready('sidecar', $ready);

    return $sock;
}


# The listening socket at sidecar_socket that start_sidecar(listen_fd => 1)
# passes on: made on first use and kept, as systemd's socket unit keeps
# it, for the life of the stack.
sub listen_socket {
    my ($self) = @_;

    return $self->{listen_socket} //= do {
        my $path = $self->sidecar_socket;
        unlink $path;
        IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => $path,
            Listen => 511) or die "listen on $path: $!\n";
    };
}


# The datagram socket a sidecar started with listen_fd reports to, as
# systemd's NOTIFY_SOCKET; emptied of older reports.
sub _notify_socket {
    my ($self) = @_;

    my $s = $self->{notify_socket} //= do {
        my $path = "$self->{dir}/notify.sock";
        my $n = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $path)
            or die "notify socket $path: $!\n";
        # anyone may report, as to systemd's: a sidecar run as another
        # user too (t/42_packages.t)
        chmod 0666, $path or die "chmod $path: $!\n";
        $n;
    };
    notified($s, '');

    return $s;
}


# True if a datagram waiting on $s has a line equal to $state; reads
# every waiting datagram, never blocks.
sub notified {
    my ($s, $state) = @_;

    my $sel = IO::Select->new($s);
    my $seen = 0;
    while ($sel->can_read(0)) {
        my $msg;
        defined $s->recv($msg, 4096) or last;
        $seen = 1 if grep { $_ eq $state } split /\n/, $msg;
    }

    return $seen;
}


# start_nginx(%opts).  Options: workers (default 2), connections
# (worker_connections, default 1024), log_level, load (what loads the
# module instead of load_module(), e.g. an include of modules-enabled),
# main (snippet in the main context), http (in http{}), server (in
# server{}), ws (in the /ws location), listen (parameters of the listen
# directive, e.g. 'sndbuf=4k'), reuseport (spread clients over the workers;
# off by default: with it, another test's nginx could bind the same port
# too), wait_link
# (default 1: if this stack's sidecar runs, wait until the workers answer
# GET /rooms with 200), daemon (run nginx as a daemon, "daemon on", as a
# stock init script does; the master is then known by its pid file and,
# the test process being made a subreaper, reaped like the others).
sub start_nginx {
    my ($self, %opts) = @_;

    my $dir = $self->{dir};
    my $port = $self->{port} //= free_port();
    my $workers = $opts{workers} // 2;
    my $conns = $opts{connections} // 1024;
    my $level = $opts{log_level} || $ENV{ROOMS_TEST_LOG_LEVEL} || 'info';
    my $user = $> == 0 ? "user root;\n" : '';
    my $sock = $self->sidecar_socket;

    my $main = $opts{main} // '';
    my $http = $opts{http} // '';
    my $server = $opts{server} // '';
    my $reuseport = $opts{reuseport} ? ' reuseport' : '';
    my $listen = $opts{listen} ? " $opts{listen}" : '';
    my $ws = $opts{ws} // '';
    my $daemon = $opts{daemon} ? 'on' : 'off';

    my $load = $opts{load} // load_module();
    my $conf = <<"EOF";
${load}
daemon $daemon;
master_process on;
worker_processes $workers;
${user}error_log $dir/error.log $level;
pid $dir/nginx.pid;
$main

events {
    worker_connections $conns;
}

http {
    access_log off;

    client_body_temp_path $dir/client_body_temp;
    proxy_temp_path $dir/proxy_temp;
    fastcgi_temp_path $dir/fastcgi_temp;
    uwsgi_temp_path $dir/uwsgi_temp;
    scgi_temp_path $dir/scgi_temp;

    rooms_sidecar unix:$sock;
$http
    server {
        listen 127.0.0.1:$port$listen$reuseport;
$server
        location = /ws {
            rooms_websocket;
$ws
        }

        location = /rooms {
            rooms_list;
        }
    }
}
EOF

    write_file("$dir/nginx.conf", $conf);

    subreaper() if $opts{daemon};

    $self->_spawn('nginx', "$dir/nginx.out", { group => 1 }, $NGINX,
        '-p', "$dir/", '-c', "$dir/nginx.conf", '-e', "$dir/error.log");

    $self->_adopt_daemon('nginx', "$dir/nginx.pid") if $opts{daemon};

    $self->_wait_ready('nginx', sub { port_open($port) });

    if (($opts{wait_link} // 1) && $self->{procs}{sidecar}) {
        $self->wait_link;
    }

    return $port;
}


# Waits until several GET /rooms in a row answer 200, i.e. (most likely)
# every worker's link to the sidecar is up.  Bounded; never fatal.
sub wait_link {
    my ($self, $timeout) = @_;

    my $ok = wait_until(sub {
        for (1 .. 8) {
            my ($status) = http_get($self->{port}, '/rooms');
            return 0 unless defined $status && $status == 200;
        }
        return 1;
    }, timeout => $timeout // 5);

    diag("stack $self->{name}: GET /rooms never answered 200 in a row")
        unless $ok;

    return $ok;
}


# The launcher of a daemon exits once the daemon is forked: the daemon,
# reparented to this (subreaper) process, takes its place.  On failure
# the record names whatever may still run (the daemon, or the launcher),
# so that it is stopped like the rest.
sub _adopt_daemon {
    my ($self, $what, $pidfile) = @_;

    my $p = $self->{procs}{$what};
    my $deadline = time + $START_TIMEOUT;
    my ($pid, $exited, $status);

    while (time < $deadline) {
        if (!$exited && waitpid($p->{pid}, WNOHANG) == $p->{pid}) {
            ($exited, $status) = (1, $?);
        }

        $pid = read_pid($pidfile);
        $pid = undef unless $pid && process_alive($pid);
        last if $exited && ($pid || $status);
        sleep 0.02;
    }

    if ($pid) {
        # the daemon leads its own session and process group
        $self->{procs}{$what} = { %$p, pid => $pid, group => 1 };
    } elsif ($exited) {
        delete $self->{procs}{$what};
    }

    die "$what daemon did not start (launcher status "
        . ($status // 'running') . "): $p->{cmd}\n" . tail($p->{log}, 30)
        unless $pid && $exited && !$status;

    return $pid;
}


# upgrade_binary(): the first step of a binary upgrade: USR2 to this
# stack's nginx master, which execs a new master (the same binary) that
# inherits the listening sockets, writes nginx.pid and renames the old
# file nginx.pid.oldbin.  Waits for that; the new master becomes 'nginx'
# and the old one 'nginx_old' (send it WINCH and QUIT with signal(), reap
# it with wait_exit()).  Both are stopped by PID like any process here:
# the test process is made a subreaper, so that the new master becomes
# its child once the old master is gone.  Returns the new master's pid.
sub upgrade_binary {
    my ($self) = @_;

    subreaper();

    my $old = $self->{procs}{nginx} or die "upgrade_binary: no nginx\n";
    my $dir = $self->{dir};
    my $new;

    kill 'USR2', $old->{pid};

    wait_until(sub {
        $new = read_pid("$dir/nginx.pid");
        return -e "$dir/nginx.pid.oldbin" && $new && $new != $old->{pid}
            && process_alive($new);
    }, timeout => $START_TIMEOUT) or die "upgrade_binary: no new master\n";

    $self->{procs}{nginx_old} = delete $self->{procs}{nginx};

    # the new master stays in the old one's process group
    $self->{procs}{nginx} = {
        pid => $new, log => $old->{log}, cmd => $old->{cmd},
        pgid => (proc_stat($new))[2],
    };

    return $new;
}


# signal(what, signal): sends a signal to one of this stack's processes.
sub signal {
    my ($self, $what, $sig) = @_;

    my $p = $self->{procs}{$what} or return 0;
    return kill $sig, $p->{pid};
}


# wait_exit(what, timeout): waits for a process that was told to exit
# (e.g. nginx_old after QUIT) and reaps it.  Returns its exit code (or
# -signal), undef if it is still running after `timeout` seconds.
sub wait_exit {
    my ($self, $what, $timeout) = @_;

    my $p = $self->{procs}{$what} or return;
    my $deadline = time + ($timeout // $STOP_TIMEOUT);

    while (time < $deadline) {
        my $st = _reaped($p->{pid});
        if (defined $st) {
            delete $self->{procs}{$what};
            return $st;
        }
        sleep 0.02;
    }

    return;
}


# Exit code (or -signal) of a process that is gone, undef while it runs;
# one that was not our child has no status we can know.
sub _reaped {
    my ($pid) = @_;

    my $r = waitpid($pid, WNOHANG);

    return $? & 127 ? -($? & 127) : $? >> 8 if $r == $pid;
    return 'gone, not our child' if $r == -1 && !process_alive($pid);
    return;
}


# workers(what): pids of the worker processes of this stack's nginx
# master ('nginx' or 'nginx_old'), from /proc: its children titled
# "nginx: worker process" (a sanitized master may also have a symbolizer
# as its child).
sub workers {
    my ($self, $what) = @_;

    my $p = $self->{procs}{$what // 'nginx'} or return ();

    my @pids = grep { ((proc_stat($_))[1] // 0) == $p->{pid}
                      && _title($_) =~ /^nginx: worker process/ }
        map { m{^/proc/(\d+)$} ? $1 : () } glob '/proc/[0-9]*';

    return sort { $a <=> $b } @pids;
}


# workers_dirty_kb(what): the private dirty memory of this stack's nginx
# workers ('nginx' or 'nginx_old'), summed, in KiB: what their heaps and
# stacks hold, from /proc/PID/smaps_rollup (VmRSS, which also counts the
# shared code and shared memory zones, where there is none).
sub workers_dirty_kb {
    my ($self, $what) = @_;

    my $kb = 0;

    for my $pid ($self->workers($what)) {
        my $file = -r "/proc/$pid/smaps_rollup" ? 'smaps_rollup' : 'status';
        open my $fh, '<', "/proc/$pid/$file" or next;
        while (my $line = <$fh>) {
            if ($line =~ /^(?:Private_Dirty|VmRSS):\s+(\d+)/) {
                $kb += $1;
                last;
            }
        }
        close $fh;
    }

    return $kb;
}


sub _title {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    my $title = <$fh> // '';
    close $fh;

    return $title;
}


# worker_of(client): the pid of the nginx worker of this stack that holds
# the server side of the client's TCP connection (found by the socket's
# inode in /proc/net/tcp and the workers' /proc/PID/fd), or undef.
sub worker_of {
    my ($self, $c) = @_;

    my $sock = $c->{sock} or return;
    my $local = sprintf '0100007F:%04X', $self->{port};
    my $remote = sprintf '0100007F:%04X', $sock->sockport;
    my $inode;

    open my $fh, '<', '/proc/net/tcp' or return;
    while (my $line = <$fh>) {
        my @f = split ' ', $line;
        next unless @f > 9 && $f[1] eq $local && $f[2] eq $remote;
        $inode = $f[9];
        last;
    }
    close $fh;

    return unless $inode;

    for my $pid (map { $self->workers($_) } qw(nginx nginx_old)) {
        for my $fd (glob "/proc/$pid/fd/*") {
            my $l = readlink $fd;
            return $pid if defined $l && $l eq "socket:[$inode]";
        }
    }

    return;
}


sub stop_nginx { $_[0]->_stop('nginx') }
sub stop_sidecar { $_[0]->_stop('sidecar') }
sub stop_redis { $_[0]->_stop('redis') }


# kill_proc(what, signal): sends the signal (default KILL) and reaps the
# process; for crash tests.  Returns the signal number it died of, or its
# exit code.
sub kill_proc {
    my ($self, $what, $sig) = @_;

    my $p = delete $self->{procs}{$what} or return;

    kill $sig // 'KILL',
        $p->{pgid} ? -$p->{pgid} : $p->{group} ? -$p->{pid} : $p->{pid};
    waitpid($p->{pid}, 0);
    $self->{killed}{$what} = 1;

    return $? & 127 ? $? & 127 : $? >> 8;
}


sub stop_all {
    my ($self) = @_;

    my %st;
    for my $what (qw(nginx_old nginx sidecar redis), _others($self)) {
        $st{$what} = $self->_stop($what) if $self->{procs}{$what};
    }

    return \%st;
}


sub running {
    my ($self, $what) = @_;
    return defined $self->{procs}{$what};
}


sub pid {
    my ($self, $what) = @_;
    return $self->{procs}{$what} ? $self->{procs}{$what}{pid} : undef;
}


# _spawn(what, log, { group => 1, fd3 => $socket, env => { k => v } },
# command...): group puts the process in a process group of its own; fd3
# passes a listening socket as systemd does (fd 3, LISTEN_FDS=1,
# LISTEN_PID the child's pid, which exec keeps).
sub _spawn {
    my ($self, $what, $log, $child, @cmd) = @_;

    die "$what already running in stack $self->{name}\n"
        if $self->{procs}{$what};

    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        eval {
            setpgrp(0, 0) if $child->{group};
            open STDIN, '<', '/dev/null' or die "stdin: $!";
            open STDOUT, '>>', $log or die "$log: $!";
            open STDERR, '>&', \*STDOUT or die "stderr: $!";
            if (my $fd3 = $child->{fd3}) {
                fileno($fd3) == 3 or defined dup2(fileno($fd3), 3)
                    or die "dup2: $!";
                # dup2 to itself keeps perl's close-on-exec flag
                open my $h, '<&=', 3 or die "fd 3: $!";
                fcntl($h, F_SETFD, 0) or die "fd 3: $!";
                @ENV{qw(LISTEN_FDS LISTEN_PID)} = (1, $$);
            }
            %ENV = (%ENV, %{ $child->{env} || {} });
            exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!";
        };
        print STDERR $@;
        _exit(127);
    }

    $self->{procs}{$what} = {
        pid => $pid, log => $log, group => $child->{group}, cmd => "@cmd",
    };

    return $pid;
}


sub _wait_ready {
    my ($self, $what, $check) = @_;

    my $p = $self->{procs}{$what};
    my $deadline = time + $START_TIMEOUT;

    while (time < $deadline) {
        if (waitpid($p->{pid}, WNOHANG) == $p->{pid}) {
            my $st = $?;
            delete $self->{procs}{$what};
            die "$what exited during startup (status $st): $p->{cmd}\n"
                . tail($p->{log}, 30);
        }

        return 1 if $check->();

        sleep 0.02;
    }

    die "$what not ready within ${START_TIMEOUT}s: $p->{cmd}\n"
        . tail($p->{log}, 30);
}


# Returns the exit code (or -signal if killed) of a stopped process,
# undef if it was not running.
sub _stop {
    my ($self, $what) = @_;

    my $p = delete $self->{procs}{$what} or return;
    my $pid = $p->{pid};

    kill 'TERM', $pid;

    my $deadline = time + $STOP_TIMEOUT;

    while (time < $deadline) {
        my $st = _reaped($pid);
        return $st if defined $st;
        sleep 0.02;
    }

    diag("stack $self->{name}: $what (pid $pid) ignored TERM for "
        . "${STOP_TIMEOUT}s, killing it");
    kill 'KILL', $p->{pgid} ? -$p->{pgid} : $p->{group} ? -$pid : $pid;
    waitpid($pid, 0);
    $self->{killed}{$what} = 1;

    return -9;
}


# wait_workers($n, $timeout): waits until nginx has $n worker processes
# (after a reload: the old ones gone), then for their links
# (wait_link).  Returns whether the count was reached.
sub wait_workers {
    my ($self, $n, $timeout) = @_;

    my $ok = wait_until(sub { my @w = $self->workers; @w == $n },
        timeout => $timeout // 15);

    $self->wait_link;

    return $ok;
}


# nginx_t($ws): "nginx -t" of a minimal configuration, written in this
# stack's directory (t.conf; its lines go to t.log there), whose /ws
# location has rooms_websocket and the directives $ws: ($status,
# $output).  nginx -t returns from main() with its configuration cycles
# still allocated, by design: no leak check for it under
# scripts/sanitize.
sub nginx_t {
    my ($self, $ws) = @_;

    my $dir = $self->{dir};

    write_file("$dir/t.conf", load_module() . <<"EOF");
error_log $dir/t.log;
pid $dir/t.pid;
events {}
http {
    access_log off;
    rooms_sidecar unix:$dir/none.sock;
    server {
        location = /ws {
            rooms_websocket;
            $ws
        }
    }
}
EOF

    local $ENV{ASAN_OPTIONS} = ($ENV{ASAN_OPTIONS} // '') . ':detect_leaks=0';
    my $out = `$NGINX -t -p $dir/ -c $dir/t.conf -e $dir/t.log 2>&1`;

    return ($? >> 8, $out);
}


# read_lines($file): the lines of a file, without their newlines; () if
# it cannot be read.
sub read_lines {
    my ($file) = @_;

    open my $fh, '<', $file or return ();
    my @l = <$fh>;
    chomp @l;

    return @l;
}


# --- teardown ---------------------------------------------------------------

# Lines of this stack's nginx error.log at [alert] or [crit].
sub alerts {
    my ($self) = @_;

    open my $fh, '<', $self->error_log or return ();
    return grep { /\[(alert|crit)\]/ } <$fh>;
}


# Stops every stack (nginx first, then sidecars, then Redis), checks that
# each stopped cleanly and that no error.log has [alert]/[crit] lines,
# and ends the test with done_testing.
sub finish {
    # an old master (binary upgrade) first: the new one is then our child
    $_->_stop_quiet('nginx_old') for @STACKS;

    my %st = map { $_->{name} => $_->_stop_quiet('nginx') } @STACKS;

    for my $t (@STACKS) {
        next unless defined $st{$t->{name}};
        is($st{$t->{name}}, 0, "stack $t->{name}: nginx exited 0 on TERM");
    }

    for my $t (@STACKS) {
        my $rc = $t->_stop('sidecar');
        is($rc, 0, "stack $t->{name}: sidecar exited 0 on TERM")
            if defined $rc;
    }

    for my $t (@STACKS) {
        $t->_stop($_) for 'redis', _others($t);
    }

    for my $t (@STACKS) {
        next unless -e $t->error_log;
        my @a = $t->alerts;
        ok(!@a, "stack $t->{name}: no [alert] or [crit] in error.log")
            or diag(join '', @a);
    }

    done_testing();
}


# The processes besides nginx, the sidecar and Redis (a Sentinel setup's),
# sentinels first.
sub _others {
    my ($self) = @_;

    return sort { ($b =~ /^sentinel/) <=> ($a =~ /^sentinel/) || $a cmp $b }
        grep { !/^(nginx_old|nginx|sidecar|redis)$/ }
        keys %{ $self->{procs} };
}


sub _stop_quiet {
    my ($self, $what) = @_;
    return $self->{procs}{$what} ? $self->_stop($what) : undef;
}


sub _cleanup {
    return unless $$ == $OWNER;

    my $passing = Test::More->builder->is_passing;

    for my $t (@STACKS) {
        $t->stop_all;
    }

    for my $t (@STACKS) {
        if (!$passing) {
            for my $f ($t->error_log, $t->sidecar_log) {
                next unless -s $f;
                diag("--- tail of $f ---\n" . tail($f, 40));
            }
        }

        my $keep = $ENV{ROOMS_TEST_KEEP} // '';
        if ($keep eq 'always' || (!$passing && $keep)) {
            diag("kept $t->{dir}");
            next;
        }

        remove_tree($t->{dir});
    }

    @STACKS = ();
}


END {
    my $rc = $?;
    _cleanup();
    $? = $rc;
}


# check_join(room => R, name => N, history => H, live => 15, stop_at => K,
# min_chats => C): joins this stack's room and checks the join was exact:
# welcome, then H backfilled chats (id <= welcome's last_id), then live
# ones; the chats' data.k consecutive and their ids increasing.  Reads
# until `live` chats after the backfill, or a chat with k == stop_at, or
# 5 s.  history => 'all': the history holds every chat so far (a history
# longer than the publishing), so the backfill is k = 1 .. its last, of
# any length but one.  Returns (error text or '', the newest k seen).
sub check_join {
    my ($self, %o) = @_;

    my $what = "join $o{name}";
    my $c = $self->connect($o{room}, $o{name});
    return ("$what refused", 0) unless ref $c;
    my $w = $c->recv_json(5);
    return ("$what: no welcome", 0) unless $w && $w->{type} eq 'welcome';
    my $last_id = $w->{data}{last_id};
    my $live = $o{live} // 15;

    my (@k, @id);
    my $backfill = 0;
    my $deadline = time + 5;
    while (time < $deadline) {
        my $m = $c->recv_json($deadline - time) or last;
        next unless $m->{type} eq 'chat';
        push @k, $m->{data}{k};
        push @id, $m->{id};
        $backfill++ if $m->{id} <= $last_id;
        last if @k >= $backfill + $live && $backfill > 0;
        last if defined $o{stop_at} && $k[-1] == $o{stop_at};
    }
    $c->close;

    my @gap = grep { $k[$_] != $k[$_ - 1] + 1 } 1 .. $#k;
    my @dec = grep { $id[$_] <= $id[$_ - 1] } 1 .. $#id;
    my @early = grep { $id[$_] > $last_id } 0 .. $backfill - 1;
    my $newest = @k ? $k[-1] : 0;

    my $bad_backfill = $o{history} eq 'all'
        ? $backfill < 1 || $k[0] != 1 : $backfill != $o{history};
    return ('', $newest) unless @gap || @dec || @early
        || $bad_backfill || @k < ($o{min_chats} // 0);
    return ("$what: backfill=$backfill last_id=$last_id chats=" . @k
        . " k=@k[0 .. ($#k < 40 ? $#k : 40)] gaps at [@gap]"
        . " non-increasing ids at [@dec]", $newest);
}


# check_joins(count => N, stop_at => K, room => R, history => H, ...):
# up to N joins named j1, j2, ... one after the other, each checked by
# check_join (the other options are its), until one fails or one saw
# chat K.  Returns (joins made, joins exact, the first failure's text).
sub check_joins {
    my ($self, %o) = @_;

    my $count = delete $o{count};
    my ($joins, $ok) = (0, 0);
    for my $j (1 .. $count) {
        my ($err, $newest) = $self->check_join(%o, name => "j$j");
        $joins++;
        return ($joins, $ok, $err) if $err;
        $ok++;
        last if defined $o{stop_at} && $newest == $o{stop_at};
    }

    return ($joins, $ok, '');
}


# publish_paced(client, count, interval): a child process that sends chat
# {"k": 1 .. count} through the client, one every interval seconds, in
# order, draining its own echoes; returns its pid (reap it with waitpid).
sub publish_paced {
    my ($c, $count, $interval) = @_;

    my $pid = fork() // die "fork: $!\n";
    return $pid if $pid;

    my $next = time;
    for my $k (1 .. $count) {
        $c->send_json({ type => 'chat', data => { text => '', k => $k } });
        while ($c->recv_json(0)) { }
        $next += $interval;
        my $left = $next - time;
        sleep $left if $left > 0;
    }

    _exit(0);
}


# --- helpers ----------------------------------------------------------------

# mem_cmp_ok(got, op, bound, name): cmp_ok for a bound on memory (RSS,
# dirty pages).  Skipped under ROOMS_SANITIZE: ASan's redzones,
# quarantine and shadow memory are counted too, and dwarf the bounds.
sub mem_cmp_ok { return _unsanitized_cmp_ok('memory is', @_) }


# cpu_cmp_ok(got, op, bound, name): cmp_ok for a bound on a ratio of CPU
# times.  Skipped under ROOMS_SANITIZE: ASan instruments every memory
# access, so per-frame and per-byte work slow down by different factors
# (t/35's tiny-frame ratio went from 5x to 34x); the suite without
# sanitizers asserts these bounds.
sub cpu_cmp_ok { return _unsanitized_cmp_ok('CPU ratios are', @_) }


sub _unsanitized_cmp_ok {
    my ($what, $got, $op, $bound, $name) = @_;

    if ($ENV{ROOMS_SANITIZE}) {
        my $tb = Test::More->builder;
        $tb->skip("under ASan $what not measured: $name "
            . "(got $got, bound $bound)");
        return 1;
    }

    # failures are reported at the caller of mem_cmp_ok / cpu_cmp_ok
    local $Test::Builder::Level = $Test::Builder::Level + 2;
    return cmp_ok($got, $op, $bound, $name);
}


# Retries $check every `interval` seconds until it returns true or
# `timeout` seconds pass; returns the check's last value.  Only for
# conditions that have no event to wait on.
sub wait_until {
    my ($check, %opts) = @_;

    my $timeout = $opts{timeout} // 5;
    my $interval = $opts{interval} // 0.05;
    my $deadline = time + $timeout;

    while (1) {
        my $r = $check->();
        return $r if $r;
        return $r if time >= $deadline;
        sleep $interval;
    }
}


# Makes this process a child subreaper (Linux prctl PR_SET_CHILD_SUBREAPER):
# a daemon, or a new nginx master whose parent exits, becomes its child,
# so that it can be stopped and reaped by PID.
my $SUBREAPER;

sub subreaper {
    return if $SUBREAPER;

    # h2ph's syscall.ph defines SYS_* in the package that first loads it
    my $nr = eval {
        require 'syscall.ph';
        (__PACKAGE__->can('SYS_prctl') || main->can('SYS_prctl'))->();
    } // die "subreaper: no SYS_prctl in syscall.ph: $@\n";
    syscall($nr, 36, 1, 0, 0, 0) == 0
        or die "prctl(PR_SET_CHILD_SUBREAPER): $!\n";
    $SUBREAPER = 1;
}


# (state, ppid, process group) of a process, from /proc/PID/stat; () if
# there is no such process.
sub proc_stat {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/stat" or return ();
    my $line = <$fh> // '';
    close $fh;

    my ($rest) = $line =~ /\)\s+(.*)$/ or return ();
    return (split ' ', $rest)[0 .. 2];
}


# CPU seconds (user + system) a process has used so far: from
# /proc/PID/schedstat (nanoseconds) where the kernel has it, else utime +
# stime of /proc/PID/stat (clock ticks, 100 a second); undef if there is
# no such process.
my $CLK_TCK;

sub proc_cpu {
    my ($pid) = @_;

    if (open my $fh, '<', "/proc/$pid/schedstat") {
        my ($ns) = split ' ', <$fh> // '';
        close $fh;
        return $ns / 1e9 if defined $ns && $ns =~ /^\d+$/;
    }

    open my $fh, '<', "/proc/$pid/stat" or return;
    my $line = <$fh> // '';
    close $fh;

    my ($rest) = $line =~ /\)\s+(.*)$/ or return;
    my ($utime, $stime) = (split ' ', $rest)[11, 12];
    $CLK_TCK //= eval { POSIX::sysconf(POSIX::_SC_CLK_TCK()) } || 100;

    return ($utime + $stime) / $CLK_TCK;
}


# Resident memory of a process in KiB (VmRSS of /proc/PID/status), 0 if
# there is no such process.
sub proc_rss {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) {
        return $1 if /^VmRSS:\s+(\d+)/;
    }

    return 0;
}


# Peak resident memory of a process in KiB (VmHWM of /proc/PID/status): a
# short-lived allocation that RSS no longer shows is still counted; 0 if
# there is no such process.
sub proc_hwm {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) {
        return $1 if /^VmHWM:\s+(\d+)/;
    }

    return 0;
}


# Running (not gone, not a zombie).
sub process_alive {
    my ($pid) = @_;

    my ($state) = proc_stat($pid);
    return defined $state && $state ne 'Z';
}


sub read_pid {
    my ($path) = @_;

    open my $fh, '<', $path or return;
    my $pid = <$fh> // '';
    close $fh;

    return $pid =~ /^(\d+)/ ? $1 : undef;
}


sub free_port {
    my $s = IO::Socket::INET->new(
        Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0,
        Proto => 'tcp', ReuseAddr => 1,
    ) or die "free_port: $!";

    my $port = $s->sockport;
    close $s;

    return $port;
}


sub port_open {
    my ($port) = @_;

    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => 1,
    ) or return 0;
    close $s;

    return 1;
}


sub redis_ping {
    my ($port) = @_;

    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => 1,
    ) or return 0;

    syswrite($s, "PING\r\n");

    my $buf = '';
    my $sel = IO::Select->new($s);

    while ($buf !~ /\r\n/ && $sel->can_read(1)) {
        last unless sysread($s, $buf, 512, length $buf);
    }

    close $s;

    return $buf =~ /^\+PONG/ ? 1 : 0;
}


# redis_command($port, @args): one command in RESP; returns the first
# reply line ('' without an answer within 2 s).
sub redis_command {
    my ($port, @args) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Timeout => 2) or return '';
    my $cmd = '*' . @args . "\r\n";
    $cmd .= '$' . length($_) . "\r\n$_\r\n" for @args;
    syswrite($s, $cmd);

    my $line = '';
    my $sel = IO::Select->new($s);
    while ($line !~ /\n/ && $sel->can_read(2)) {
        last unless sysread($s, $line, 512, length $line);
    }
    close $s;

    ($line) = split /\r?\n/, $line;
    return $line // '';
}


# redis_reply($port, @args): one command; its whole reply decoded
# (arrays as array refs, nil as undef, an error as { error => text });
# undef without an answer within 2 s.
sub redis_reply {
    my ($port, @args) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Timeout => 2) or return;
    my $cmd = '*' . @args . "\r\n";
    $cmd .= '$' . length($_) . "\r\n$_\r\n" for @args;
    syswrite($s, $cmd);

    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + 2;
    my $reply;
    while (1) {
        my $pos = 0;
        my $ok = eval { $reply = _resp(\$buf, \$pos); 1 };
        last if $ok;
        my $left = $deadline - time;
        if ($left <= 0 || !$sel->can_read($left)
            || !sysread($s, $buf, 65536, length $buf)) {
            close $s;
            return;
        }
    }
    close $s;

    return $reply;
}


# One RESP2 value from $$buf at $$pos; dies when the buffer ends first.
sub _resp {
    my ($buf, $pos) = @_;

    my $eol = index($$buf, "\r\n", $$pos);
    die "short\n" if $eol < 0;
    my $type = substr($$buf, $$pos, 1);
    my $line = substr($$buf, $$pos + 1, $eol - $$pos - 1);
    $$pos = $eol + 2;

    return { error => $line } if $type eq '-';
    return $line if $type eq '+' || $type eq ':';
    if ($type eq '$') {
        return undef if $line < 0;
        die "short\n" if length($$buf) < $$pos + $line + 2;
        my $v = substr($$buf, $$pos, $line);
        $$pos += $line + 2;
        return $v;
    }
    return undef if $line < 0;
    return [ map { _resp($buf, $pos) } 1 .. $line ];
}


# http_get($port, $path, %headers) -> ($status, $headers_text, $body);
# () if the server did not answer within 5 s.
sub http_get {
    my ($port, $path, %h) = @_;

    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => 2,
    ) or return;

    my $req = "GET $path HTTP/1.0\r\nHost: 127.0.0.1:$port\r\n";
    $req .= "$_: $h{$_}\r\n" for sort keys %h;
    $req .= "\r\n";
    syswrite($s, $req);

    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + 5;

    while (1) {
        my $left = $deadline - time;
        return if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }

    close $s;

    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    return unless defined $head && $head =~ m{^HTTP/1\.\d (\d{3})};

    return ($1, $head, $body // '');
}


sub write_file {
    my ($path, $text) = @_;

    open my $fh, '>', $path or die "$path: $!";
    print {$fh} $text;
    close $fh or die "$path: $!";
}


sub tail {
    my ($path, $n) = @_;

    open my $fh, '<', $path or return '';
    my @lines = <$fh>;
    splice @lines, 0, @lines - $n if @lines > $n;

    return join '', @lines;
}


# $t->connect(room, name, %opts): a WebSocket client on this stack's nginx,
# or the HTTP status of a refused upgrade (see Rooms::Test::Client).
sub connect {
    my ($self, $room, $name, %opts) = @_;

    return Rooms::Test::Client->connect(
        port => $self->{port}, room => $room, name => $name, %opts);
}


1;
