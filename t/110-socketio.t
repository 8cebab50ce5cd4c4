#!/usr/bin/perl
# Socket.IO at /socket.io/ (SPEC 7, seeds 001 and 003), with the real,
# unmodified npm socket.io-client (t/node/sio-driver.js runs every socket
# and reports each happening as a JSON line): default options (polling,
# then the upgrade to WebSocket), transports ['websocket'] and
# transports ['polling'] side by side.  Tokens and connect_error; rooms and
# their rights (join_room, leave_room, client:authenticate); the three
# sources of events (a device's MQTT event, state changes, POST
# /api/v1/events) reaching exactly the sockets that may have them; polling
# and upgrades spread over both workers; reconnection after a reload; a
# slow raw Engine.IO reader cut off while a fast one gets everything; rate
# limiting.
#
# Sockets of the service role (a backend's token) are used as probes: they
# start in no room at all and may join any, so each probe sits in exactly
# one room and shows what that room receives.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IPC::Open2;
use POSIX ();
use Time::HiRes qw(time sleep);
use Mojo::JSON qw(decode_json encode_json true false);
use FleetStack;
use FleetMQTT qw(sign_msg publish publish_lines);

my $node = `sh -c 'command -v node' 2>/dev/null`;
chomp $node;
my $modules = "$FindBin::Bin/../scripts/node/node_modules";
FleetStack::skip_or_fail('node is not installed') unless $node;
FleetStack::skip_or_fail("npm socket.io-client is missing in $modules (scripts/lib/common.sh fleet_node_deps)")
    unless -f "$modules/socket.io-client/package.json";

my $T_START = time;

# a second listener with reuseport spreads connections (each polling
# request is one) over both workers; its access log names the worker
my $port2 = FleetStack::free_port();
my $logdir = tempdir('fleet-sio-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0777, $logdir;
my $s = FleetStack->new(workers => 2,
    extra_http => "fleet_ws_max_queue 64k;\n"
        . "log_format fleet_sio_pid '\$pid \$request_method \$arg_transport \$arg_sid \$status';\n"
        . "server { listen 127.0.0.1:$port2 reuseport; access_log $logdir/port2.log fleet_sio_pid;\n"
        . "    location /socket.io/ { fleet_api; } location /api/ { fleet_api; } }");

my $admin = $s->admin_token;
my $admin_id = $s->admin_id;
my $a_id = $s->create_user('alice@fleet.local', 'alice-pass-1234', 'user');
my $b_id = $s->create_user('bob@fleet.local', 'bob-pass-12345', 'user');
my $alice = $s->login('alice@fleet.local', 'alice-pass-1234');
my $bob = $s->login('bob@fleet.local', 'bob-pass-12345');
my $svc = $s->make_jwt({ sub => 'svc', role => 'service', exp => time + 600 });

sub req {
    my ($method, $path, $token, $json) = @_;
    my %h = $token ? (Authorization => "Bearer $token") : ();
    my $tx = $s->ua->build_tx($method => $s->url($path) => \%h => (defined $json ? (json => $json) : ()));
    return $s->ua->start($tx);
}

sub register_device {
    my ($chip) = @_;
    my $j = decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}))->res->body);
    return @{ $j->{data} }{qw(device_id pin)};
}

sub device_for {
    my ($chip, $token, $name) = @_;
    my ($id, $pin) = register_device($chip);
    req(POST => '/api/v1/devices/claim', $token, { pin => $pin, name => $name })->res->code == 200
        or die "claim $chip failed";
    return $id;
}

sub device_msg {
    my ($id, $what, $obj) = @_;
    publish($s, "server/$id/$what", sign_msg($s->device_secret, ref $obj ? encode_json($obj) : $obj));
}

my $A = device_for('SIOA0001', $alice, 'Charger A');
my $B = device_for('SIOB0002', $bob, 'Charger B');
my %OWNER = ($A => $a_id, $B => $b_id);

# both online before any socket listens: later changes are the tests'
device_msg($_, 'status', '{"status":"ONLINE"}') for $A, $B;
my $deadline = time + 10;
sleep 0.05 until $s->psql("SELECT count(*) FROM devices WHERE online AND id IN ('$A', '$B')") == 2
    || time > $deadline;

# ======================================================================
# the driver: every socket of the file lives in one node process

my ($DRV_OUT, $DRV_IN, $DRV_BUF, %C) = (undef, undef, '');
my $DRV_PID = do {
    local $ENV{NODE_PATH} = $modules;
    open2($DRV_OUT, $DRV_IN, $node, "$FindBin::Bin/node/sio-driver.js");
};
$DRV_IN->autoflush(1);
END { if ($DRV_PID && kill 0, $DRV_PID) { kill 'TERM', $DRV_PID; waitpid $DRV_PID, 0 } }

sub cmd { print $DRV_IN encode_json($_[0]), "\n" }

