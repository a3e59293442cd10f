#!/usr/bin/perl

# Cross-check with WebSocket clients nobody here wrote: Python's
# `websockets` (Debian python3-websockets) and Node's `ws` (npm, installed
# in t/node by `npm ci`).  Each connects, sends messages of 0 B up to the
# size limit (chat envelopes padded to the size; below the smallest
# envelope, text that is not JSON), gets them back whole, has limit + 1
# closed with 1009 and closes cleanly with 1000; over ws:// with the
# default 16 KiB limit, with a 128 KiB limit (server frames with 64-bit
# lengths) and over wss://.  Each client is skipped if it is missing.

use strict;
use warnings;

use FindBin;
use Test::More;

use Rooms::Test qw(free_port);

my $PYTHON = '/usr/bin/python3';    # Debian's, with python3-websockets
my $NODE_DIR = "$FindBin::Bin/node";
my $PY_SCRIPT = "$FindBin::Bin/clients/ws_check.py";

my @SMALL = (0, 1, 33, 34, 35, 125, 126, 127, 1000, 4096, 16383, 16384);
my @BIG = (65535, 65536, 70000, 131072);

my %clients;

if (-x $PYTHON && system($PYTHON, '-c', 'import websockets') == 0) {
    $clients{python} = [ $PYTHON, $PY_SCRIPT ];
} else {
    diag('python3-websockets missing: Python client skipped');
}

my $node = Rooms::Test::which('node');
if ($node && -d "$NODE_DIR/node_modules/ws") {
    $clients{node} = [ $node, "$NODE_DIR/ws_check.js" ];
} else {
    diag('node or t/node/node_modules/ws missing (run npm ci in t/node): '
        . 'Node client skipped');
}

plan(skip_all => 'neither Python websockets nor Node ws available')
    unless %clients;

my $t = Rooms::Test->new;
my $dir = $t->dir;

my $openssl = Rooms::Test::which('openssl');
my $tls = $openssl && system("$openssl req -x509 -newkey ec "
    . "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
    . "-keyout $dir/key.pem -out $dir/cert.pem -subj /CN=localhost "
    . '-batch >/dev/null 2>&1') == 0 ? free_port() : undef;

$t->start_redis;

# the sidecar's own envelope limit must not be the one under test
$t->start_sidecar(undef, args => [ '--max-message-bytes', '0' ]);

my $port = $t->start_nginx(
    server => <<'EOF',
        location = /ws-big {
            rooms_websocket;
            rooms_max_message_size 128k;
        }
EOF
    http => !$tls ? '' : <<"EOF");
    server {
        listen 127.0.0.1:$tls ssl;
        ssl_certificate $dir/cert.pem;
        ssl_certificate_key $dir/key.pem;

        location = /ws {
            rooms_websocket;
        }
    }
EOF


# run($client, $what, $url, $limit, @sizes): runs one client script and
# turns its TAP lines into tests.
sub run {
    my ($client, $what, $url, $limit, @sizes) = @_;

    my @cmd = (@{ $clients{$client} }, $url, $limit, @sizes);
    my $pid = open(my $fh, '-|') // die "fork: $!";

    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        # bounded: a client that hangs is killed
        alarm 60;
        exec { $cmd[0] } @cmd or die "exec: $!";
    }

    my $n = 0;
    while (my $line = <$fh>) {
        chomp $line;
        if ($line =~ /^(not )?ok - (.*)$/) {
            ok(!$1, "$what: $2");
            $n++;
        } else {
            diag("$what: $line");
        }
    }
    close $fh;

    is($?, 0, "$what: $client client exited 0");
    # welcome, one per size, clean close, 1009
    is($n, @sizes + 3, "$what: every check ran");
}

for my $client (sort keys %clients) {
    my $n = 0;
    my $url = sub {
        my ($scheme, $p, $path) = @_;
        $n++;
        return "$scheme://127.0.0.1:$p$path?room=X$client$n&name=$client$n";
    };

    run($client, "$client ws", $url->('ws', $port, '/ws'), 16384, @SMALL);
    run($client, "$client ws 128k", $url->('ws', $port, '/ws-big'),
        131072, @BIG);

    SKIP: {
        skip 'openssl missing: no wss', 1 unless $tls;
        run($client, "$client wss", $url->('wss', $tls, '/ws'), 16384,
            @SMALL);
    }
}

$t->finish;
