#!/usr/bin/perl
# fleetgate MQTT ingest benchmark: signed sensor readings published by
# several devices at once, stored by ONE bridge into a durable PostgreSQL.
#
#   perl bench/mqtt-ingest.pl [MESSAGES] [DEVICES]     (after scripts/build)
#
# Baseline in the same run: the same messages published to the same broker
# and counted by mosquitto_sub (what the broker alone delivers).  Reports
# messages/s for both and the ratio.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

BEGIN { $ENV{FLEET_TEST_TIMEOUT} = 0 }
use FleetStack;
use FleetMQTT qw(sign_msg bridge_ping);
use Mojo::JSON qw(decode_json);
use File::Temp ();
use Time::HiRes qw(time sleep);

my $total   = shift // 20000;
my $devices = shift // 4;
my $per     = int($total / $devices);

my $s = FleetStack->new(durable => 1);
my @ids = map {
    decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"BENCHMQ$_","mac_address":"24:6F:28:00:10:$_","firmware_version":"v1"}))->res->body)
        ->{data}{device_id}
} map { sprintf '%02d', $_ } 1 .. $devices;

# one file of signed readings per device, distinct timestamps
my @files;
my $t0ms = 1760000000000;
for my $d (0 .. $#ids) {
    my $f = File::Temp->new;
    for my $i (1 .. $per) {
        print $f sign_msg($s->device_secret,
            sprintf('{"type":"temperature","unit":"celsius","value":%.1f,"timestamp":%d}',
                    20 + ($i % 100) / 10, $t0ms + $i)), "\n";
    }
    close $f;
    push @files, $f;
}

# every device's file at once, on <prefix>/{id}/sensor
sub publish_all {
    my $prefix = shift;
    my @pids;
    for my $d (0 .. $#ids) {
        my $pid = fork // die;
        if (!$pid) {
            open STDIN, '<', $files[$d]->filename or die;
            exec 'mosquitto_pub', '-h', '127.0.0.1', '-p', $s->mqtt_port, '-q', '1',
                 '-t', "$prefix/$ids[$d]/sensor", '-l';
        }
        push @pids, $pid;
    }
    waitpid $_, 0 for @pids;
}

# ---- baseline: the broker alone, to one subscriber
my $sub_out = File::Temp->new;
my $sub = fork // die;
if (!$sub) {
    open STDOUT, '>', $sub_out->filename or die;
    exec 'mosquitto_sub', '-h', '127.0.0.1', '-p', $s->mqtt_port, '-q', '1',
         '-t', 'bench/+/sensor', '-C', $per * @ids;
}
sleep 0.5;
my $t = time;
publish_all('bench');
waitpid $sub, 0;
my $base = ($per * @ids) / (time - $t);

# ---- the bridge: publish, then wait until every reading is a row
$t = time;
publish_all('server');
my $want = $per * @ids;
my $n = 0;
while (time - $t < 600) {
    $n = $s->dbh->selectrow_array('SELECT count(*) FROM sensor_readings');
    last if $n >= $want;
    sleep 0.05;
}
my $took = time - $t;
my $rate = $n / $took;

printf "%-52s %10s %8s\n", 'path', 'msgs/s', 'ratio';
printf "%-52s %10.0f %8.2f\n", 'broker alone: mosquitto_pub -> mosquitto_sub (QoS 1)', $base, 1;
printf "%-52s %10.0f %8.2f\n", 'bridge: verify + store (durable PostgreSQL, 1 bridge)', $rate, $rate / $base;
printf "\n%d signed readings from %d devices, %d stored in %.2f s\n", $want, scalar @ids, $n, $took;
my $pong = bridge_ping($s->bridge_socket);
printf "bridge counters: stored=%s dropped_invalid=%s dropped_bad_signature=%s\n", @$pong{qw(stored dropped_invalid dropped_bad_signature)} if $pong;
