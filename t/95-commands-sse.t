#!/usr/bin/perl
# Commands and their event streams (SPEC 6, seed 004), the HTTP and SSE
# side: validation and isolation of command routes, the command rows, and
# the seed's mixed 3-device bulk scenario streamed with exact event names,
# ids, replay for a late client and Last-Event-ID resume.  Device answers
# are driven through the same SQL functions the bridge calls (MQTT is
# covered end to end in the bridge tests).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json);
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use FleetStack;

my $s = FleetStack->new(workers => 2, extra_http => "fleet_sse_heartbeat 1s;");
# this test plays the bridge's part itself (publish, ACKs, deadlines) to
# pin down every step; the real bridge would race it (t/96 runs it for real)
$s->kill_bridge('TERM');
my $dbh = $s->dbh;
my $admin = $s->admin_token;
my $u_id = $s->create_user('carol@fleet.local', 'carol-pass-1234', 'user');
my $carol = $s->login('carol@fleet.local', 'carol-pass-1234');

sub req {
    my ($method, $path, $token, $json) = @_;
    my $tx = $s->ua->build_tx($method => $s->url($path) => { Authorization => "Bearer $token" }
        => (defined $json ? (json => $json) : ()));
    return $s->ua->start($tx);
}
sub body { decode_json($_[0]->res->body) }
sub register {
    my $chip = shift;
    return decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}))->res->body)->{data};
}

my @devs = map { register("CMD$_")->{device_id} } 1 .. 3;
my $mine = register('CMD9');
is req(POST => '/api/v1/devices/claim', $carol, { pin => $mine->{pin} })->res->code, 200, 'carol owns one device';

# ---- validation and isolation
$s->check_error(req(POST => '/api/v1/devices/apply-config', $admin, { device_ids => [], configs => {} }),
    400, 'VALIDATION_ERROR', '/api/v1/devices/apply-config', 'device_ids must be a non-empty array');
$s->check_error(req(POST => '/api/v1/devices/apply-config', $admin, { device_ids => ['a'] }),
    400, 'VALIDATION_ERROR', undef, 'configs is required');
my $n_before = $s->count_rows('commands');
my $tx = req(POST => '/api/v1/devices/apply-config', $carol,
    { device_ids => [ $mine->{device_id}, $devs[0], 'dev-nope' ], configs => {} });
$s->check_error($tx, 404, 'DEVICE_NOT_FOUND', undef, qr/\Q$devs[0]\E.*dev-nope|dev-nope.*\Q$devs[0]\E/,
    'a bulk with foreign or unknown devices is refused whole, naming them');
is $s->count_rows('commands'), $n_before, 'and nothing was created';
$s->check_error(req(POST => "/api/v1/devices/$mine->{device_id}/commands", $carol, { command => 'SELF_DESTRUCT' }),
    400, 'VALIDATION_ERROR');
$s->check_error(req(POST => "/api/v1/devices/$mine->{device_id}/commands", $carol,
    { command => 'UPDATE_FIRMWARE', payload => { url => 'https://x/fw.bin', version => '1.2.3', sha256 => 'zz' } }),
    400, 'VALIDATION_ERROR', undef, 'sha256 must be at least 64 characters');
$s->check_error(req(POST => "/api/v1/devices/$devs[0]/restart", $carol), 404, 'DEVICE_NOT_FOUND',
    undef, undef, "carol cannot restart a device she does not own");

# ---- a single command, firmware with its own timeout
$tx = req(POST => "/api/v1/devices/$mine->{device_id}/commands", $carol,
    { command => 'UPDATE_FIRMWARE', payload => { url => 'https://example.com/fw.bin', version => '1.2.3',
      sha256 => 'ab' x 32, size => 972800, reboot_after => \1, timeout_sec => 120, ratio => 23.7 } });
is $tx->res->code, 200, 'UPDATE_FIRMWARE accepted';
my $fw = body($tx)->{data}{command_id};
my $row = $dbh->selectrow_hashref('SELECT * FROM commands WHERE id = ?', undef, $fw);
is_deeply [ @$row{qw(status timeout_s require_ack)} ], [ 'PENDING', 120, 1 ], 'a PENDING row with timeout_sec';
like $row->{payload}, qr/"ratio": 23\.7\b/, 'payload numbers kept exactly as sent';
$tx = req(GET => "/api/v1/commands/$fw", $carol);
is body($tx)->{data}{status}, 'PENDING', 'GET /commands/{id}';
$s->check_error(req(GET => "/api/v1/commands/$fw", $s->login('admin@fleet.local', 'admin-pass-1234') && $carol ? 'x' : ''),
    401, 'UNAUTHORIZED');
