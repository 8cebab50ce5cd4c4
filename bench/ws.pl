#!/usr/bin/perl
# WebSocket fan-out benchmark: N subscribers on ONE room, Nchan (baseline)
# and fleetgate, same machine, same run.
#
#   perl bench/ws.pl [--target nchan|fleetgate|both] [--subs 1000,10000]
#   perl bench/ws.pl --proto sio [--target node|fleetgate|both] [--subs 5000]
#
# --proto sio: the same measurements for Socket.IO clients (ws-load -E:
# Engine.IO 4 over WebSocket, CONNECT with the token, join_room
# "dashboard"), fleetgate against a Node socket.io server
# (bench/sio-baseline.js: one process, the usual deployment without an
# adapter).  fleetgate publishes with fleet_notify('sio_emit', ...), the
# event a device's MQTT message or POST /api/v1/events becomes; Node gets
# the same JSON on an HTTP POST /publish (its MQTT feed takes the same
# path into io.to().emit()).
#
# Options (defaults): --sat-seconds 10, --lat-seconds 10, --lat-rate 10,
# --rounds 3, --window 8, --publishers 4 (Nchan), --batch 3000,
# --quiet-wait 30, --quiet-below 15, --max-messages 200000,
# --connect-rate 4000, --worker-connections 20000, --fleet-path
# /ws/sensor-data/, --fleet-extra-server/--fleet-extra-http (nginx lines for
# FleetStack), --keep (keep the temp dir), --verbose.
#
# For every subscriber count N, with fresh nginx workers:
#   - nginx worker RSS per connection: sum of the workers' VmRSS after N
#     subscribers are connected, minus before, divided by N;
#   - latency at a low rate: --lat-rate messages/s for --lat-seconds,
#     publish -> receive p50/p99/max over every (message, subscriber);
#   - saturation: publishing for --sat-seconds (bounded by --max-messages),
#     as fast as delivery allows: a new message goes out while fewer than
#     --window messages per subscriber are on their way (published x N minus
#     received), so the server always has work and its memory stays bounded;
#     delivered messages/s (first to last arrival) and latency.  Meanwhile
#     ws-load sleeps up to --batch us after a wakeup that found few sockets
#     ready, so that its reads carry several frames (the load generator shares
#     the 2 CPUs with nginx: the less it takes, the more the server gets).
# Both measurements run --rounds times; the machine is shared, so each round
# first waits (at most --quiet-wait s) until other processes use less than
# --quiet-below % of a CPU, and the round with the least CPU used by other
# processes is reported (all rounds are printed).
#
# Subscribers: bench/ws-load.c (one epoll thread, built here with cc -O2).
# Messages: ~200-byte JSON {"type":"sensor_data_update",...,"value":<publish
# time in us>,...}.  Nchan: HTTP POSTs on --publishers keep-alive connections
# (one request in flight on each) to its nchan_publisher location
# (bench/nchan.conf.in).  fleetgate: SELECT fleet_notify('sensor_data_update',
# ...) on one PostgreSQL connection, which the module turns into the text
# message; subscribers connect to
# ws://127.0.0.1:PORT/ws/sensor-data/?access_token=<admin JWT>.
#
# fleetgate's stack comes from t/lib/FleetStack.pm (option worker_connections,
# 20000 here; worker_rlimit_nofile follows); every subscriber count gets new
# workers from its reload_nginx.  The Nchan side runs from bench/nchan.conf.in
# with the same worker count, connection limit and error_log level.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

BEGIN { $ENV{FLEET_TEST_TIMEOUT} = 0; $ENV{MOJO_REACTOR} //= 'Mojo::Reactor::Poll' }
use Cwd qw(abs_path);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use Getopt::Long;
use IO::Socket::INET;
use POSIX qw(WNOHANG strftime);
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);

my $ROOT = abs_path("$FindBin::Bin/..");
my %o = (
    target => 'both', subs => '1000,10000', 'sat-seconds' => 10, 'lat-seconds' => 10,
    'lat-rate' => 10, window => 8, 'max-messages' => 200000, 'connect-rate' => 4000,
    'fleet-path' => '/ws/sensor-data/', 'fleet-extra-server' => '', 'fleet-extra-http' => '',
    'worker-connections' => 20000, room => 'bench', publishers => 4, batch => 3000,
    rounds => 3, 'quiet-wait' => 30, 'quiet-below' => 15, proto => 'ws',
);
GetOptions(\%o, 'target=s', 'subs=s', 'sat-seconds=f', 'lat-seconds=f', 'lat-rate=f',
    'window=f', 'max-messages=i', 'connect-rate=f', 'fleet-path=s', 'fleet-extra-server=s',
    'fleet-extra-http=s', 'worker-connections=i', 'room=s', 'publishers=i', 'batch=i', 'rounds=i', 'quiet-wait=f', 'quiet-below=f', 'keep', 'proto=s',
    'verbose')
    or die "usage: perl bench/ws.pl [--target nchan|fleetgate|both] [--subs 1000,10000] ...\n";
