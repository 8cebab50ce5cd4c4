#!/usr/bin/perl
# fleetgate command benchmark: one bulk command to N simulated devices that
# all ACK at once (bench/command-devices.js, one MQTT connection), watched
# by W SSE clients (bench/sse-watchers.js).  Reports the time from the POST
# to the bulk's "complete" row and to each watcher's "results" event.
#
#   perl bench/commands.pl [DEVICES] [WATCHERS]      (after scripts/build)
#
# Baseline in the same run: one PING to one device, POST to "complete".

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

BEGIN { $ENV{FLEET_TEST_TIMEOUT} = 0 }
use FleetStack;
use Mojo::JSON qw(decode_json);
use Time::HiRes qw(time sleep);

my $n = shift // 1000;
my $w = shift // 100;

system("$FindBin::Bin/../scripts/simulate-devices --help >/dev/null 2>&1");  # npm deps
my $node_path = "$FindBin::Bin/../scripts/node/node_modules";

my $s = FleetStack->new(durable => 1, pool_size => 8);
my $dbh = $s->dbh;
my $admin = $s->admin_token;

# devices: rows as registration makes them (bulk insert: registering
# 1000 devices over HTTP is not what is measured)
$dbh->do(q{INSERT INTO devices (id, chip_id, mac_address)
           SELECT 'dev-bench' || lpad(g::text, 5, '0'), 'BENCH' || g, '24:6F:28:00:00:01'
             FROM generate_series(1, ?) g}, undef, $n);
my @ids = map { $_->[0] } @{ $dbh->selectall_arrayref(q{SELECT id FROM devices WHERE id LIKE 'dev-bench%' ORDER BY id}) };

open my $devs, '-|', "NODE_PATH=$node_path node $FindBin::Bin/command-devices.js 127.0.0.1 "
    . $s->mqtt_port . ' ' . $s->device_secret or die;
my $ready = <$devs>;
die "device simulator did not start\n" unless ($ready // '') =~ /ready/;

sub post {
    my ($path, $json) = @_;
    my $res = $s->ua->post($s->url($path) => { Authorization => "Bearer $admin" } => json => $json)->res;
    die "POST $path: " . $res->code . ' ' . $res->body . "\n" unless $res->code == 200;
    return decode_json($res->body)->{data};
}
sub wait_complete {
    my ($scope, $t0) = @_;
    while (time - $t0 < 300) {
        my $t = $dbh->selectrow_array(q{SELECT extract(epoch FROM created_at) FROM command_events
                                        WHERE scope = ? AND event = 'complete'}, undef, $scope);
        return $t - $t0 if $t;
        sleep 0.01;
    }
    return undef;
}

# baseline: one fire-and-forget command
my $t0 = time;
my $ping = post("/api/v1/devices/$ids[0]/commands", { command => 'PING' })->{command_id};
my $base = wait_complete($ping, $t0);

# the bulk, with W watchers connected before it starts producing events
$t0 = time;
my $bulk = post('/api/v1/devices/apply-config', { device_ids => \@ids, configs => { wash_time => 300 } });
my $post_ms = (time - $t0) * 1000;
my $url = $s->url("/api/v1/devices/bulk-events/$bulk->{setup_id}");
open my $watch, '-|', "NODE_PATH=$node_path node $FindBin::Bin/sse-watchers.js '$url' '$admin' $w "
    . int($t0 * 1000) or die;
my $complete = wait_complete($bulk->{setup_id}, $t0);
my $wres = <$watch>;
close $watch;

my $counts = $dbh->selectrow_hashref('SELECT * FROM fleet_scope_counts(?) c', undef, $bulk->{setup_id});
printf "one PING, POST -> complete row:                 %7.0f ms\n", $base * 1000;
printf "bulk APPLY_CONFIG to %d devices: POST answered: %7.0f ms\n", $n, $post_ms;
printf "bulk: POST -> complete row (all %d ACKed):     %7.0f ms  (%.0f commands/s)\n",
    $n, $complete * 1000, $n / $complete;
print  "SSE watchers: $wres";
print  "outcome: ", Mojo::JSON::encode_json(decode_json($dbh->selectrow_array(
    'SELECT fleet_scope_counts(?)', undef, $bulk->{setup_id}))), "\n";
system('pkill -f command-devices.js');
