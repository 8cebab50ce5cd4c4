#!/usr/bin/perl
# Commands end to end over MQTT (SPEC 6): the bridge's sweep claims PENDING
# rows, signs them over PostgreSQL's exact text and publishes them QoS 1 on
# device/{id}/command; PUBACK makes them SENT; device ACKs on server/{id}/ack
# finish them and the bridge's deadline timer times out the silent ones.
# A command created while the bridge is down is published when it returns.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex);
use Mojo::JSON qw(decode_json);
use IO::Select;
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);
use FleetStack;
use FleetMQTT qw(sign_msg publish bridge_ping wait_for);

BEGIN { $ENV{FLEET_COMMAND_TIMEOUT_S} = 3 }

my $s = FleetStack->new;
my $dbh = $s->dbh;
my $admin = $s->admin_token;
my $secret = $s->device_secret;

sub req {
    my ($method, $path, $json) = @_;
    my $tx = $s->ua->build_tx($method => $s->url($path) => { Authorization => "Bearer $admin" }
        => (defined $json ? (json => $json) : ()));
    return $s->ua->start($tx);
}
sub body { decode_json($_[0]->res->body) }
sub register {
    my $chip = shift;
    my $tx = $s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:9$_[0]","firmware_version":"v1"}));
    my $id = eval { body($tx)->{data}{device_id} };
    BAIL_OUT('need-register gave no device_id: ' . ($tx->res->body // '')) unless $id;
    return $id;
}
sub status_of { scalar $dbh->selectrow_array('SELECT status FROM commands WHERE id = ?', undef, $_[0]) }
sub events_of {
    return map { $_->[0] } @{ $dbh->selectall_arrayref(
        'SELECT event FROM command_events WHERE scope = ? ORDER BY id', undef, $_[0]) };
}

my @devs = map { register("MQCMD$_", $_) } 1 .. 3;

# ---- the devices' side: one subscriber on device/+/command, QoS 1
my $subfile = $s->dir . '/device-commands.txt';
my $sub_pid = fork // die "fork: $!";
if (!$sub_pid) {
    open STDOUT, '>', $subfile or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    { no warnings qw(exec);
      exec 'mosquitto_sub', '-h', '127.0.0.1', '-p', $s->mqtt_port, '-q', '1',
          '-t', 'device/+/command', '-v'; }
    POSIX::_exit(127);
}
END { if ($sub_pid) { kill 'TERM', $sub_pid; waitpid $sub_pid, 0 } }

# topic => [ raw message texts ] from the subscriber's output so far
sub received {
    open my $fh, '<', $subfile or return {};
    my %got;
    while (my $line = <$fh>) {
        chomp $line;
        my ($topic, $msg) = split / /, $line, 2;
        push @{ $got{$topic} }, $msg if defined $msg;
    }
    return \%got;
}
# the messages for one command id, decoded
sub messages_for {
    my ($dev, $cmd) = @_;
    return grep { defined $_->[1] && ($_->[1]{command_id} // '') eq $cmd }
        map { [ $_, eval { decode_json($_) } ] } @{ received()->{"device/$dev/command"} // [] };
}
sub sig_ok {
    my $text = shift;
    my ($base, $sig) = $text =~ /\A(.*),"sha256":"([0-9a-f]{64})"\}\z/s or return 0;
    return sha256_hex("$base}" . $secret) eq $sig;
}

ok wait_for(10, sub {
    publish($s, 'device/probe/command', '{"probe":1}');
    wait_for(1, sub { received()->{'device/probe/command'} });
}), 'the device subscriber is listening';

my $pong = bridge_ping($s->bridge_socket);
ok $pong && $pong->{mqtt} && $pong->{pg}, 'bridge connected';
is $pong->{commands_published}, 0, 'pong has commands_published';
is $pong->{commands_sent}, 0, 'pong has commands_sent';

# ---- the fast path op
{
    my $sock = IO::Socket::UNIX->new(Peer => $s->bridge_socket, Type => SOCK_STREAM)
        or die "socket: $!";
    print $sock qq({"op":"commands_pending","id":7}\n);
    $sock->flush;
    my $line = '';
    my $sel = IO::Select->new($sock);
    my $deadline = time + 5;
    while ($line !~ /\n/ && time < $deadline) {
        next unless $sel->can_read(0.2);
        sysread($sock, $line, 4096, length $line) or last;
    }
    my $r = eval { decode_json((split /\n/, $line)[0]) } // {};
    ok $r->{op} eq 'commands_pending' && $r->{id} == 7 && $r->{ok} && ref $r->{ok},
        '{"op":"commands_pending"} is answered ok' or diag $line;
}

# ---- the bulk: published, signed, exact numbers, SENT
my $tx = req(POST => '/api/v1/devices/apply-config',
    { device_ids => \@devs, configs => { wash_time => 300, ratio => 23.7 } });
is $tx->res->code, 200, 'apply-config -> 200';
my $setup = body($tx)->{data}{setup_id};
my %cmd = map { $_->[1] => $_->[0] } @{ $dbh->selectall_arrayref(
    'SELECT id, device_id FROM commands WHERE setup_id = ?', undef, $setup) };
is scalar(keys %cmd), 3, 'three command rows';

ok wait_for(10, sub { 3 == grep { messages_for($_, $cmd{$_}) } @devs }),
    'the three commands arrive on device/{id}/command';
for my $d (@devs) {
    my ($m) = messages_for($d, $cmd{$d}) or next;
    my ($text, $j) = @$m;
    ok sig_ok($text), "$d: trailing sha256 verifies";
    like $text, qr/,"sha256":"[0-9a-f]{64}"\}\z/, "$d: sha256 is the last member";
    is $j->{command}, 'APPLY_CONFIG', "$d: command";
    ok $j->{require_ack} && ref $j->{require_ack}, "$d: require_ack true";
    like $text, qr/"ratio":\s*23\.7[,}\s]/, "$d: ratio exactly 23.7 in the text";
    is $j->{payload}{configs}{wash_time}, 300, "$d: wash_time";
}
ok wait_for(10, sub { 3 == grep { (status_of($cmd{$_}) // '') eq 'SENT' } @devs }), 'rows go PENDING -> SENT';
ok wait_for(5, sub { (bridge_ping($s->bridge_socket)->{commands_sent} // 0) >= 3 }), 'commands_sent counts them';
cmp_ok bridge_ping($s->bridge_socket)->{commands_published}, '>=', 3, 'commands_published counts them';

# ---- answers: success, failure, silence
publish($s, "server/$devs[0]/ack", sign_msg($secret,
    qq({"command_id":"$cmd{$devs[0]}","device_id":"$devs[0]","command":"APPLY_CONFIG","status":"SUCCESS","timestamp":1758358355794})));
publish($s, "server/$devs[1]/ack", sign_msg($secret,
    qq({"command_id":"$cmd{$devs[1]}","device_id":"$devs[1]","status":"FAILED","error":"Invalid config format"})));
ok wait_for(12, sub {
    (status_of($cmd{$devs[0]}) // '') eq 'SUCCESS' && (status_of($cmd{$devs[1]}) // '') eq 'FAILED'
        && (status_of($cmd{$devs[2]}) // '') eq 'TIMEOUT'
}), 'statuses SUCCESS, FAILED, TIMEOUT' or diag explain { map { $_ => status_of($cmd{$_}) } @devs };
is $dbh->selectrow_array('SELECT error FROM commands WHERE id = ?', undef, $cmd{$devs[1]}),
    'Invalid config format', 'the device error is kept';
is $dbh->selectrow_array('SELECT error FROM commands WHERE id = ?', undef, $cmd{$devs[2]}),
    'Device did not respond', 'the silent one timed out';
is $dbh->selectrow_array('SELECT status FROM command_setups WHERE id = ?', undef, $setup), 'COMPLETED',
    'setup COMPLETED';
my @ev = events_of($setup);
is_deeply [ @ev[-2, -1] ], [ 'complete', 'results' ], 'setup events end with complete, results'
    or diag "@ev";
like $s->bridge_log, qr/info 1 command timed out/, 'the timeout is logged at info';

# ---- fire and forget: PING
$tx = req(POST => "/api/v1/devices/$devs[0]/commands", { command => 'PING' });
is $tx->res->code, 200, 'PING accepted';
my $ping = body($tx)->{data}{command_id};
ok wait_for(10, sub { messages_for($devs[0], $ping) }), 'PING published';
my ($pm) = messages_for($devs[0], $ping);
ok $pm && sig_ok($pm->[0]), 'PING signed';
ok $pm && !$pm->[1]{require_ack} && ref $pm->[1]{require_ack}, 'PING has require_ack false';
ok wait_for(10, sub { (status_of($ping) // '') eq 'SENT' }), 'PING row SENT';
ok wait_for(5, sub { my @e = events_of($ping); "@e" =~ /command-sent progress complete results\z/ }),
    'PING events command-sent, progress, complete, results' or diag join ' ', events_of($ping);

# ---- the bridge is down: the row waits, and goes out when it returns
$s->kill_bridge('TERM');
$tx = req(POST => "/api/v1/devices/$devs[1]/restart");
is $tx->res->code, 200, 'RESTART accepted while the bridge is down';
my $restart = body($tx)->{data}{command_id};
sleep 1;
is status_of($restart), 'PENDING', 'it stays PENDING';
ok !messages_for($devs[1], $restart), 'and is not published';
# the 3 s deadline of a never-delivered command must not race the restart
$dbh->do(q{UPDATE commands SET deadline = now() + interval '60 seconds' WHERE id = ?}, undef, $restart);
$s->start_bridge;
ok wait_for(10, sub { (status_of($restart) // '') eq 'SENT' }), 'after the restart it is SENT without a new request';
my ($rm) = messages_for($devs[1], $restart);
ok $rm && sig_ok($rm->[0]) && $rm->[1]{command} eq 'RESTART', 'and was published, signed';

$s->assert_no_crash;
done_testing;