$o{proto} =~ /^(ws|sio)$/ or die "--proto: ws or sio\n";
my $BASE = $o{proto} eq 'sio' ? 'node' : 'nchan';
$o{target} =~ /^($BASE|fleetgate|both)$/ or die "--target: $BASE, fleetgate or both\n";
my @subs = split /,/, $o{subs};
/^\d+$/ && $_ >= 1 && $_ <= 20000 or die "--subs: counts from 1 to 20000\n" for @subs;
my ($max_subs) = sort { $b <=> $a } @subs;
die "--worker-connections must exceed the largest subscriber count\n"
    if $o{'worker-connections'} < $max_subs + 100;
$o{'sat-seconds'} <= 120 && $o{'lat-seconds'} <= 120 or die "phases are bounded to 120 s\n";

$| = 1;
my $WS_LOAD = "$ROOT/build/bench/ws-load";
my $tmp = tempdir('ws-bench-XXXXXX', DIR => $ENV{TMPDIR} // '/tmp', CLEANUP => !$o{keep});
my %children;                   # pid => what (ws-load)
my @cleanup;                    # subs run at exit (nginx stops)

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub { print STDERR "ws.pl: caught SIG$sig, cleaning up\n"; exit 130 };
}
$SIG{PIPE} = 'IGNORE';
END {
    local $?;
    for my $pid (keys %children) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
    $_->() for reverse @cleanup;
}

build_ws_load();

# ---------------------------------------------------------------- the message

# ~200 bytes as Nchan's subscribers get it; fleetgate's server builds the
# same fields from the jsonb (its text form may space them differently)
my $TS = '2026-11-23T00:00:00Z';
my $PAD_LEN = do {
    my $probe = body_json('', 1764000000000000);
    my $n = 200 - length $probe;
    $n > 0 ? $n : 1;
};
my $PAD = substr('bench-room-padding-' x 20, 0, $PAD_LEN);

sub body_json {
    my ($pad, $us) = @_;
    return qq({"type":"sensor_data_update","sensor_id":1,"sensor_type":"temperature",)
         . qq("device_id":"bench","device_name":"$pad","value":$us,"unit":"celsius",)
         . qq("timestamp":"$TS"});
}

sub now_us { sprintf '%.0f', time * 1e6 }

# ---------------------------------------------------------------- targets

my %result;                     # target => N => { ... }
my @targets = $o{target} eq 'both' ? ($BASE, 'fleetgate') : ($o{target});
for my $t (@targets) {
    my $ok = eval {
        my $srv = $t eq 'nchan' ? nchan_server()
                : $t eq 'node' ? node_sio_server()
                : fleet_server();
        for my $n (@subs) {
            # one count failing leaves the others to run
            $result{$t}{$n} = eval { run_one($srv, $n) } // do {
                print STDERR "ws.pl: $t, $n subscribers: $@";
                { subs => $n, error => $@ || 'unknown error' };
            };
        }
        $srv->{stop}->();
        1;
    };
    unless ($ok) {
        my $err = $@ || 'unknown error';
        print STDERR "ws.pl: $t: $err";
        $result{$t}{error} = $err;
    }
}
report();
exit 0;

# ---------------------------------------------------------------- Nchan

