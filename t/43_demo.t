#!/usr/bin/perl

# The demo page (demo/index.html) in headless Chromium (Debian's
# chromium, driven by puppeteer-core from t/node; skipped if either is
# missing), served by this stack's nginx as scripts/demo serves it.
# t/node/demo_check.js: two users chat (each sees the other's message, an
# own message goes sending -> sent), the presence panel lists both, shows
# a ready mark after "I'm ready" and who is typing; the Rooms panel shows
# the room with its count; odd envelopes from a raw client are shown as
# text or skipped (no "undefined", no "[object Object]", no markup run);
# an over-limit message is refused by the page before sending, its text
# kept, and the longest one allowed is sent; nothing overflows 375 px; a
# third user joining later sees the history; a reload keeps room, name
# and the room; after a sidecar restart and an nginx reload the pages
# carry on by themselves (the reload closes them with 1001 after 2 s:
# they reconnect on their own).  Here: scripts/demo's /favicon.ico location
# (taken from the script) answers 200, and error.log has no 404.
# Screenshots (desktop, 375 px) go to the test's temp dir.

use strict;
use warnings;

use FindBin;
use POSIX qw(setpgid);
use Test::More;

use Rooms::Test qw(http_get);

my $CHROMIUM = $ENV{ROOMS_CHROMIUM} || '/usr/bin/chromium';
my $NODE_DIR = "$FindBin::Bin/node";
my $DEMO = "$FindBin::Bin/../demo";
my $LIMIT = 180;                     # seconds for the whole browser run

my $node = Rooms::Test::which('node');
plan(skip_all => "$CHROMIUM missing (Debian package chromium)")
    unless -x $CHROMIUM;
plan(skip_all => 'node or t/node/node_modules/puppeteer-core missing '
    . '(run npm ci in t/node)')
    unless $node && -d "$NODE_DIR/node_modules/puppeteer-core";

# scripts/demo's own favicon location, with its paths
my $REPO = "$FindBin::Bin/..";
open my $demo_sh, '<', "$REPO/scripts/demo" or die "scripts/demo: $!";
my ($favicon) = do { local $/; <$demo_sh> }
    =~ m{^(\s*location = /favicon\.ico \{.*?^\s*\})}ms;
ok($favicon, 'scripts/demo serves /favicon.ico');
$favicon //= '';
$favicon =~ s/\$top\b/$REPO/g;

my $t = Rooms::Test->new;
my $dir = $t->dir;

$t->start_redis;
$t->start_sidecar;
my $port = $t->start_nginx(
    main => 'worker_shutdown_timeout 2s;',
    http => <<'EOF',
    rooms_shutdown_spread 1s;
    types {
        text/html html;
        image/svg+xml svg;
    }
    default_type application/octet-stream;
    charset utf-8;
EOF
    server => <<"EOF");
        location / {
            root $DEMO;
        }
$favicon
EOF

my ($st, $head) = http_get($port, '/favicon.ico');
ok($st && $st == 200 && $head =~ m{^Content-Type: image/svg\+xml}mi,
    'GET /favicon.ico: 200, image/svg+xml');

# Each step is done once every worker's link is up ("sidecar ... ready"
# in error.log, once per worker): until then a worker answers GET /rooms
# with 503, which the pages may see (demo_check.js expects it then).
my $links = sub {
    scalar grep { /rooms: sidecar at .* ready/ }
        Rooms::Test::read_lines($t->error_log);
};
my $linked = sub {
    my ($what, $before) = @_;
    ok(Rooms::Test::wait_until(sub { $links->() >= $before + 2 },
        timeout => 15), "$what: both workers linked to the sidecar");
};
my %do = (
    restart_sidecar => sub {
        my $before = $links->();
        $t->kill_proc('sidecar', 'KILL');
        $t->start_sidecar;
        $linked->('restart_sidecar', $before);
    },
    reload_nginx => sub {
        my $before = $links->();
        $t->signal('nginx', 'HUP');
        $linked->('reload_nginx', $before);
    },
);

pipe(my $from_node, my $node_out) or die "pipe: $!";
pipe(my $node_in, my $to_node) or die "pipe: $!";

my $pid = fork // die "fork: $!";
if ($pid == 0) {
    # a group of its own: node and its Chromium are stopped together
    setpgid(0, 0);
    close $from_node;
    close $to_node;
    open STDIN, '<&', $node_in or die "stdin: $!";
    open STDOUT, '>&', $node_out or die "stdout: $!";
    open STDERR, '>&', \*STDOUT or die "stderr: $!";
    $ENV{ROOMS_CHROMIUM} = $CHROMIUM;
    exec $node, "$NODE_DIR/demo_check.js", "http://127.0.0.1:$port/", $dir,
        'DEMO' or die "exec: $!";
}
close $node_in;
close $node_out;
$to_node->autoflush(1);

my $n = 0;
my $done = 0;
eval {
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm $LIMIT;
    while (my $line = <$from_node>) {
        chomp $line;
        if ($line =~ /^(not )?ok - (.*)$/) {
            ok(!$1, $2);
            $n++;
        } elsif ($line =~ /^do (\w+)$/ && $do{$1}) {
            $do{$1}->();
            print {$to_node} "done $1\n";
        } else {
            diag($line);
        }
    }
    alarm 0;
    $done = 1;
};
if (!$done) {
    fail("the browser run ended within $LIMIT s");
    kill 'KILL', -$pid;
}
waitpid($pid, 0);
is($?, 0, 'demo_check.js exited 0');
cmp_ok($n, '>=', 40, 'every check ran');

ok(-s "$dir/demo-desktop.png" && -s "$dir/demo-mobile.png",
    'screenshots taken');

open my $log, '<', $t->error_log or die "error.log: $!";
my @missing = grep { /No such file|favicon|\[error\].*open\(\)/ } <$log>;
ok(!@missing, 'no 404 (favicon or other) in error.log')
    or diag(join '', @missing);

$t->finish;
