#!/usr/bin/perl

# The Debian packages (scripts/package), installed on this machine as an
# operator would: apt-get install ./*.deb puts the module in place and
# enables it in /etc/nginx/modules-enabled (nginx -t passes with it),
# and creates the rooms user; the sidecar runs as its unit runs it
# (ExecStart, User=, Group=, NoNewPrivileges= from the installed unit,
# the socket passed as fd 3 as rooms-sidecar.socket passes it, the
# packaged /etc/rooms/sidecar.conf; only Redis and the socket path are
# this test's); the packaged nginx, loading the module through
# modules-enabled, runs a chat; then apt-get purge leaves no file of
# either package, no link, no unit state and no rooms user.
#
# Runs as root with dpkg and apt-get, on the packages in ROOMS_PACKAGES
# (scripts/test's packages step builds them there); skips otherwise, and
# when either package or a rooms user is already on the machine (it would
# purge them).

use strict;
use warnings;

use File::Spec;
use Test::More;

my @PKGS = qw(libnginx-mod-http-rooms rooms-sidecar);
my $DIR = $ENV{ROOMS_PACKAGES};

sub run_quiet {
    my ($log, @cmd) = @_;
    my $out = qx{@{[ join ' ', map { quotemeta } @cmd ]} 2>&1};
    my $rc = $?;
    if (open my $fh, '>>', $log) {
        print $fh "\$ @cmd\n$out\n";
    }
    return wantarray ? ($rc, $out) : $rc;
}

sub installed {
    my $st = qx{dpkg-query -W -f='\${db:Status-Abbrev}' $_[0] 2>/dev/null};
    return $st =~ /^.i/;
}

my @debs;
BEGIN {
    my $why;
    if ($> != 0) {
        $why = 'not root (installs packages)';
    } elsif (!grep { -x "$_/dpkg" } File::Spec->path) {
        $why = 'no dpkg';
    } elsif (!grep { -x "$_/apt-get" } File::Spec->path) {
        $why = 'no apt-get';
    } elsif (!$ENV{ROOMS_PACKAGES}) {
        $why = 'ROOMS_PACKAGES not set (scripts/test, step packages)';
    }
    if (!$why) {
        for my $p (qw(libnginx-mod-http-rooms rooms-sidecar)) {
            my @f = glob("$ENV{ROOMS_PACKAGES}/${p}_*.deb");
            if (@f != 1) {
                $why = "not one ${p}_*.deb in $ENV{ROOMS_PACKAGES}";
                last;
            }
            push @debs, $f[0];
        }
    }
    if (!$why) {
        for my $p (qw(libnginx-mod-http-rooms rooms-sidecar)) {
            $why = "$p is installed already" if installed($p);
        }
        $why = 'a user rooms exists already' if defined getpwnam('rooms');
    }
    plan(skip_all => $why) if $why;
}

use Rooms::Test qw(wait_until);

my $t = Rooms::Test->new(packaged => 1);
my $log = $t->dir . '/apt.log';
my $NGINX = $ENV{ROOMS_NGINX} || '/usr/sbin/nginx';

$ENV{DEBIAN_FRONTEND} = 'noninteractive';
my @APT = ('apt-get', '-y', '-q', '-o', 'DPkg::Lock::Timeout=300');

# whatever happens, the machine is left without the packages and user
my $purged = 0;
sub purge {
    return if $purged++;
    $t->stop_all;
    return run_quiet($log, @APT, 'purge', @PKGS);
}
END { local $?; purge() if $t && !$purged }

my ($rc0) = run_quiet($log, $NGINX, '-t', '-q');
note("the machine's nginx -t before install: exit $rc0");

# --- install ------------------------------------------------------------------

my ($rc, $out) = run_quiet($log, @APT, 'install', @debs);
is($rc, 0, 'apt-get install ./libnginx-mod-http-rooms*.deb ./rooms-sidecar*.deb')
    or diag($out);
ok(installed($_), "$_ installed") for @PKGS;

my %files;
for my $p (@PKGS) {
    $files{$p} = [ grep { $_ ne '/.' } split /\n/, qx{dpkg -L $p} ];
}

my $so = '/usr/lib/nginx/modules/ngx_http_rooms_module.so';
my $link = '/etc/nginx/modules-enabled/50-mod-http-rooms.conf';
ok(-f $so, "module at $so");
is(readlink $link, '/usr/share/nginx/modules-available/mod-http-rooms.conf',
    "$link links to modules-available");
like(qx{cat $link}, qr{^load_module modules/ngx_http_rooms_module\.so;$}m,
    'the enabled conf loads the module');

my @pw = getpwnam('rooms');
ok(@pw, 'user rooms exists');
cmp_ok($pw[2], '<', 1000, 'rooms is a system user') if @pw;