sub nchan_server {
    my $dir = "$tmp/nchan";
    make_path("$dir/tmp");
    my $port;
    my $pidfile = "$dir/nginx.pid";
    my $conf = "$dir/nginx.conf";
    my $master;
    my $stop = sub {
        return unless -f $pidfile;
        my ($pid) = slurp($pidfile) =~ /(\d+)/ or return;
        return unless slurp("/proc/$pid/cmdline") =~ /nginx/;
        kill 'TERM', $pid;      # fast shutdown: subscribers are gone anyway
        wait_until(10, sub { !kill 0, $pid }) or kill 'KILL', $pid;
        wait_until(5, sub { !kill 0, $pid });
        unlink $pidfile;
    };
    push @cleanup, $stop;
    my $start = sub {
        $stop->();
        for my $attempt (1 .. 3) {
            $port = free_port();
            my $t = slurp("$FindBin::Bin/nchan.conf.in");
            my %v = (USER_LINE => ($> == 0 ? 'user root;' : ''), WORKERS => 2, DIR => $dir,
                     PORT => $port, WORKER_CONNECTIONS => $o{'worker-connections'},
                     RLIMIT => 2 * $o{'worker-connections'} + 1000);
            $t =~ s/\@([A-Z_]+)\@/exists $v{$1} ? $v{$1} : die "nchan.conf.in: no value for \@$1\@\n"/ge;
            spit($conf, $t);
            system('/usr/sbin/nginx', '-p', "$dir/", '-c', $conf, '-e', "$dir/error.log") == 0
                or do { next if slurp("$dir/error.log") =~ /in use/ && $attempt < 3;
                        die "nginx (Nchan) did not start:\n" . tail("$dir/error.log") };
            wait_until(10, sub { -s $pidfile && port_open($port) })
                or die "nginx (Nchan) did not listen:\n" . tail("$dir/error.log");
            ($master) = slurp($pidfile) =~ /(\d+)/;
            wait_until(10, sub { worker_pids($master) == 2 }) or die "Nchan: no 2 workers\n";
            return;
        }
    };
    -f '/usr/lib/nginx/modules/ngx_nchan_module.so'
        or die "Nchan is not installed: apt-get install -y libnginx-mod-nchan\n";

    # --publishers keep-alive connections, at most one request in flight on
    # each: Nchan answers a publish once its worker has handed the message
    # to its own subscribers, so one connection alone cannot keep two
    # workers busy
    my ($room, @pc);
    my $close_all = sub { close $_->{sock} for grep { $_->{sock} } @pc; @pc = () };
    my $open = sub {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                         Proto => 'tcp', Timeout => 5)
            or die "cannot connect to Nchan's publisher: $!\n";
        setsockopt($sock, IPPROTO_TCP, TCP_NODELAY, 1);
        $sock->blocking(0);
        return { sock => $sock, busy => 0, buf => '', req => '', retried => 0 };
    };
    my $write = sub {
        my ($c, $req) = @_;
        my ($off, $deadline) = (0, time + 10);
        while ($off < length $req) {
            my $w = syswrite($c->{sock}, $req, length($req) - $off, $off);
            if (!defined $w) {
                die "Nchan publish: write: $!\n" unless $!{EAGAIN} && time < $deadline;
                sleep 0.0005;
                next;
            }
            $off += $w;
        }
    };
    my $send = sub {
        @pc = map { $open->() } 1 .. $o{publishers} unless @pc;
        my ($c) = grep { !$_->{busy} } @pc or return 0;
        my $body = body_json($PAD, now_us());
        my $req = "POST /pub/$room HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
        $write->($c, $req);
        @$c{qw(busy buf req retried)} = (1, '', $req, 0);
        return 1;
    };
    # reads answers for up to $timeout seconds; returns the number in flight
    my $poll = sub {
        my $timeout = shift;
        my @busy = grep { $_->{busy} } @pc;
        unless (@busy) { sleep $timeout if $timeout > 0; return 0 }
        my $rin = '';
        vec($rin, fileno($_->{sock}), 1) = 1 for @busy;
        select(my $rout = $rin, undef, undef, $timeout);
        for my $c (@busy) {
            next unless vec($rout, fileno($c->{sock}), 1);
            my $r = sysread($c->{sock}, $c->{buf}, 65536, length $c->{buf});
            next if !defined $r && $!{EAGAIN};
            if (!$r) {
                # closed while idle (keepalive_timeout): the same request on
                # a new connection, once
                die "Nchan publish: connection closed without an answer\n"
                    if $c->{retried} || length $c->{buf};
                my $req = $c->{req};
                %$c = %{ $open->() };
                $write->($c, $req);
                @$c{qw(busy buf req retried)} = (1, '', $req, 1);
                next;
            }
            my $i = index($c->{buf}, "\r\n\r\n");
            next if $i < 0;
            my $head = substr($c->{buf}, 0, $i + 4);
            my ($cl) = $head =~ /^Content-Length:\s*(\d+)/mi;
            die "Nchan publish: no Content-Length:\n$head" unless defined $cl;
            next if length($c->{buf}) < $i + 4 + $cl;
            $head =~ /^HTTP\/1\.1 20[0-2]/
                or die "Nchan publish failed: " . substr($c->{buf}, 0, 300) . "\n";
            $c->{busy} = 0;
            # keepalive_requests reached: a new connection in its place
            %$c = %{ $open->() } if $head =~ /^Connection:\s*close/mi;
        }
        return scalar grep { $_->{busy} } @pc;
    };
    return {
        name    => 'nchan',
        port    => sub { $port },
        path    => sub { "/sub/$room" },
        headers => [],
        # fresh workers (and a fresh room) for every subscriber count
        fresh   => sub { my $n = shift; $close_all->(); $start->(); $room = "$o{room}$n"; },
        workers => sub { worker_pids($master) },
        aux     => sub { () },
        send    => $send,
        poll    => $poll,
        stop    => sub { $close_all->(); $stop->() },
        errlog  => sub { tail("$dir/error.log") },
    };
}

# ---------------------------------------------------------------- fleetgate