$s->check_error(req(GET => '/api/v1/commands/cmd-nope', $carol), 404, 'COMMAND_NOT_FOUND');
$s->check_error(req(GET => '/api/v1/devices/events/cmd-nope', $carol), 404, 'COMMAND_NOT_FOUND');

# ---- the seed's mixed bulk: success, failure, no answer
$tx = req(POST => '/api/v1/devices/apply-config', $admin, { device_ids => \@devs, configs => { wash_time => 300 } });
is $tx->res->code, 200, 'apply-config -> 200';
my $bulk = body($tx)->{data};
is_deeply [ @$bulk{qw(total_devices status)}, scalar @{ $bulk->{device_ids} } ], [ 3, 'INITIATED', 3 ], 'seed shape';
my $setup = $bulk->{setup_id};
like $setup, qr/^setup-/, "setup id $setup";

# a watcher on each worker (new connections), streaming to files
my @watch;
for my $i (1 .. 2) {
    my $f = $s->dir . "/sse$i.txt";
    my $pid = fork // die;
    if (!$pid) {
        exec 'curl', '-sN', '-m', '20', '-H', "Authorization: Bearer $admin", '-o', $f,
            $s->url("/api/v1/devices/bulk-events/$setup");
    }
    push @watch, [ $pid, $f ];
}
sleep 0.5;

my $cmds = $dbh->selectall_arrayref('SELECT id, device_id FROM commands WHERE setup_id = ? ORDER BY device_id',
    undef, $setup);
$dbh->do('SELECT fleet_command_sent(?)', undef, $_->[0]) for @$cmds;
sub ack { $dbh->selectrow_array('SELECT fleet_ingest_ack(?, ?::jsonb)', undef, $_[0], $_[1]) }
ack($cmds->[0][1], qq({"command_id":"$cmds->[0][0]","device_id":"$cmds->[0][1]","command":"APPLY_CONFIG","status":"SUCCESS","timestamp":1758358355794}));
ack($cmds->[1][1], qq({"command_id":"$cmds->[1][0]","status":"FAILED","error":"Invalid config format"}));
is decode_json(ack($cmds->[0][1], qq({"command_id":"$cmds->[0][0]","status":"FAILED"})))->{stored}, 0,
    'a duplicate ACK changes nothing';
$dbh->do(q{UPDATE commands SET deadline = now() - interval '1 second' WHERE id = ?}, undef, $cmds->[2][0]);
is $dbh->selectrow_array('SELECT fleet_commands_timeout()'), 1, 'the deadline times the third out';
is $dbh->selectrow_array('SELECT fleet_commands_timeout()'), 0, 'once';
is decode_json(ack($cmds->[2][1], qq({"command_id":"$cmds->[2][0]","status":"SUCCESS"})))->{stored}, 0,
    'a late ACK changes nothing';

waitpid $_->[0], 0 for @watch;

sub parse_sse {
    my $text = shift;
    my @ev;
    for my $block (split /\n\n/, $text) {
        my %e;
        for (split /\n/, $block) {
            $e{$1} = $2 if /^(id|event|data): (.*)$/;
        }
        push @ev, { id => $e{id}, event => $e{event}, data => decode_json($e{data}) } if $e{event};
    }
    return @ev;
}

my @want = qw(progress device-success progress device-failed progress device-timeout progress complete results);
for my $w (@watch) {
    my @ev = parse_sse(FleetStack::_slurp($w->[1]));
    is_deeply [ map { $_->{event} } @ev ], \@want, "watcher $w->[1]: the seed's event sequence, then the end";
    my @ids = map { $_->{id} } @ev;
    is_deeply \@ids, [ sort { $a <=> $b } @ids ], 'ids increase';
    my %by = map { $_->{event} => $_->{data} } reverse @ev;
    is_deeply [ @{ $by{'device-success'} }{qw(device_id command_id command status)} ],
        [ $cmds->[0][1], $setup, 'APPLY_CONFIG', 'SUCCESS' ], 'device-success: command_id is the setup_id';
    is_deeply [ @{ $by{'device-failed'} }{qw(status error)} ], [ 'FAILED', 'Invalid config format' ], 'device-failed';
    is_deeply [ @{ $by{'device-timeout'} }{qw(status error)} ], [ 'TIMEOUT', 'Device did not respond' ], 'device-timeout';
    is_deeply [ @{ $ev[-2]{data} }{qw(total completed failed timeout status)} ], [ 3, 1, 1, 1, 'COMPLETED' ], 'complete';
    is_deeply [ map { $_->{status} } @{ $ev[-1]{data}{results} } ], [ 'SUCCESS', 'FAILED', 'TIMEOUT' ], 'results';
    is_deeply [ map { $_->{data}{progress} } grep { $_->{event} eq 'progress' } @ev ], [ 0, 33.33, 66.67, 100 ],
        'progress percentages';
}