# nginx -t of the machine's own configuration, the module enabled
SKIP: {
    skip("the machine's nginx -t failed before install", 2) if $rc0;
    ($rc, $out) = run_quiet($log, $NGINX, '-T');
    is($rc, 0, 'nginx -t passes with the module enabled') or diag($out);
    like($out, qr{load_module modules/ngx_http_rooms_module\.so;},
        'nginx -T shows the load_module line');
}

# --- the sidecar as its unit runs it ------------------------------------------

my $unit = '/lib/systemd/system/rooms-sidecar.service';
my %u;
for (split /\n/, qx{cat $unit}) {
    $u{$1} = $2 if /^(ExecStart|User|Group|NoNewPrivileges)=(.*)$/;
}
like($u{ExecStart} // '', qr{^/usr/bin/rooms-sidecar --config /etc/rooms/sidecar\.conf$},
    'the unit runs /usr/bin/rooms-sidecar with the packaged config');
ok(-f '/etc/rooms/sidecar.conf', '/etc/rooms/sidecar.conf installed');
ok(-f '/lib/systemd/system/rooms-sidecar.socket', 'socket unit installed');

$t->start_redis;
# the notify socket, in the test's directory, is for the rooms user too
chmod 0711, $t->dir or die "chmod: $!";
$t->start_sidecar(undef, listen_fd => 1, log_level => 'info', command => [
    'setpriv', "--reuid=$u{User}", "--regid=$u{Group}", '--init-groups',
    ($u{NoNewPrivileges} // '') eq 'yes' ? '--no-new-privs' : (),
    '--', split(' ', $u{ExecStart}) ]);

my $uid = (grep { /^Uid:/ } split /\n/, qx{cat /proc/@{[ $t->pid('sidecar') ]}/status})[0];
like($uid // '', qr/^Uid:\s+$pw[2]\s/, 'the sidecar runs as rooms') if @pw;

# The packaged nginx; load_module's relative path is the prefix's
# (/usr/share/nginx for Debian's nginx): the test's prefix gets the link.
symlink('/usr/share/nginx/modules', $t->dir . '/modules')
    or die "symlink: $!";
$t->start_nginx(load => "include /etc/nginx/modules-enabled/*.conf;\n");

my $alice = $t->connect('PKG', 'Alice');
ok(ref $alice, 'Alice upgrades through the packaged module')
    or diag($Rooms::Test::Client::LAST);
my $bob = $t->connect('PKG', 'Bob');
ok(ref $bob, 'Bob upgrades') or diag($Rooms::Test::Client::LAST);

SKIP: {
    skip('no clients', 3) unless ref $alice && ref $bob;
    is(($alice->recv_json(5) || {})->{type}, 'welcome', 'Alice: welcome');
    is(($bob->recv_json(5) || {})->{type}, 'welcome', 'Bob: welcome');
    $alice->send_json({ type => 'chat', data => { text => 'packaged' } });
    my $m = $bob->wait_for(type => 'chat', timeout => 5);
    is($m && "$m->{data}{from}: $m->{data}{text}", 'Alice: packaged',
        "Bob receives Alice's chat");
    $alice->close;
    $bob->close;
}

$t->stop_nginx;
is($t->stop_sidecar, 0, 'the packaged sidecar exits 0 on TERM');

# --- purge ----------------------------------------------------------------------

($rc, $out) = purge();
is($rc, 0, 'apt-get purge both') or diag($out);
ok(!installed($_), "$_ gone from dpkg") for @PKGS;

for my $p (@PKGS) {
    my @left;
    for my $f (@{ $files{$p} }) {
        next unless -e $f || -l $f;
        # a directory stays if another package has it too, or if it is
        # the system's alias (merged /usr: /lib -> usr/lib)
        next if -d $f && (-l $f
            || system("dpkg-query -S '$f' >/dev/null 2>&1") == 0);
        push @left, $f;
    }
    is("@left", '', "$p: none of its files is left");
}

my @extra = grep { -e $_ || -l $_ } ("$link", "$link.removed", '/etc/rooms',
    glob('/etc/systemd/system/*/rooms-sidecar.*'),
    glob('/var/lib/systemd/deb-systemd-helper-enabled/rooms-sidecar.*'),
    glob('/var/lib/systemd/deb-systemd-helper-enabled/*/rooms-sidecar.*'));
is("@extra", '', 'no link, config or unit state left');
ok(!defined getpwnam('rooms'), 'user rooms removed');

SKIP: {
    skip("the machine's nginx -t failed before install", 1) if $rc0;
    is(scalar run_quiet($log, $NGINX, '-t', '-q'), 0,
        "the machine's nginx -t passes after the purge");
}

$t->finish;