sub fleet_server {
    require FleetStack;
    my $s = FleetStack->new(
        workers            => 2,
        worker_connections => $o{'worker-connections'},     # worker_rlimit_nofile follows
        extra_server       => $o{'fleet-extra-server'},
        extra_http         => $o{'fleet-extra-http'},
    );
    push @cleanup, sub { $s->stop };
    my ($wc) = slurp($s->nginx_conf_path) =~ /\bworker_connections\s+(\d+)/;
    die "fleetgate nginx.conf has worker_connections " . ($wc // '?') . ", fewer than "
        . "$o{'worker-connections'}: t/lib/FleetStack.pm needs its worker_connections option\n"
        unless ($wc // 0) >= $o{'worker-connections'};

    my $token = $s->admin_token;
    my $dbh = $s->dbh;
    my ($sth, $path);
    if ($o{proto} eq 'sio') {
        # the event SPEC 7 sends to "dashboard": the same ~200 bytes of data
        $sth = $dbh->prepare(q{SELECT fleet_notify('sio_emit', jsonb_build_object(
            'room', 'dashboard', 'event', 'sensor_data_update', 'data', jsonb_build_object(
            'sensor_id', 1, 'sensor_type', 'temperature', 'device_id', 'bench',
            'device_name', ?::text, 'value', ?::bigint, 'unit', 'celsius',
            'timestamp', ?::text)))});
        $path = '/socket.io/?EIO=4&transport=websocket';
    } else {
        $sth = $dbh->prepare(q{SELECT fleet_notify('sensor_data_update', jsonb_build_object(
            'sensor_id', 1, 'sensor_type', 'temperature', 'device_id', 'bench',
            'device_name', ?::text, 'value', ?::bigint, 'unit', 'celsius',
            'timestamp', ?::text))});
        $path = $o{'fleet-path'};
        $path .= ($path =~ /\?/ ? '&' : '?') . "access_token=$token";
    }
    return {
        name    => 'fleetgate',
        port    => sub { $s->http_port },
        path    => sub { $path },
        headers => [],
        eio     => ($o{proto} eq 'sio' ? $token : undef),
        # new workers on the raised limits, with nothing held from before
        fresh   => sub { $s->reload_nginx; sleep 0.5 },
        workers => sub { $s->nginx_worker_pids },
        aux     => sub { $s->pg_pids },
        # one statement at a time on one connection: its answer does not
        # wait for the fan-out (LISTEN/NOTIFY is asynchronous)
        send    => sub { $sth->execute($PAD, now_us(), $TS); 1 },
        poll    => sub { sleep $_[0] if $_[0] > 0; 0 },
        stop    => sub { undef $sth; $s->stop },
        errlog  => sub { tail($s->dir . '/nginx/error.log') },
    };
}

# ---------------------------------------------------------------- Node socket.io

sub node_sio_server {
    require FleetStack;
    my $port = free_port();
    my $secret = join '', map { ('a' .. 'z')[rand 26] } 1 .. 40;
    my $log = "$tmp/node-sio.log";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $log or die;
        open STDERR, '>&', \*STDOUT or die;
        $ENV{NODE_PATH} = "$ROOT/scripts/node/node_modules";
        exec 'node', "$FindBin::Bin/sio-baseline.js", $port, 0, $secret;
        die "exec node: $!";
    }
    my $stopped;
    my $stop = sub { return if $stopped++; kill 'TERM', $pid; waitpid $pid, 0 };
    push @cleanup, $stop;
    wait_until(20, sub { port_open($port) }) or die "the Node socket.io server did not start\n";

    my $token = FleetStack::make_jwt({ jwt_secret => $secret },
        { sub => '1', role => 'admin', exp => time + 86400 });
    my $pub = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
        or die "publisher: $!";
    setsockopt($pub, IPPROTO_TCP, TCP_NODELAY, 1);
    return {
        name    => 'node',
        port    => sub { $port },
        path    => sub { '/socket.io/?EIO=4&transport=websocket' },
        headers => [],
        eio     => $token,
        fresh   => sub { },
        workers => sub { ($pid) },
        aux     => sub { () },
        # one keep-alive connection, one request at a time; 204 answers
        send    => sub {
            my $b = qq({"event":"sensor_data_update","data":) . body_json($PAD, now_us()) . '}';
            print $pub "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                . "Content-Length: " . length($b) . "\r\n\r\n$b";
            my $resp = '';
            while ($resp !~ /\r\n\r\n/) {
                my $n = sysread($pub, $resp, 4096, length $resp);
                die "Node publish: connection closed\n" unless $n;
            }
            1;
        },
        poll    => sub { sleep $_[0] if $_[0] > 0; 0 },
        stop    => $stop,
        errlog  => sub { tail($log) },
    };
}

# ---------------------------------------------------------------- one run

sub run_one {
    my ($srv, $n) = @_;
    my $name = $srv->{name};
    print STDERR "== $name, $n subscribers\n";
    $srv->{fresh}->($n);
    my @w = $srv->{workers}->();
    @w or die "$name: no nginx workers\n";
    sleep 0.3;
    my $rss0 = rss_kb(@w);

    my $dir = "$tmp/$name-$n";
    make_path($dir);
    my ($out, $ready, $ctr) = ("$dir/ws-load.out", "$dir/ready", "$dir/counters");
    # ws-load's own time limit: everything below, generously (each phase end
    # may wait 60 s, each quiet wait --quiet-wait)
    my $bound = 120 + 2 * $n / $o{'connect-rate'} + 15 + $o{'lat-seconds'}
              + ($o{rounds} + 1) * ($o{'quiet-wait'} + 2)
              + $o{rounds} * ($o{'sat-seconds'} + 10) + ($o{rounds} + 2) * 70;
    my @cmd = ($WS_LOAD, '-p', $srv->{port}->(), '-u', $srv->{path}->(), '-n', $n,
               '-r', $o{'connect-rate'}, '-c', 256, '-t', 30 + 2 * $n / $o{'connect-rate'},
               '-R', $ready, '-C', $ctr, '-i', 0, '-b', $o{batch}, '-d', int($bound),
               (map { ('-H', $_) } @{ $srv->{headers} }), '-P', ($o{verbose} ? '-v' : ()),
               ($srv->{eio} ? ('-E', $srv->{eio}, '-J', 'dashboard') : ()));
    my $pid = spawn($out, @cmd);
    my %r = (subs => $n);
    my $ok = eval {
        wait_until(40 + 2 * $n / $o{'connect-rate'}, sub { -f $ready || !alive($pid) })
            or die "ws-load did not report ready\n";
        my ($conn) = slurp($ready) =~ /connected=(\d+)/;
        $r{ready} = slurp($ready);
        chomp $r{ready};
        $r{connected} = $conn // 0;
        print STDERR "   $r{ready}\n";
        die "no subscriber connected ($r{ready})\n" . $srv->{errlog}->() unless $r{connected};
        sleep 1;
        my $rss1 = rss_kb($srv->{workers}->());
        $r{rss_before_kb} = $rss0;
        $r{rss_after_kb}  = $rss1;
        $r{rss_per_conn}  = ($rss1 - $rss0) * 1024 / $r{connected};     # bytes
        printf STDERR "   worker RSS %d KB -> %d KB: %.1f KB per subscriber\n",
            $rss0, $rss1, $r{rss_per_conn} / 1024;

        open my $cf, '<', $ctr or die "counter file: $!\n";
        my $received = sub { sysseek($cf, 0, 0); sysread($cf, my $b, 32) == 32 or return 0;
                             return (unpack 'Q<4', $b)[0] };
        # a phase ends when everything published has arrived (or nothing more
        # arrives for a second, or 60 s passed): then SIGHUP makes ws-load
        # print the phase's line and start the next one
        my ($phase, $phase_base) = (0, $received->());
        my $end_phase = sub {
            my ($want) = @_;
            my ($last, $since, $deadline) = (-1, time, time + 60);
            while (time < $deadline) {
                my $got = $received->() - $phase_base;
                last if $got >= $want;
                ($last, $since) = ($got, time) if $got != $last;
                last if time - $since > 1.0;
                sleep 0.01;
            }
            $phase++;
            kill 'HUP', $pid;
            my $line;
            wait_until(10, sub { ($line) = grep { /^phase=$phase / } split /\n/, slurp($out); defined $line })
                or die "ws-load reported no phase $phase\n";
            $phase_base = $received->();
            return parse_kv($line);
        };

        # one message, answered (bounded)
        my $publish = sub {
            my $deadline = time + 10;
            $srv->{poll}->(0.001) until $srv->{send}->() || time > $deadline;
            1 while $srv->{poll}->(0.001) && time < $deadline;
            die "$name: publishing does not get answered\n" if time > $deadline;
        };

        # warm-up: a message every 0.1 s until one has reached everybody
        # (fleetgate's new workers LISTEN once their database connection is up)
        my ($wpub, $wbase, $wend) = (0, $received->(), time + 15);
        while (time < $wend) {
            $publish->();
            $wpub++;
            sleep 0.1;
            last if $received->() - $wbase >= $r{connected} && $wpub >= 3;
        }
        die "$name: no message reached the subscribers in 15 s\n" . $srv->{errlog}->()
            unless $received->() > $wbase;
        my $warm = $end_phase->($wpub * $r{connected});
        print STDERR "   warm-up: $warm->{data} of " . $wpub * $r{connected} . " delivered\n";

        # CPU ticks of ours: nginx workers, the server's helpers (fleetgate:
        # PostgreSQL), ws-load, this script; the rest of the machine is others'
        my $ours = sub {
            my @w = $srv->{workers}->();
            return { workers => cpu_ticks(@w), aux => cpu_ticks($srv->{aux}->()),
                     load => cpu_ticks($pid), pub => cpu_ticks($$), sys => sys_ticks(), t => time };
        };
        my $cpu_use = sub {      # fractions of one CPU between two samples
            my ($x, $y) = @_;
            my $dt = ($y->{t} - $x->{t}) || 1e-9;
            my %u = map { $_ => ($y->{$_} - $x->{$_}) / 100 / $dt } qw(workers aux load pub sys);
            $u{others} = $u{sys} - $u{workers} - $u{aux} - $u{load} - $u{pub};
            return \%u;
        };
        # the machine is shared: wait (bounded) until the others are quiet
        my $quiet = sub {
            my $deadline = time + $o{'quiet-wait'};
            my $others;
            while (1) {
                my $x = $ours->();
                sleep 0.5;
                $others = $cpu_use->($x, $ours->())->{others};
                last if $others < $o{'quiet-below'} / 100 || time > $deadline;
            }
            return $others;
        };

        # latency at a low rate, open loop on a fixed schedule; --rounds times
        my $count = int($o{'lat-seconds'} * $o{'lat-rate'});
        my @lrounds;
        for my $round (1 .. $o{rounds}) {
            my $q = $quiet->();
            my $c0 = $ours->();
            my $t0 = time;
            for my $i (0 .. $count - 1) {
                my $at = $t0 + $i / $o{'lat-rate'};
                my $d = $at - time;
                sleep $d if $d > 0;
                $publish->();
            }
            my $lat = $end_phase->($count * $r{connected});
            my $cu = $cpu_use->($c0, $ours->());
            push @lrounds, { %$lat, published => $count, expected => $count * $r{connected},
                             others_before => $q, cpu => $cu, round => $round };
            printf STDERR "   %g msg/s %d: p50 %.2f ms p99 %.2f ms max %.2f ms (%d of %d delivered; "
                . "others' CPU %.0f%%)\n",
                $o{'lat-rate'}, $round, $lat->{p50_ms}, $lat->{p99_ms}, $lat->{max_ms}, $lat->{data},
                $count * $r{connected}, 100 * $cu->{others};
        }
        # reported: the round with the least CPU taken by other processes
        ($r{lat}) = sort { $a->{cpu}{others} <=> $b->{cpu}{others} } @lrounds;
        $r{lat_p99s} = [ map { $_->{p99_ms} } @lrounds ];

        # saturation, closed loop on what was delivered; --rounds times
        my @rounds;
        for my $round (1 .. $o{rounds}) {
            my $q = $quiet->();
            kill 'USR1', $pid if $o{batch};
            my $c0 = $ours->();
            my $base = $received->();
            my ($pub, $adj, $stalls) = (0, 0, 0);
            my $win = $o{window} * $r{connected};
            my ($last_recv, $last_change) = (-1, time);
            my $t1 = time;
            my $end = $t1 + $o{'sat-seconds'};
            while (time < $end && $pub < $o{'max-messages'}) {
                my $got = $received->() - $base;
                if ($pub * $r{connected} - $got - $adj >= $win) {
                    if ($got != $last_recv) {
                        ($last_recv, $last_change) = ($got, time);
                    } elsif (time - $last_change > 0.25) {
                        # nothing arrives: count the rest as not coming
                        # (dropped or coalesced by the server) and go on
                        $adj = $pub * $r{connected} - $got;
                        $stalls++;
                        $last_change = time;
                    }
                    $srv->{poll}->(0.0002);
                    next;
                }
                if ($srv->{send}->()) {
                    $pub++;
                } else {
                    $srv->{poll}->(0.0005);
                }
            }
            my $drain = time + 10;
            1 while $srv->{poll}->(0.001) && time < $drain;
            my $pub_secs = time - $t1;
            my $cu = $cpu_use->($c0, $ours->());
            my $sat = $end_phase->($pub * $r{connected});
            kill 'USR2', $pid if $o{batch};
            my $rd = { %$sat, published => $pub, pub_secs => $pub_secs, stalls => $stalls,
                       expected => $pub * $r{connected}, cpu => $cu, others_before => $q,
                       round => $round };
            push @rounds, $rd;
            printf STDERR "   saturation %d: %d published in %.1f s (%.0f/s), %d delivered: %.0f msgs/s, "
                . "p50 %.1f ms p99 %.1f ms; CPU: workers %.0f%%, server aux %.0f%%, ws-load %.0f%%, "
                . "publisher %.0f%%, others %.0f%%\n",
                $round, $pub, $pub_secs, $pub / $pub_secs, $sat->{data}, $sat->{rate}, $sat->{p50_ms},
                $sat->{p99_ms}, map { 100 * $cu->{$_} } qw(workers aux load pub others);
        }
        # reported: the round with the least CPU taken by other processes
        ($r{sat}) = sort { $a->{cpu}{others} <=> $b->{cpu}{others} } @rounds;
        $r{sat_rates} = [ map { $_->{rate} } @rounds ];
        $r{sat_p99s} = [ map { $_->{p99_ms} } @rounds ];
        $r{rss_end_kb} = rss_kb($srv->{workers}->());
        1;
    };
    my $err = $@;
    kill 'TERM', $pid;
    wait_until(10, sub { !alive($pid) }) or kill 'KILL', $pid;
    alive($pid);
    delete $children{$pid};
    my ($final) = grep { /^final / } split /\n/, slurp($out);
    $r{final} = $final // '';
    print STDERR "   $r{final}\n" if $final;
    die $err unless $ok;
    return \%r;
}

# ---------------------------------------------------------------- report

sub report {
    my $date = strftime('%Y-%m-%d', localtime);
    my $cpus = () = slurp('/proc/cpuinfo') =~ /^processor\s*:/mg;
    print "\nWebSocket fan-out, one room, $date, $cpus CPUs; nginx 2 workers each\n";
    printf "low rate: %g msg/s for %g s, saturation: %g s, each %d times (the round with the least\n"
         . "CPU used by other processes is shown); window %g msgs/subscriber\n\n",
        $o{'lat-rate'}, $o{'lat-seconds'}, $o{'sat-seconds'}, $o{rounds}, $o{window};
    my $fmt = "%-10s %6s %6s %7s %8s %8s %11s %7s %8s %8s %6s %6s\n";
    printf $fmt, 'target', 'subs', 'open', 'KB/sub', 'low p50', 'low p99', 'sat msgs/s',
        'deliv%', 'sat p50', 'sat p99', 'srv%', 'oth%';
    for my $t (@targets) {
        if ($result{$t}{error}) {
            my ($first) = split /\n/, $result{$t}{error};
            printf "%-10s failed: %s\n", $t, $first;
        }
        for my $n (@subs) {
            my $r = $result{$t}{$n} or next;
            if ($r->{error}) {
                my ($first) = split /\n/, $r->{error};
                printf "%-10s %6s failed: %s\n", $t, $n, $first;
                next;
            }
            my ($l, $s) = ($r->{lat} // {}, $r->{sat} // {});
            my $cu = $s->{cpu} // {};
            printf $fmt, $t, $n, $r->{connected} // 0,
                fmtn($r->{rss_per_conn}, 1024, '%.1f'),
                fmtn($l->{p50_ms}, 1, '%.2f'), fmtn($l->{p99_ms}, 1, '%.2f'),
                fmtn($s->{rate}, 1, '%.0f'),
                ($s->{expected} ? sprintf('%.1f', 100 * $s->{data} / $s->{expected}) : '-'),
                fmtn($s->{p50_ms}, 1, '%.1f'), fmtn($s->{p99_ms}, 1, '%.1f'),
                (defined $cu->{workers} ? sprintf('%.0f', 100 * ($cu->{workers} + $cu->{aux})) : '-'),
                (defined $cu->{others} ? sprintf('%.0f', 100 * $cu->{others}) : '-');
        }
    }
    print "\nKB/sub: worker RSS growth per connected subscriber; low: publish -> receive\n"
        . "latency at the low rate; sat: delivered messages/s and latency while publishing as\n"
        . "fast as delivery allows; srv%: server CPU (nginx workers + PostgreSQL) and oth%:\n"
        . "other processes on the machine, in % of one CPU, during that round\n";
    if (@targets == 2) {
        printf "\nfleetgate / %s (msgs/s: higher is better; latency, memory: lower is better)\n",
            $BASE eq 'node' ? 'Node socket.io' : 'Nchan';
        my $f2 = "%6s %12s %12s %12s %12s\n";
        printf $f2, 'subs', 'sat msgs/s', 'low p99', 'sat p99', 'KB/sub';
        for my $n (@subs) {
            my ($a, $b) = ($result{$BASE}{$n}, $result{fleetgate}{$n});
            next unless $a && $b && $a->{sat} && $b->{sat};
            printf $f2, $n, ratio($b->{sat}{rate}, $a->{sat}{rate}),
                ratio($b->{lat}{p99_ms}, $a->{lat}{p99_ms}),
                ratio($b->{sat}{p99_ms}, $a->{sat}{p99_ms}),
                ratio($b->{rss_per_conn}, $a->{rss_per_conn});
        }
    }
    print "\nraw:\n";
    for my $t (@targets) {
        for my $n (@subs) {
            my $r = $result{$t}{$n} or next;
            next if $r->{error};
            my $s = $r->{sat} // {};
            my $cu = $s->{cpu} // {};
            printf "%s %d: rss %d -> %d KB (after the run %d KB); low rate: %d/%d delivered; "
                 . "low-rate p99 of the rounds %s ms; saturation rounds %s msgs/s, p99 %s ms; shown: %d published "
                 . "in %.1f s, %d/%d delivered, "
                 . "%d stalls; CPU %%: workers %.0f, aux %.0f, ws-load %.0f, publisher %.0f, others %.0f\n",
                $t, $n, $r->{rss_before_kb} // 0, $r->{rss_after_kb} // 0, $r->{rss_end_kb} // 0,
                $r->{lat}{data} // 0, $r->{lat}{expected} // 0,
                join('/', map { sprintf '%.1f', $_ } @{ $r->{lat_p99s} // [] }),
                join('/', map { sprintf '%.0f', $_ } @{ $r->{sat_rates} // [] }),
                join('/', map { sprintf '%.0f', $_ } @{ $r->{sat_p99s} // [] }),
                $s->{published} // 0, $s->{pub_secs} // 0, $s->{data} // 0,
                $s->{expected} // 0, $s->{stalls} // 0,
                map { 100 * ($cu->{$_} // 0) } qw(workers aux load pub others);
        }
    }
}

sub fmtn { my ($v, $div, $f) = @_; defined $v && $v >= 0 ? sprintf($f, $v / $div) : '-' }
sub ratio { my ($x, $y) = @_; defined $x && defined $y && $y > 0 ? sprintf('%.2f', $x / $y) : '-' }

# ---------------------------------------------------------------- helpers

sub build_ws_load {
    my $src = "$FindBin::Bin/ws-load.c";
    return if -x $WS_LOAD && (stat $WS_LOAD)[9] >= (stat $src)[9];
    make_path("$ROOT/build/bench");
    system('cc', '-O2', '-o', $WS_LOAD, $src) == 0 or die "cannot build $WS_LOAD\n";
}

sub spawn {
    my ($out, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $out or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT unless $o{verbose};
        { no warnings qw(exec); exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    $children{$pid} = 'ws-load';
    return $pid;
}

sub parse_kv { my %h = $_[0] =~ /(\w+)=(\S+)/g; return \%h }

# nginx workers: children of the master, not shutting down
sub worker_pids {
    my $master = shift or return;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $line = slurp($stat);
        next unless $line =~ /^(\d+) \((.*)\) (\S) (\d+)/s;
        next unless $4 == $master && $3 ne 'Z';
        my $pid = $1;
        my $cmd = slurp("/proc/$pid/cmdline");
        push @pids, $pid if $cmd =~ /worker process/ && $cmd !~ /shutting down/;
    }
    @pids = sort { $a <=> $b } @pids;
    return wantarray ? @pids : scalar @pids;
}

sub rss_kb {
    my $sum = 0;
    for my $pid (@_) {
        my ($kb) = slurp("/proc/$pid/status") =~ /^VmRSS:\s+(\d+)\s+kB/m;
        $sum += $kb // 0;
    }
    return $sum;
}

# utime + stime, clock ticks (100/s)
sub cpu_ticks {
    my $sum = 0;
    for my $pid (@_) {
        my $s = slurp("/proc/$pid/stat");
        $s =~ s/^.*\) //s;
        my @f = split ' ', $s;
        $sum += ($f[11] // 0) + ($f[12] // 0);
    }
    return $sum;
}

# busy ticks of the whole machine (user nice system irq softirq steal)
sub sys_ticks {
    my ($l) = slurp('/proc/stat') =~ /^cpu\s+(.*)$/m;
    my @f = split ' ', $l // '';
    return ($f[0] // 0) + ($f[1] // 0) + ($f[2] // 0) + ($f[5] // 0) + ($f[6] // 0) + ($f[7] // 0);
}

sub alive {
    my $pid = shift;
    return 0 if waitpid($pid, WNOHANG) == $pid;
    return kill 0, $pid;
}

sub wait_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        return 1 if $cond->();
        return 0 if time >= $deadline;
        sleep 0.05;
    }
}

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub port_open {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => shift, Proto => 'tcp', Timeout => 1);
    return $s ? 1 : 0;
}

sub slurp {
    my $f = shift;
    open my $fh, '<', $f or return '';
    local $/;
    my $c = <$fh>;
    return $c // '';
}

sub spit {
    my ($f, $c) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $c;
    close $fh or die "$f: $!";
}

sub tail {
    my $f = shift;
    my @l = split /\n/, slurp($f);
    @l = @l[-20 .. -1] if @l > 20;
    return join("\n", @l) . "\n";
}
