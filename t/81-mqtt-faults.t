#!/usr/bin/perl
# MQTT ingest under faults (issue 3): two bridges share the subscription and
# store each message once; PostgreSQL away (stopped, frozen) and a full
# ingest queue lose nothing; a broker restart loses nothing the bridge had
# received; the persistent session keeps messages for a stopped bridge;
# SIGTERM stores the queue before exit.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use FleetStack;
use FleetMQTT qw(sign_msg publish_lines bridge_ping wait_for start_extra_bridge
    stop_extra_bridge clear_session);

my $s = FleetStack->new(workers => 1);
my $secret = $s->device_secret;
my $T0 = int(time) * 1000;

my $tx = $s->signed_post('/api/v1/devices/need-register',
    '{"chip_id":"FAULTS-1","mac_address":"24:6F:28:00:00:01","firmware_version":"v1"}');
my $A = (FleetStack::json_of($tx) // {})->{data}{device_id}
    or BAIL_OUT('need-register gave no device_id: ' . ($tx->res->body // ''));

# n signed readings of sensor type $type, distinct timestamps
my $phase = 0;
sub readings {
    my ($type, $n) = @_;
    my $base = $T0 + 1_000_000 * ++$phase;
    return [map { sign_msg($secret, sprintf '{"type":"%s","unit":"n","value":%d,"timestamp":%d}',
        $type, $_, $base + $_) } 1 .. $n];
}

sub rows {
    my $type = shift;
    my $dbh = eval { $s->dbh } or return -1;
    return ($dbh->selectrow_array('SELECT count(*) FROM sensor_readings r JOIN sensors x ON x.id = r.sensor_id
        WHERE x.device_id = ? AND x.type = ?', undef, $A, $type))[0];
}

sub pong { bridge_ping($_[0] // $s->bridge_socket) // {} }

sub subscribed_count { my $log = shift; my $n = () = $log =~ /info mqtt subscribed/g; $n }

my $san = qr/AddressSanitizer|LeakSanitizer|runtime error|signal 11|segfault/;

# ---- two bridges, one share group: every message stored exactly once
my $b2 = start_extra_bridge($s, 'bridge2', '--client-id', 'fleet-bridge-test-2',
    '--queue-max-messages', '20');
ok wait_for(10, sub { subscribed_count(FleetMQTT::_slurp($b2->{log})) >= 1 }), 'second bridge subscribed';
my ($m1, $m2) = (pong(), pong($b2->{socket}));
publish_lines($s, "server/$A/sensor", readings('two', 200));
ok wait_for(20, sub { rows('two') >= 200 }), '200 readings stored with two bridges';
my ($n1, $n2);
ok wait_for(5, sub {
    ($n1, $n2) = (pong(), pong($b2->{socket}));
    ($n1->{stored} - $m1->{stored}) + ($n2->{stored} - $m2->{stored}) >= 200;
}), 'stored counters reach 200';
is rows('two'), 200, 'exactly 200 rows';
is +($n1->{stored} - $m1->{stored}) + ($n2->{stored} - $m2->{stored}), 200, 'each message stored once (no double processing)';
is +($n1->{mqtt_in} - $m1->{mqtt_in}) + ($n2->{mqtt_in} - $m2->{mqtt_in}), 200, 'each message delivered to one bridge';
cmp_ok $n1->{mqtt_in} - $m1->{mqtt_in}, '>', 0, 'bridge 1 got a share';
cmp_ok $n2->{mqtt_in} - $m2->{mqtt_in}, '>', 0, 'bridge 2 got a share';

# ---- PostgreSQL stopped while messages flow; bridge 2's queue (20) fills
$s->stop_pg('fast');
publish_lines($s, "server/$A/sensor", readings('pgdown', 200));
my ($q1, $q2) = ({}, {});
ok wait_for(15, sub {
    ($q1, $q2) = (pong(), pong($b2->{socket}));
    ($q1->{queue_len} // 0) > 0 && ($q2->{queue_len} // 0) >= 20;
}), 'messages wait in the bridges\' queues while PostgreSQL is down'
    or diag explain [$q1, $q2];
ok !$q1->{pg} && !$q2->{pg}, 'pong: pg false';
sleep 1;        # the broker keeps offering; bridge 2 must not take more
$q2 = pong($b2->{socket});
cmp_ok $q2->{queue_len}, '<=', 40, 'a full queue stops MQTT reads (bounded)';
like FleetMQTT::_slurp($b2->{log}), qr/MQTT reads paused/, 'bridge 2 logs the pause';
$s->start_pg;
ok wait_for(30, sub { rows('pgdown') >= 200 }), 'all 200 stored once PostgreSQL is back'
    or diag 'stored: ' . rows('pgdown');
is rows('pgdown'), 200, 'exactly 200 rows';
ok wait_for(10, sub { (pong($b2->{socket})->{queue_len} // -1) == 0 && (pong()->{queue_len} // -1) == 0 }),
    'queues drained';
like FleetMQTT::_slurp($b2->{log}), qr/MQTT reads resume/, 'bridge 2 resumed reading';

my $st = stop_extra_bridge($b2);
is $st, 0, 'bridge 2 exits 0 on SIGTERM';
my $log2 = FleetMQTT::_slurp($b2->{log});
ok $log2 !~ $san, 'bridge 2 log: no crash or sanitizer report' or diag join "\n", grep { /$san/ } split /\n/, $log2;
# a retired bridge's persistent session would keep taking its share
clear_session($s, 'fleet-bridge-test-2');

# ---- broker restart: what the bridge received is stored even though the
# broker goes away while the messages still wait for PostgreSQL
my $p = pong();
$s->freeze_pg;
publish_lines($s, "server/$A/sensor", readings("restart", 300));
ok wait_for(10, sub { (pong()->{mqtt_in} // 0) - $p->{mqtt_in} >= 300 }), 'bridge received the first half';
cmp_ok pong()->{queue_len}, '>', 0, '... and holds it (PostgreSQL frozen)';
my $subs = subscribed_count($s->bridge_log);
$s->stop_broker;
$s->thaw_pg;
$s->start_broker;
ok wait_for(20, sub { subscribed_count($s->bridge_log) > $subs }), 'bridge reconnected and subscribed again';
publish_lines($s, "server/$A/sensor", readings('restart2', 300));
ok wait_for(20, sub { rows('restart') >= 300 && rows('restart2') >= 300 }), 'both halves stored'
    or diag 'first half: ' . rows('restart') . ', second: ' . rows('restart2');
is rows('restart') + rows('restart2'), 600, 'exactly 600 rows';

# ---- SIGTERM stores the queue before exit
$p = pong();
$s->freeze_pg;
publish_lines($s, "server/$A/sensor", readings('flush', 30));
ok wait_for(10, sub { (pong()->{mqtt_in} // 0) - $p->{mqtt_in} >= 30 }), '30 messages received';
my $pid = $s->bridge_pid;
kill 'TERM', $pid;
sleep 0.5;
$s->thaw_pg;
ok wait_for(10, sub { rows('flush') >= 30 }), 'SIGTERM: the queue is stored before exit';
ok wait_for(10, sub { !kill(0, $pid) || waitpid($pid, POSIX::WNOHANG()) == $pid }), 'bridge exited';
$s->kill_bridge('TERM');        # reaps it in the harness
is rows('flush'), 30, 'exactly 30 rows';
unlike $s->bridge_log, qr/are lost|giving up/, 'nothing reported lost';

# ---- persistent session: messages published while the bridge is away
publish_lines($s, "server/$A/sensor", readings('away', 50));
$s->start_bridge;
ok wait_for(20, sub { rows('away') >= 50 }), 'all 50 published while the bridge was stopped are stored'
    or diag 'stored: ' . rows('away');
is rows('away'), 50, 'exactly 50 rows';
is_deeply $s->dbh->selectcol_arrayref(q{SELECT r.value FROM sensor_readings r JOIN sensors x ON x.id = r.sensor_id
    WHERE x.device_id = ? AND x.type = 'away' ORDER BY r.received_at, r.ts}, undef, $A), [1 .. 50],
    '... in publish order';

$s->assert_no_crash;
done_testing;