sub pump {
    my ($secs) = @_;
    if (IO::Select->new($DRV_OUT)->can_read($secs)) {
        my $n = sysread($DRV_OUT, $DRV_BUF, 1 << 20, length $DRV_BUF);
        die "the socket.io driver exited\n" unless $n;
    }
    while ($DRV_BUF =~ s/\A([^\n]*)\n//) {
        my $l = eval { decode_json($1) } // { t => 'bad line', line => $1 };
        diag "driver: $l->{message}" if $l->{t} eq 'error';
        push @{ $C{ $l->{id} // '' }{lines} }, $l;
    }
}

sub wait_until {
    my ($secs, $cond) = @_;
    my $end = time + $secs;
    until ($cond->()) {
        return 0 if time > $end;
        pump(0.05);
    }
    return 1;
}

# sio($id, token => ..., transports => [...], port => ..., count => [...], raw => [...])
# uid/sees_all describe whose socket it is; sync is the room its barriers come by
sub sio {
    my ($id, %o) = @_;
    my $c = $C{$id} = { id => $id, lines => [], uid => $o{uid}, sees_all => $o{sees_all} // 0,
                        mode => $o{transports} ? join('+', @{ $o{transports} }) : 'default',
                        rooms => {}, sync => $o{uid} ? "user_$o{uid}" : 'sync' };
    $c->{rooms}{"user_$o{uid}"} = 1 if $o{uid};
    $c->{rooms}{admin} = 1 if $o{admin};
    cmd({ op => 'open', id => $id, url => 'http://127.0.0.1:' . ($o{port} // $s->http_port),
          (exists $o{token} ? (token => $o{token}) : ()),
          opts => { ($o{transports} ? (transports => $o{transports}) : ()), %{ $o{opts} // {} } },
          count => $o{count} // [], raw => $o{raw} // [] });
    return $c;
}

sub lines_of { my ($c, $t) = @_; grep { $_->{t} eq $t } @{ $c->{lines} } }
sub events   { my ($c, $name) = @_; map { $_->{data} } grep { $_->{t} eq 'event' && $_->{event} eq $name } @{ $c->{lines} } }
sub nconnect { scalar lines_of($_[0], 'connect') }

my $TAG = 0;
sub emit {
    my ($c, $event, $data) = @_;
    my $tag = 'e' . ++$TAG;
    cmd({ op => 'emit', id => $c->{id}, event => $event, data => $data, tag => $tag });
    return $tag;
}
sub ack_of { my ($c, $tag) = @_; (grep { $_->{tag} eq $tag } lines_of($c, 'ack'))[0] }

# join_room on several sockets at once: [client, room] pairs -> acks (data)
sub join_all {
    my @pairs = @_;
    my @tags = map { emit($_->[0], 'join_room', { room => $_->[1] }) } @pairs;
    wait_until(15, sub { !grep { !ack_of($pairs[$_][0], $tags[$_]) } 0 .. $#pairs });
    my @acks;
    for my $i (0 .. $#pairs) {
        my ($c, $room) = @{ $pairs[$i] };
        my $a = ack_of($c, $tags[$i]);
        push @acks, $a ? $a->{data} // { timeout => 1 } : { none => 1 };
        $c->{rooms}{$room} = 1 if $a && ref $a->{data} eq 'HASH' && $a->{data}{ok};
    }
    return @acks;
}

sub post_event {
    my ($body, $token) = @_;
    return req(POST => '/api/v1/events', $token // $svc, $body);
}

# every socket given has heard every event posted before this returns
my $BARRIER = 0;
sub barrier {
    my @cl = @_;
    my $n = ++$BARRIER;
    my %rooms = map { $_->{sync} => 1 } @cl;
    my $code = 0;
    post_event({ room => $_, event => 'barrier', data => { n => $n } })->res->code == 202 or $code++
        for sort keys %rooms;
    my $ok = wait_until(15, sub { !grep { my $c = $_; !grep { $_->{n} == $n } events($c, 'barrier') } @cl });
    unless ($ok) {
        for my $c (grep { my $c = $_; !grep { $_->{n} == $n } events($c, 'barrier') } @cl) {
            my @l = @{ $c->{lines} };
            diag "barrier $n missing at $c->{id}; its last lines:\n"
                . join "\n", map { encode_json($_) } @l[ ($#l > 5 ? $#l - 5 : 0) .. $#l ];
        }
    }
    return $ok;
}

# Waits for the sockets to connect and, with default options, for each
# Engine.IO session to upgrade.  An upgrade can stall: the client waits
# for its pending polling GET before it sends "5", and the server does not
# answer that GET with a noop when the probe succeeds (see "the upgrade by
# hand" below); the GET then ends only with the next packet for the
# session.  Stalled sockets get a "nudge" event in their user room, so the
# other tests go on; their ids are returned.
sub settle {
    my @cl = @_;
    wait_until(15, sub { !grep { !nconnect($_) } @cl });
    my @def = grep { $_->{mode} eq 'default' } @cl;
    my $upgraded = sub { lines_of($_[0], 'upgrade') >= lines_of($_[0], 'open') };
    wait_until(3, sub { !grep { !$upgraded->($_) } @def });
    my @stalled = grep { !$upgraded->($_) } @def;
    if (@stalled) {
        my %rooms = map { $_->{sync} => 1 } @stalled;
        post_event({ room => $_, event => 'nudge', data => {} }) for sort keys %rooms;
        wait_until(10, sub { !grep { !$upgraded->($_) } @def });
    }
    return map { $_->{id} } @stalled;
}

sub metric_sum {
    my ($name) = @_;
    my $m = $s->ua->get($s->url('/metrics'))->result->body;
    my $sum = 0;
    $sum += $_ for $m =~ /^\Q$name\E(?:\{[^}]*\})? (\d+)/mg;
    return $sum;
}

# ---- raw Engine.IO, for what a client library hides

sub ws_frame {
    my ($payload) = @_;
    my $len = length $payload;
    my $head = chr(0x81) . ($len < 126 ? chr(0x80 | $len) : chr(0x80 | 126) . pack('n', $len));
    my $mask = pack 'N', int rand 2**32;
    return $head . $mask . ($payload ^ substr($mask x (int($len / 4) + 1), 0, $len));
}
# the next text frame's payload from a raw socket (bounded wait)
sub ws_next {
    my ($sock, $buf) = @_;
    my $end = time + 10;
    while (time < $end) {
        if (length $$buf >= 2) {
            my ($b0, $b1) = unpack 'CC', $$buf;
            my ($len, $off) = ($b1 & 0x7f, 2);
            ($len, $off) = (unpack('n', substr($$buf, 2, 2)), 4) if $len == 126;
            ($len, $off) = (unpack('Q>', substr($$buf, 2, 8)), 10) if $len == 127;
            if (length $$buf >= $off + $len) {
                my $p = substr($$buf, $off, $len);
                substr($$buf, 0, $off + $len, '');
                return $p if ($b0 & 0x0f) == 1;
                next;
            }
        }
        IO::Select->new($sock)->can_read(0.2) or next;
        sysread($sock, $$buf, 65536, length $$buf) or return undef;
    }
    return undef;
}

# a raw WebSocket to /socket.io/ (query: EIO=4&transport=websocket[&sid=])
sub raw_ws {
    my ($query) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port, Proto => 'tcp') or die $!;
    print $sock "GET /socket.io/?$query HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    my $buf = '';
    my $end = time + 5;
    while ($buf !~ /\r\n\r\n/ && time < $end) {
        IO::Select->new($sock)->can_read(0.2) or next;
        sysread($sock, $buf, 4096, length $buf) or last;
    }
    my ($head) = $buf =~ /\A(.*?\r\n)\r\n/s;
    $buf =~ s/\A.*?\r\n\r\n//s;
    return ($sock, $head // $buf, $buf);
}

# what a raw HTTP socket receives until EOF (or $secs): (status, body),
# status 0 when it ended without an answer
sub http_answer {
    my ($sock, $secs) = @_;
    my ($raw, $end) = ('', time + $secs);
    while (time < $end) {
        IO::Select->new($sock)->can_read(0.1) or next;
        sysread($sock, $raw, 4096, length $raw) or last;
    }
    return $raw =~ m{\AHTTP/1\.1 (\d+)[^\r]*\r\n.*?\r\n\r\n(.*)\z}s ? ($1, $2) : (0, $raw);
}

# a polling GET left pending on a connection of its own
sub held_get {
    my ($sid) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port, Proto => 'tcp') or die $!;
    print $sock "GET /socket.io/?EIO=4&transport=polling&sid=$sid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    return $sock;
}

# one polling request on a connection of its own: (status, body)
sub poll_req {
    my ($method, $query, $body) = @_;
    my $r = $s->raw_http("$method /socket.io/?EIO=4&transport=polling$query HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . (defined $body ? "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: " . length($body) . "\r\n" : '')
        . "\r\n" . ($body // ''), timeout => 5);
    return ($r->{status}, $r->{body});
}

my %MODES = (default => undef, websocket => ['websocket'], polling => ['polling']);
my @MODES = qw(default websocket polling);

# ======================================================================
# tokens

for my $mode (qw(websocket polling)) {
    my %bad = (
        garbage => [ 'not-a-jwt', qr/malformed/ ],
        expired => [ $s->make_jwt({ sub => "$a_id", role => 'user', exp => time - 60 }), qr/expired/ ],
        forged  => [ $s->make_jwt({ sub => "$a_id", role => 'admin', exp => time + 600 }, secret => 'not-the-secret'),
                     qr/signature/ ],
        ghost   => [ $s->make_jwt({ sub => '999999', role => 'user', exp => time + 600 }), qr/^unknown user\z/ ],
        none    => [ undef, qr/token/ ],
    );
    for my $k (sort keys %bad) {
        sio("bad_${k}_$mode", (defined $bad{$k}[0] ? (token => $bad{$k}[0]) : ()), transports => $MODES{$mode});
    }
    wait_until(10, sub { !grep { !lines_of($C{"bad_${_}_$mode"}, 'connect_error') } keys %bad });
    for my $k (sort keys %bad) {
        my $c = $C{"bad_${k}_$mode"};
        my ($e) = lines_of($c, 'connect_error');
        like $e && $e->{message}, $bad{$k}[1], "$mode: $k token: connect_error '" . ($e ? $e->{message} : 'none') . "'";
        ok !nconnect($c), '... never connected';
        cmd({ op => 'close', id => $c->{id} });
    }
}

# ======================================================================
# the upgrade by hand (Engine.IO 4): while the client probes the
# WebSocket its polling GET is pending; the server answers "3probe" on the
# WebSocket and ends that GET with a noop ("6"), so the client can pause
# polling and send "5"

{
    my ($st, $body) = poll_req(GET => '');
    my ($sid) = $body =~ /^0\{"sid":"([^"]+)"/;
    ok $sid && $body =~ /"upgrades":\["websocket"\]/, "polling handshake: $body";
    is_deeply [ poll_req(POST => "&sid=$sid", '40' . encode_json({ token => $alice })) ], [ 200, 'ok' ], 'POST 40{token}: ok';
    ($st, $body) = poll_req(GET => "&sid=$sid");
    like $body, qr/^40\{"sid":"/, 'GET: 40{"sid":...}';
    my $held = held_get($sid);
    my ($ws, $head, $wbuf) = raw_ws("EIO=4&transport=websocket&sid=$sid");
    like $head, qr{^HTTP/1.1 101}, 'the probe WebSocket: 101';
    print $ws ws_frame('2probe');
    is ws_next($ws, \$wbuf), '3probe', '2probe: 3probe';
    my $t0 = time;
    my ($hst, $noop) = http_answer($held, 3);
    is_deeply [ $hst, $noop ], [ 200, '6' ], 'the pending GET ends with a noop "6" once the probe succeeded'
        or diag sprintf 'got %s after %.1f s (a client waits for this GET before it sends "5")',
                        $hst ? "$hst '$noop'" : 'nothing', time - $t0;
    print $ws ws_frame('5');
    post_event({ room => "user_$a_id", event => 'by_hand', data => { upgraded => 1 } });
    is ws_next($ws, \$wbuf), '42["by_hand",{"upgraded":1}]', 'after "5" events come over the WebSocket';
    ($st, $body) = poll_req(GET => "&sid=$sid");
    is $st, 400, 'polling that session again: 400' or diag $body;
    close $ws;
    close $held;
}

# ======================================================================
# the sockets of the event tests: alice, bob, admin, in each mode; a
# "leaver" of alice's per mode; probes in one room each (two transports)

my (%U, @ALL);
for my $mode (@MODES) {
    $U{alice}{$mode} = sio("alice_$mode", token => $alice, uid => $a_id, transports => $MODES{$mode});
    $U{bob}{$mode}   = sio("bob_$mode", token => $bob, uid => $b_id, transports => $MODES{$mode});
    $U{admin}{$mode} = sio("admin_$mode", token => $admin, uid => $admin_id, sees_all => 1, admin => 1,
                           transports => $MODES{$mode}, raw => ['meter_values_updated']);
    $U{leaver}{$mode} = sio("leaver_$mode", token => $alice, uid => $a_id, transports => $MODES{$mode});
    push @ALL, map { $U{$_}{$mode} } qw(alice bob admin leaver);
}
my @PROBE_ROOMS = ("station_$A", 'transactions', 'reservations', 'dashboard', "device_$A", "user_$a_id", 'admin');
my %PROBE;
for my $mode (qw(websocket polling)) {
    for my $room (@PROBE_ROOMS) {
        push @ALL, $PROBE{$mode}{$room} = sio("probe_${room}_$mode", token => $svc, sees_all => 1,
                                              transports => $MODES{$mode});
    }
}
my @stalled = settle(@ALL);
ok !grep({ !nconnect($_) } @ALL), scalar(@ALL) . ' sockets connected'
    or diag join ', ', map { $_->{id} } grep { !nconnect($_) } @ALL;
for my $mode (@MODES) {
    my ($open) = lines_of($U{alice}{$mode}, 'open');
    is $open && $open->{tr}, $mode eq 'websocket' ? 'websocket' : 'polling', "$mode: the session opens over " . ($open ? $open->{tr} : 'nothing');
}
ok !@stalled, 'default options: every socket upgrades to websocket by itself' or diag "stalled until nudged: @stalled";
is_deeply [ map { (lines_of($U{$_}{default}, 'upgrade'))[0]{to} // 'none' } qw(alice bob admin leaver) ], [ ('websocket') x 4 ],
    'default options: upgraded to websocket';
ok !grep({ lines_of($U{$_}{polling}, 'upgrade') } qw(alice bob admin leaver)), "transports ['polling']: never upgraded";

# the probes: one room each, and "sync" for barriers
{
    my @pairs;
    for my $mode (sort keys %PROBE) {
        push @pairs, map { ([ $PROBE{$mode}{$_}, $_ ], [ $PROBE{$mode}{$_}, 'sync' ]) } @PROBE_ROOMS;
    }
    my @acks = join_all(@pairs);
    is scalar(grep { ref $_ eq 'HASH' && $_->{ok} } @acks), scalar @pairs, 'the probes joined their rooms (service token)'
        or diag explain \@acks;
}

# on connect: in user_{sub}, and admins in admin
post_event({ room => "user_$a_id", event => 'hello_alice', data => { to => 'alice' } });
post_event({ room => 'admin', event => 'hello_admins', data => { to => 'admins' } });
# "*": every connected socket (SPEC 9's system:maintenance goes there)
post_event({ room => '*', event => 'to_everyone', data => { n => 1 } });
barrier(@ALL);
is scalar(grep { events($_, 'to_everyone') == 1 } @ALL), scalar @ALL, 'an event to room * reaches every socket, once';
for my $mode (@MODES) {
    is_deeply [ events($U{alice}{$mode}, 'hello_alice') ], [ { to => 'alice' } ], "$mode: alice's socket is in user_$a_id";
    is_deeply [ events($U{admin}{$mode}, 'hello_admins') ], [ { to => 'admins' } ], "$mode: the admin's socket is in admin";
    ok !events($U{bob}{$mode}, 'hello_alice') && !events($U{bob}{$mode}, 'hello_admins')
        && !events($U{alice}{$mode}, 'hello_admins'), "$mode: ... and nobody else is";
}
ok !grep({ events($_, 'hello_alice') || events($_, 'hello_admins') }
         map { @{$_}{ grep { !/^(admin|user_.*)\z/ } @PROBE_ROOMS } } values %PROBE),
    'a service socket starts in no room';

# ======================================================================
# rooms and rights

my @ALICE_ROOMS = (
    [ 'dashboard', 1 ], [ 'transactions', 1 ], [ 'reservations', 1 ], [ "station_$A", 1 ], [ "device_$A", 1 ],
    [ "user_$a_id", 1 ],
    [ "station_$B", qr/^no such device\z/ ], [ "device_$B", qr/^no such device\z/ ],
    [ 'station_NOPE42', qr/^no such device\z/ ], [ "user_$b_id", qr/./ ], [ 'admin', qr/./ ],
    [ 'page_admin', qr/./ ], [ 'lobby', qr/^no such room\z/ ], [ '*', qr/^no such room\z/ ],
);
my @BOB_ROOMS = ([ 'dashboard', 1 ], [ "station_$A", qr/^no such device\z/ ], [ "device_$A", qr/^no such device\z/ ],
                 [ 'admin', qr/./ ], [ 'page_admin', qr/./ ]);
my @ADMIN_ROOMS = ([ 'dashboard', 1 ]);
my @LEAVER_ROOMS = ([ 'transactions', 1 ], [ 'reservations', 1 ]);

sub check_joins {
    my ($who, $table) = @_;
    for my $step (@$table) {
        my ($room, $want) = @$step;
        my @acks = join_all(map { [ $U{$who}{$_}, $room ] } @MODES);
        for my $i (0 .. $#MODES) {
            my ($mode, $ack, $c) = ($MODES[$i], $acks[$i], $U{$who}{$MODES[$i]});
            if (!ref $want) {
                is_deeply $ack, { ok => true }, "$mode: $who joins $room: {ok:true}";
                next;
            }
            ok ref $ack eq 'HASH' && !$ack->{ok} && ($ack->{error} // '') =~ $want,
                "$mode: $who may not join $room: {ok:false, error:'" . ($ack->{error} // '') . "'}"
                or diag explain $ack;
            my ($re) = grep { ($_->{room} // '') eq $room } events($c, 'room_error');
            ok $re && ($re->{message} // '') eq ($ack->{error} // 'x'), "$mode: ... and room_error {room, message}"
                or diag explain [ events($c, 'room_error') ];
        }
    }
}
check_joins(alice => \@ALICE_ROOMS);
check_joins(bob => \@BOB_ROOMS);
check_joins(admin => \@ADMIN_ROOMS);
check_joins(leaver => \@LEAVER_ROOMS);

# leave_room: the leaver keeps only reservations (and its user room)
for my $mode (@MODES) {
    my $c = $U{leaver}{$mode};
    my $tag = emit($c, 'leave_room', { room => 'transactions' });
    wait_until(10, sub { ack_of($c, $tag) });
    is_deeply ack_of($c, $tag) && ack_of($c, $tag)->{data}, { ok => true }, "$mode: leave_room: {ok:true}";
    delete $c->{rooms}{transactions};
    $tag = emit($c, 'leave_room', { room => '*' });
    wait_until(10, sub { ack_of($c, $tag) });
    ok ack_of($c, $tag), "$mode: leave_room '*' is answered (but nobody leaves *)";
}

# admins may join any room (one more socket, gone again)
{
    my $x = sio('admin_extra', token => $admin, uid => $admin_id, sees_all => 1, admin => 1, transports => ['websocket']);
    wait_until(10, sub { nconnect($x) });
    my @rooms = ("station_$B", "device_$A", 'lobby', 'page_admin', "user_$a_id", 'station_NOPE42');
    my @acks = join_all(map { [ $x, $_ ] } @rooms);
    is_deeply \@acks, [ map { { ok => true } } @rooms ], 'an admin may join any room: ' . join(', ', @rooms);
    cmd({ op => 'close', id => 'admin_extra' });
}

# client:authenticate (seed 003): the identity is the token's, never the payload's
for my $mode (@MODES) {
    my $c = $U{alice}{$mode};
    my $tag = emit($c, 'client:authenticate', { userId => $b_id + 0, userType => 'admin', page => 'modules',
                                                sessionId => 'abc123' });
    wait_until(10, sub { ack_of($c, $tag) && events($c, 'client:authenticated') });
    is_deeply [ events($c, 'client:authenticated') ], [ { userId => "$a_id", role => 'user', page => 'modules' } ],
        "$mode: client:authenticated carries the token's user, not the forged userId/userType";
    is_deeply ack_of($c, $tag) && ack_of($c, $tag)->{data}, { ok => true }, '... ack {ok:true}';
    $c->{rooms}{page_modules} = 1;

    $tag = emit($c, 'client:authenticate', { userId => $admin_id + 0, userType => 'admin', page => 'admin' });
    wait_until(10, sub { ack_of($c, $tag) });
    my ($re) = grep { $_->{room} eq 'page_admin' } events($c, 'room_error');
    ok $re && $re->{message}, "$mode: page 'admin' by a user: room_error '" . ($re ? $re->{message} : '') . "'";
    ok !(ack_of($c, $tag)->{data}{ok}), '... ack {ok:false}';
    is scalar(events($c, 'client:authenticated')), 1, '... and no client:authenticated';

    my $d = $U{admin}{$mode};
    $tag = emit($d, 'client:authenticate', { page => 'admin', userId => 1, userType => 'user' });
    wait_until(10, sub { ack_of($d, $tag) && events($d, 'client:authenticated') });
    is_deeply [ events($d, 'client:authenticated') ], [ { userId => "$admin_id", role => 'admin', page => 'admin' } ],
        "$mode: an admin's page 'admin': client:authenticated with role admin";
    $d->{rooms}{page_admin} = 1;
}
post_event({ room => 'page_modules', event => 'page_news', data => { page => 'modules' } });
post_event({ room => '*', event => 'to_everyone', data => { n => 2 } });
barrier(@ALL);
is scalar(grep { events($_, 'to_everyone') == 2 } @ALL), scalar @ALL, 'room * again: every socket, the leavers too';
for my $mode (@MODES) {
    is scalar(events($U{alice}{$mode}, 'page_news')), 1, "$mode: client:authenticate joined page_modules";
    ok !events($U{bob}{$mode}, 'page_news'), "$mode: ... bob never did";
}

# ======================================================================
# events from a device's MQTT messages (seed 001's names and payloads)

my $TS = '2026-01-11T14:30:00.000Z';
sub seed001 {
    my ($cp) = @_;
    return (
        [ transaction_started => { chargePointId => $cp, transactionId => 12345, connectorId => 1,
                                   idTag => 'USER123', meterStart => 1000, timestamp => $TS } ],
        [ transaction_stopped => { chargePointId => $cp, transactionId => 12345, meterStop => 1500,
                                   reason => 'Remote', timestamp => '2026-01-11T15:30:00.000Z' } ],
        [ station_status_updated => { chargePointId => $cp, status => 'Available', timestamp => $TS } ],
        [ connector_status_updated => { chargePointId => $cp, connectorId => 1, status => 'Charging',
                                        errorCode => 'NoError', timestamp => $TS } ],
        [ meter_values_updated => { chargePointId => $cp, transactionId => 12345, connectorId => 1,
                                    energy => 1250, power => 22.5, soc => 75, timestamp => $TS } ],
        [ reservation_created => { reservationId => 123456, chargePointId => $cp, connectorId => 1,
                                   idTag => 'USER123', expiryDate => '2026-01-11T16:00:00.000Z',
                                   userName => 'John Doe', phoneNumber => '+6281234567890' } ],
        [ reservation_cancelled => { reservationId => 123456, chargePointId => $cp, connectorId => 1,
                                     reason => 'User cancelled' } ],
        [ 'module:status:changed' => { moduleId => $cp, online => true, via => 'device event' } ],
        [ 'module:telemetry:updated' => { moduleId => $cp, telemetry => { rssi => -50, temp => 21.75 },
                                          via => 'device event' } ],
        [ custom_thing => { moduleId => $cp, note => "\x{e9}t\x{e9} \"quoted\"", list => [ 1, 2.5, undef ] } ],
    );
}
my %DEV_EVENTS = map { $_->[0] => 1 } seed001('x');

# SPEC 7's rooms of a device event by its name
sub rooms_of {
    my ($event, $dev) = @_;
    my @r = $event =~ /^transaction_/ ? ("station_$dev", 'transactions', 'dashboard')
          : $event =~ /^reservation_/ ? ("station_$dev", 'reservations', 'dashboard')
          : $event =~ /_updated$/ && $event !~ /^module:/ ? ("station_$dev", 'dashboard')
          : $event =~ /^module:/ ? ("device_$dev", "user_$OWNER{$dev}", 'admin', 'dashboard')
          : ("device_$dev", "user_$OWNER{$dev}", 'admin');
    return @r;
}

# what a socket should have of the events [name, dev]: in one of the
# rooms, and allowed to see the device (shared rooms filter)
sub expected {
    my ($c, @sent) = @_;
    return [ sort map { "$_->[0]\@$_->[1]" }
             grep { my ($e, $d) = @$_; ($c->{sees_all} || ($c->{uid} // '') eq $OWNER{$d})
                        && grep { $c->{rooms}{$_} } rooms_of($e, $d) } @sent ];
}
sub device_events_seen {
    my ($c) = @_;
    return [ sort map { "$_->{event}\@" . ($_->{data}{chargePointId} // $_->{data}{moduleId}) }
             grep { $_->{t} eq 'event' && $DEV_EVENTS{ $_->{event} }
                    && ($_->{event} !~ /^module:/ || $_->{data}{via}) } @{ $_[0]{lines} } ];
}

my @from_a = seed001($A);
my @from_b = (seed001($B))[0, 9];    # transaction_started and custom_thing from bob's device
publish_lines($s, "server/$A/event", [ map { sign_msg($s->device_secret, encode_json({ event => $_->[0], data => $_->[1] })) } @from_a ]);
publish_lines($s, "server/$B/event", [ map { sign_msg($s->device_secret, encode_json({ event => $_->[0], data => $_->[1] })) } @from_b ]);
my @sent = ((map { [ $_->[0], $A ] } @from_a), (map { [ $_->[0], $B ] } @from_b));
my $n_admin = scalar @sent;
ok wait_until(20, sub { @{ device_events_seen($U{admin}{polling}) } >= $n_admin
                        && @{ device_events_seen($U{admin}{websocket}) } >= $n_admin }),
    "the admin's sockets got all $n_admin device events";
barrier(@ALL);
for my $c (@ALL) {
    is_deeply device_events_seen($c), expected($c, @sent),
        "$c->{id}: exactly the device events of its rooms, once each (rooms: "
        . join(' ', sort grep { $_ ne 'sync' } keys %{ $c->{rooms} }) . ')';
}

# payloads: exactly the data object
for my $mode (@MODES) {
    my %got = map { ($_->{event} => $_->{data}) }
              grep { $_->{t} eq 'event' && $DEV_EVENTS{ $_->{event} } && ($_->{data}{chargePointId} // $_->{data}{moduleId} // '') eq $A }
              @{ $U{alice}{$mode}{lines} };
    is_deeply \%got, { map { @$_ } @from_a }, "$mode: alice got each payload exactly as the device sent its data";
    my ($raw) = grep { $_->{event} eq 'meter_values_updated' } lines_of($U{admin}{$mode}, 'raw');
    like $raw && $raw->{text}, qr/^42\["meter_values_updated",\{.*"power":22\.5[,}]/,
        "$mode: on the wire: " . ($raw ? substr($raw->{text}, 0, 140) : 'nothing');
    like $raw && $raw->{text}, qr/"soc":75[,}]/, '... integers stay integers';
}

# ======================================================================
# state changes: online/offline, telemetry, claims, registrations, stats

sub status_changes {
    my ($c, $dev) = @_;
    return [ map { $_->{online} ? 'online' : 'offline' }
             grep { ($_->{moduleId} // '') eq $dev && !$_->{via} } events($c, 'module:status:changed') ];
}
my @status_rooms = ("device_$A", "user_$a_id", 'admin', 'dashboard');

device_msg($A, 'status', '{"status":"OFFLINE"}');
device_msg($A, 'status', '{"status":"OFFLINE"}');      # a repeat: no event
device_msg($A, 'streaming', '{"rssi":-60,"status":"ok","uptime":5}');   # online again, with telemetry
ok wait_until(15, sub { @{ status_changes($U{admin}{polling}, $A) } >= 2 && @{ status_changes($U{admin}{websocket}, $A) } >= 2 }),
    'module:status:changed reaches the admin';
barrier(@ALL);
for my $c (@ALL) {
    my $in = grep { $c->{rooms}{$_} } @status_rooms;
    my $may = $c->{sees_all} || ($c->{uid} // '') eq $a_id;
    is_deeply status_changes($c, $A), $in && $may ? [ 'offline', 'online' ] : [],
        "$c->{id}: module:status:changed " . ($in && $may ? 'offline, online: once per change' : 'never');
    my @tele = grep { ($_->{moduleId} // '') eq $A && !$_->{via} } events($c, 'module:telemetry:updated');
    is scalar(@tele), $in && $may ? 1 : 0, "$c->{id}: module:telemetry:updated " . ($in && $may ? 'once' : 'never');
}
my ($st) = grep { !$_->{via} } events($U{alice}{websocket}, 'module:status:changed');
is_deeply $st, { moduleId => $A, online => false }, "seed 003's {moduleId, online}";
my ($tele) = grep { !$_->{via} } events($U{alice}{polling}, 'module:telemetry:updated');
is_deeply [ $tele->{moduleId}, @{ $tele->{telemetry} // {} }{qw(rssi status uptime)} ], [ $A, -60, 'ok', 5 ],
    "seed 003's {moduleId, telemetry}" or diag explain $tele;

# a claim: user:module:added to the owner, admin:module:added to admins
my ($C_id, $pin) = register_device('SIOC0003');
is req(POST => '/api/v1/devices/claim', $alice, { pin => $pin, name => 'Charger C' })->res->code, 200, 'alice claims a third device';
$OWNER{$C_id} = $a_id;
# a new account: admin:user:registered
my $carol_id = $s->create_user('carol@fleet.local', 'carol-pass-1234', 'user');
ok wait_until(15, sub { events($U{admin}{polling}, 'admin:user:registered') && events($U{admin}{websocket}, 'admin:user:registered') }),
    'admin:user:registered reaches the admin';
barrier(@ALL);
for my $c (@ALL) {
    my $owner = ($c->{uid} // '') eq $a_id && $c->{rooms}{"user_$a_id"};
    my @added = grep { ($_->{module}{id} // '') eq $C_id } events($c, 'user:module:added');
    is scalar(@added), $owner || $c->{rooms}{"user_$a_id"} ? 1 : 0,
        "$c->{id}: user:module:added " . ($c->{rooms}{"user_$a_id"} ? 'once' : 'never');
    my $adm = $c->{rooms}{admin} ? 1 : 0;
    is scalar(grep { ($_->{module}{id} // '') eq $C_id } events($c, 'admin:module:added')), $adm,
        "$c->{id}: admin:module:added " . ($adm ? 'once' : 'never');
    is scalar(grep { ($_->{user}{email} // '') eq 'carol@fleet.local' } events($c, 'admin:user:registered')), $adm,
        "$c->{id}: admin:user:registered " . ($adm ? 'once' : 'never');
}
my ($added) = events($U{alice}{default}, 'user:module:added');
is_deeply [ @{ $added->{module} // {} }{qw(id name owner_id)} ], [ $C_id, 'Charger C', "$a_id" ], "user:module:added {module}";
my ($reg) = events($U{admin}{default}, 'admin:user:registered');
is_deeply [ @{ $reg->{user} // {} }{qw(id email role)} ], [ "$carol_id", 'carol@fleet.local', 'user' ], 'admin:user:registered {user}';

# admin:stats:updated after the changes, reflecting them
my $users = $s->psql("SELECT count(*) FROM users WHERE role <> 'service'") + 0;
for my $mode (@MODES) {
    my $c = $U{admin}{$mode};
    ok wait_until(6, sub { grep { ($_->{stats}{modulesClaimed} // 0) == 3 && ($_->{stats}{users} // 0) == $users }
                           events($c, 'admin:stats:updated') }),
        "$mode: admin:stats:updated arrives after the changes (3 modules claimed, $users users)"
        or diag explain [ events($c, 'admin:stats:updated') ];
}
for my $c (map { $U{$_}{websocket} } qw(alice bob)) {
    ok !events($c, 'admin:stats:updated'), "$c->{id}: no stats for users";
}

# a burst of 10 changes within a second: one event per change, stats at most once a second
my %nstats = map { $_ => scalar events($U{admin}{$_}, 'admin:stats:updated') } @MODES;
my $burst_ms = time * 1000;
publish_lines($s, "server/$B/status",
    [ map { sign_msg($s->device_secret, $_ % 2 ? '{"status":"ONLINE"}' : '{"status":"OFFLINE"}') } 0 .. 9 ]);
ok wait_until(10, sub { @{ status_changes($U{bob}{polling}, $B) } >= 10 && @{ status_changes($U{bob}{websocket}, $B) } >= 10 }),
    'ten changes of bob\'s device';
for my $mode (@MODES) {
    is_deeply status_changes($U{bob}{$mode}, $B), [ ('offline', 'online') x 5 ], "$mode: bob gets each of the ten changes, in order";
    is_deeply status_changes($U{alice}{$mode}, $B), [], "$mode: alice none of them";
}
for my $mode (@MODES) {
    my $c = $U{admin}{$mode};
    ok wait_until(5, sub { events($c, 'admin:stats:updated') > $nstats{$mode} }), "$mode: stats after the burst";
    pump(1.5) for 1 .. 2;
    my @ms = map { $_->{ms} } grep { $_->{t} eq 'event' && $_->{event} eq 'admin:stats:updated' } @{ $c->{lines} };
    my @new = grep { $_ >= $burst_ms } @ms;
    ok scalar(grep { $_ < $burst_ms + 1000 } @new) <= 2, "$mode: at most 2 stats in the burst's second";
    my @gaps = map { $ms[$_] - $ms[ $_ - 1 ] } 1 .. $#ms;
    ok !grep({ $_ < 500 } @gaps), "$mode: stats at most about once a second (gaps: @gaps ms)";
}

# ======================================================================
# POST /api/v1/events

my $tx = post_event({ room => 'dashboard', event => 'notice', data => { text => 'hello', n => 1.25 } });
is $tx->res->code, 202, 'POST /api/v1/events with a service token: 202';
my $j = decode_json($tx->res->body);
is_deeply [ $j->{success}, $j->{data} ], [ true, { room => 'dashboard', event => 'notice' } ], '... {success:true, data:{room, event}}'
    or diag $tx->res->body;
is post_event({ room => 'dashboard', event => 'notice', data => { text => 'from admin' } }, $admin)->res->code, 202,
    '... with an admin token: 202';
$s->check_error(post_event({ room => 'dashboard', event => 'notice', data => {} }, $alice), 403, 'FORBIDDEN', '/api/v1/events');
$s->check_error(req(POST => '/api/v1/events', undef, { room => 'dashboard', event => 'x', data => {} }), 401, 'UNAUTHORIZED');
$s->check_error(post_event({ room => 'dashboard', event => 'notice' }), 400, 'VALIDATION_ERROR', '/api/v1/events', qr/data/);
$s->check_error(post_event({ room => 'dashboard', event => 'connect', data => {} }), 400, 'VALIDATION_ERROR', '/api/v1/events', qr/reserved/);
$s->check_error(post_event({ room => 'dashboard', event => 'x', data => {}, device_id => 'NOPE' }), 404, 'DEVICE_NOT_FOUND');
is post_event({ room => 'dashboard', event => 'scoped', data => { about => $A }, device_id => $A })->res->code, 202,
    'an event about alice\'s device to dashboard: 202';
is post_event({ room => 'dashboard', event => 'scoped', data => { about => $B }, device_id => $B })->res->code, 202,
    '... and one about bob\'s';
barrier(@ALL);
for my $c (@ALL) {
    my $dash = $c->{rooms}{dashboard} ? 1 : 0;
    is_deeply [ events($c, 'notice') ], $dash ? [ { text => 'hello', n => 1.25 }, { text => 'from admin' } ] : [],
        "$c->{id}: notice " . ($dash ? 'twice, as posted' : 'never');
    my @want = !$dash ? () : $c->{sees_all} ? ($A, $B) : $c->{uid} eq $a_id ? ($A) : ($B);
    is_deeply [ map { $_->{about} } events($c, 'scoped') ], \@want,
        "$c->{id}: events with device_id: " . (@want ? join(', ', @want) : 'none');
}

# ======================================================================
# across workers: polling requests and upgrades land on either worker

{
    my @def = map { sio("xw_def$_", token => $bob, uid => $b_id, port => $port2) } 1 .. 8;
    my @pol = map { sio("xw_poll$_", token => $bob, uid => $b_id, port => $port2, transports => ['polling']) } 1 .. 4;
    my @stalled = settle(@def, @pol);
    ok !grep({ !nconnect($_) } @def, @pol), '12 more sockets through the reuseport listener';
    ok !@stalled, 'all 8 with default options upgraded by themselves' or diag "stalled until nudged: @stalled";
    ok !grep({ !lines_of($_, 'upgrade') } @def), '... all 8 upgraded';
    my @acks = join_all(map { [ $_, 'dashboard' ] } @def, @pol);
    is scalar(grep { $_->{ok} } @acks), 12, '... joined dashboard' or diag explain \@acks;
    # several round trips each: events one at a time, joins one at a time
    for my $k (1 .. 5) {
        post_event({ room => 'dashboard', event => 'xw', data => { k => $k }, device_id => $B });
        wait_until(10, sub { !grep { my $c = $_; !grep { $_->{k} == $k } events($c, 'xw') } @def, @pol });
        join_all(map { [ $_, 'transactions' ] } @pol);
    }
    for my $c (@def, @pol) {
        is_deeply [ map { $_->{k} } events($c, 'xw') ], [ 1 .. 5 ], "$c->{id}: all 5 events, in order"
            or diag explain [ map { "$_->{t} " . ($_->{event} // $_->{reason} // '') } @{ $c->{lines} } ];
    }
    is scalar(grep { $_->{t} eq 'ack' && ref $_->{data} eq 'HASH' && $_->{data}{ok} } map { @{ $_->{lines} } } @pol), 4 * 6,
        'polling sockets: every acknowledgement came back';
    my %sid = map { ((lines_of($_, 'connect'))[0]{sid} => $_->{id}) } @pol;
    cmd({ op => 'close', id => $_->{id} }) for @def, @pol;
    wait_until(2, sub { 0 });
    my %pids;
    open my $fh, '<', "$logdir/port2.log" or die "$logdir/port2.log: $!";
    while (<$fh>) {
        my ($pid, $method, $tr, $sid) = split;
        $pids{$sid}{$pid}++ if $tr eq 'polling' && $sid && $sid ne '-' && $sid{$sid};
    }
    my @both = grep { keys %{ $pids{$_} } >= 2 } keys %sid;
    ok @both >= 1, scalar(@both) . ' of 4 polling sessions were served by both workers'
        or diag explain \%pids;
    my %all_pids = map { %{ $pids{$_} // {} } } keys %sid;
    is scalar(keys %all_pids), 2, 'polling requests reached both workers';
}

# ======================================================================
# a slow reader on raw Engine.IO is cut off; a fast socket.io-client in the
# same room gets all 2000 events

cmd({ op => 'close', id => $_->{id} }) for @ALL;
wait_until(2, sub { 0 });


{
    my ($slow, $head, $rbuf) = raw_ws('EIO=4&transport=websocket');
    like $head, qr{^HTTP/1.1 101}, 'raw Engine.IO over WebSocket: 101';
    like ws_next($slow, \$rbuf), qr/^0\{"sid":/, '... the open packet 0{"sid":...}';
    print $slow ws_frame('40' . encode_json({ token => $admin }));
    like ws_next($slow, \$rbuf), qr/^40\{"sid":/, '... 40{token} answered with 40{"sid":...}';
    print $slow ws_frame('420["join_room",{"room":"dashboard"}]');
    is ws_next($slow, \$rbuf), '430[{"ok":true}]', '... 420["join_room",...] answered with 430[{"ok":true}]; then it reads nothing';

    my $fast = sio('fast', token => $admin, uid => $admin_id, count => ['big']);
    settle($fast);
    my ($ack) = join_all([ $fast, 'dashboard' ]);
    ok $ack->{ok}, 'a fast socket.io-client joins dashboard too';
    my $slow_before = metric_sum('fleet_ws_slow_closed_total');

    # 2000 events of ~3 KB, 20 per transaction, through one psql from a
    # child: far more than the socket buffers and the 64k queue
    my $sql = File::Temp->new;
    for my $b (0 .. 99) {
        printf $sql "SELECT fleet_notify('sio_emit', jsonb_build_object('room', 'dashboard', 'event', 'big', "
            . "'data', jsonb_build_object('i', g, 'pad', repeat('x', 3000)))) FROM generate_series(%d, %d) g;\n",
            $b * 20 + 1, $b * 20 + 20;
    }
    close $sql;
    my $pub = fork // die "fork: $!";
    if ($pub == 0) {
        open STDOUT, '>', '/dev/null';
        { exec 'psql', $s->pg_dsn, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $sql->filename; }
        POSIX::_exit(127);
    }
    my $report;
    wait_until(40, sub {
        cmd({ op => 'report', id => 'fast' });
        pump(0.3);
        ($report) = reverse lines_of($fast, 'report');
        $report && ($report->{counts}{big} // 0) >= 2000;
    });
    waitpid $pub, 0;
    is $? >> 8, 0, 'the publisher ran';
    is $report->{counts}{big}, 2000, 'the fast client got all 2000' or diag explain $report;
    ok $report->{inorder}{big}, '... in order';
    ok $report->{connected}, '... and is still connected';
    ok metric_sum('fleet_ws_slow_closed_total') > $slow_before, 'the slow reader was cut off (fleet_ws_slow_closed_total)';
    my ($got, $closed, $end) = (0, 0, time + 30);
    while (!$closed && time < $end) {
        next unless IO::Select->new($slow)->can_read(1);
        my $r = sysread($slow, my $b, 1 << 20);
        $closed = 1 unless $r;
        $got += $r // 0;
    }
    ok $closed, "... its connection ends (EOF) once what was in flight is read ($got bytes)";
    ok $got < 2000 * 3000, '... not everything reached it';
    cmd({ op => 'close', id => 'fast' });
}

# ======================================================================
# reconnection after a reload, which also brings a tight rate limit:
# fleet_ws_message_rate 2, fleet_ws_message_burst 3

my %R = map { ($_ => sio("re_$_", token => $alice, uid => $a_id, transports => $MODES{$_})) } @MODES;
settle(values %R);
ok !grep({ !nconnect($_) } values %R), 'three sockets of alice for the reload';
join_all(map { [ $R{$_}, 'dashboard' ] } @MODES);
{
    my $conf = $s->nginx_conf_path;
    open my $in, '<', $conf or die "$conf: $!";
    my $text = do { local $/; <$in> };
    close $in;
    $text =~ s/fleet_ws_max_queue 64k;/fleet_ws_max_queue 64k; fleet_ws_message_rate 2; fleet_ws_message_burst 3;/
        or die 'no fleet_ws_max_queue line in the config';
    open my $out, '>', $conf or die "$conf: $!";
    print $out $text;
    close $out;
}
# a polling session by hand, its GET pending across the reload
my ($rsid) = (poll_req(GET => ''))[1] =~ /^0\{"sid":"([^"]+)"/;
poll_req(POST => "&sid=$rsid", '40' . encode_json({ token => $alice }));
like +(poll_req(GET => "&sid=$rsid"))[1], qr/^40\{/, 'a polling session by hand';
my $held = held_get($rsid);
wait_until(0.5, sub { 0 });
my $alerts_before = () = $s->error_log =~ /open socket #\d+ left in connection/g;
$s->reload_nginx;
pump(0.1);
{
    my ($hst, $hbody) = http_answer($held, 5);
    is $hst, 200, 'a polling GET pending during the reload gets an answer'
        or diag "got: " . ($hst ? "$hst $hbody" : "the connection closed without an answer: '$hbody'");
    my $alerts = () = $s->error_log =~ /open socket #\d+ left in connection/g;
    is $alerts - $alerts_before, 0, '... the leaving worker does not abandon it ("open socket left in connection")';
    is_deeply [ poll_req(POST => "&sid=$rsid", '421["join_room",{"room":"dashboard"}]') ], [ 200, 'ok' ],
        '... the session goes on after the reload: POST';
    is_deeply [ poll_req(GET => "&sid=$rsid") ], [ 200, '431[{"ok":true}]' ], '... and GET';
}
ok wait_until(15, sub { nconnect($R{websocket}) >= 2 && nconnect($R{default}) >= 2 }),
    'after the reload the WebSocket sockets reconnect by themselves'
    or diag explain [ map { [ $_->{id}, map { "$_->{t} " . ($_->{reason} // '') } @{ $_->{lines} } ] } values %R ];
for my $mode (qw(default websocket)) {
    ok scalar(lines_of($R{$mode}, 'disconnect')), "$mode: ... after a disconnect";
}
settle(values %R);
# each socket is connected again (or never stopped being), then hears its user room
sub is_connected { my ($l) = grep { $_->{t} =~ /^(connect|disconnect)\z/ } reverse @{ $_[0]{lines} }; $l && $l->{t} eq 'connect' }
ok wait_until(15, sub { !grep { !is_connected($_) } values %R }), 'all three are connected after the reload';
post_event({ room => "user_$a_id", event => 'after_reload', data => { n => 1 } });
ok wait_until(10, sub { !grep { !events($_, 'after_reload') } values %R }),
    'every socket hears its user room again without joining it'
    or diag explain { map { ($_->{id} => [ map { join ' ', grep { defined } @$_{qw(t tr event reason)} } @{ $_->{lines} } ]) }
                      grep { !events($_, 'after_reload') } values %R };
my @acks = join_all(map { [ $R{$_}, 'dashboard' ] } @MODES);
is scalar(grep { $_->{ok} } @acks), 3, 'the sockets re-join dashboard';
post_event({ room => 'dashboard', event => 'dash_after', data => { n => 2 }, device_id => $A });
ok wait_until(10, sub { !grep { !events($_, 'dash_after') } values %R }), '... and get its events again';
is scalar(events($R{$_}, 'dash_after')), 1, "$_: once" for @MODES;

# rate limiting, on a WebSocket and on a polling session alike: a few too
# many get rate_limited; a flood closes the socket, and the client comes back
for my $mode (qw(websocket polling)) {
    my $rl = sio("rl_$mode", token => $alice, uid => $a_id, transports => $MODES{$mode});
    wait_until(10, sub { nconnect($rl) });
    wait_until(1.5, sub { 0 });     # the bucket refills (2 a second, up to 3)
    cmd({ op => 'burst', id => $rl->{id}, event => 'join_room', data => { room => 'dashboard' }, n => 5, tag => 'b5' });
    wait_until(10, sub { lines_of($rl, 'ack') + events($rl, 'rate_limited') >= 5 });
    my $ok_acks = grep { $_->{data} && $_->{data}{ok} } lines_of($rl, 'ack');
    my @limited = events($rl, 'rate_limited');
    ok @limited >= 1, "$mode: 5 events at once: " . scalar(@limited) . " rate_limited, $ok_acks answered";
    is $ok_acks + @limited, 5, '... each one either answered or refused';
    like $limited[0] && $limited[0]{message}, qr/./, '... rate_limited {message}';
    wait_until(2, sub { 0 });
    my $tag = emit($rl, 'join_room', { room => 'dashboard' });
    ok wait_until(10, sub { ack_of($rl, $tag) }) && ack_of($rl, $tag)->{data}{ok}, '... and a second later it may go on';
    ok !lines_of($rl, 'disconnect'), '... never disconnected';

    cmd({ op => 'burst', id => $rl->{id}, event => 'join_room', data => { room => 'dashboard' }, n => 40 });
    ok wait_until(10, sub { lines_of($rl, 'disconnect') }), "$mode: a flood of 40: the server closes the socket";
    my ($d) = lines_of($rl, 'disconnect');
    note "disconnect reason: " . ($d ? $d->{reason} : 'none');
    ok events($rl, 'rate_limited') > @limited, '... the first refused messages got rate_limited before'
        or diag 'rate_limited events: ' . scalar(events($rl, 'rate_limited')) . ', before the flood ' . scalar(@limited);
    ok wait_until(15, sub { nconnect($rl) >= 2 }), '... and the client reconnects by itself';
    wait_until(1.5, sub { 0 });
    join_all([ $rl, 'dashboard' ]);
    post_event({ room => 'dashboard', event => 'after_flood', data => { n => 3 }, device_id => $A });
    ok wait_until(10, sub { events($rl, 'after_flood') }), '... re-joins and gets events again';
}

cmd({ op => 'exit' });
waitpid $DRV_PID, 0;
$DRV_PID = undef;
$s->assert_no_crash;
diag sprintf 'ran in %.1f s', time - $T_START;
done_testing;