# a late client gets everything, in order; Last-Event-ID resumes after it
my $late = qx{curl -sN -m 10 -H 'Authorization: Bearer $admin' @{[ $s->url("/api/v1/devices/bulk-events/$setup") ]}};
my @all = parse_sse($late);
is_deeply [ map { $_->{event} } @all ], \@want, 'a late client replays every event, then the stream ends';
my $resume = qx{curl -sN -m 10 -H 'Authorization: Bearer $admin' -H 'Last-Event-ID: $all[3]{id}' @{[ $s->url("/api/v1/devices/bulk-events/$setup") ]}};
is_deeply [ map { $_->{id} } parse_sse($resume) ], [ map { $_->{id} } @all[4 .. $#all] ],
    'Last-Event-ID: only the events after it, no duplicates';
is body(req(GET => "/api/v1/bulk/$setup", $admin))->{data}{status}, 'COMPLETED', 'GET /bulk/{id}: COMPLETED';
$s->check_error(req(GET => "/api/v1/devices/bulk-events/$setup", $carol), 404, 'COMMAND_NOT_FOUND',
    undef, undef, "carol cannot watch a bulk on devices she does not own");

# a live single-command stream: heartbeats while waiting, then the end
my $one = body(req(POST => "/api/v1/devices/$mine->{device_id}/restart", $carol))->{data}{command_id};
my $f = $s->dir . '/single.txt';
my $pid = fork // die;
exec 'curl', '-sN', '-m', '15', '-H', "Authorization: Bearer $carol", '-o', $f,
    $s->url("/api/v1/devices/events/$one") unless $pid;
sleep 2.5;
$dbh->do('SELECT fleet_command_sent(?)', undef, $one);
ack($mine->{device_id}, qq({"command_id":"$one","status":"SUCCESS"}));
waitpid $pid, 0;
my $single = FleetStack::_slurp($f);
like $single, qr/^:\n\n/m, 'heartbeat comments while waiting';
is_deeply [ map { $_->{event} } parse_sse($single) ],
    [ qw(progress device-success progress complete results) ], 'single command stream: same shape, total 1';

# connect/disconnect cycles free their memory: open a stream, read its
# first bytes, hang up
my @w = $s->nginx_worker_pids;
sub rss { my $t = 0; for (@w) { my ($kb) = FleetStack::_slurp("/proc/$_/status") =~ /VmRSS:\s+(\d+)/; $t += $kb } $t }
my $req = "GET /api/v1/devices/events/$fw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $carol\r\n\r\n";
my $cycle = sub {
    for (1 .. $_[0]) {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port, Timeout => 5)
            or die "connect: $!";
        print $sock $req;
        my $got = '';
        while ($got !~ /fleetgate/) {
            my $n = sysread($sock, my $buf, 4096) or last;
            $got .= $buf;
        }
        close $sock;
    }
};
$cycle->(200);
my $rss0 = rss();
$cycle->(1000);
my $rss1 = rss();
SKIP: {
    # AddressSanitizer keeps freed memory in quarantine: RSS says nothing
    # there (the plain suite checks it)
    skip 'RSS is meaningless under AddressSanitizer', 1 if $ENV{FLEET_NGINX_PRELOAD};
    cmp_ok $rss1 - $rss0, '<', 2048,
        sprintf('1000 stream connect/disconnect cycles: worker RSS %d -> %d kB', $rss0, $rss1);
}
sleep 0.5;
my $m = qx{curl -s @{[ $s->url('/metrics') ]}};
my $open = 0;
$open += $1 while $m =~ /fleet_open_streams\{worker="\d+"\} (\d+)/g;
is $open, 0, 'no stream left open';

$s->assert_no_crash;
done_testing;
