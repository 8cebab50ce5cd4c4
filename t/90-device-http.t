#!/usr/bin/perl
# Device-facing HTTP routes (SPEC 4, seed 004): sync-state with both seed
# examples round-tripping exactly, sync-configs, event-log uploads stored
# once; unknown devices, bad signatures and bad shapes change nothing.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json encode_json);
use Time::HiRes qw(time sleep);
use FleetStack;

my $s = FleetStack->new(workers => 2);

sub register {
    my $chip = shift;
    my $tx = $s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"car_wash_v1.00"}));
    return decode_json($tx->res->body)->{data}{device_id};
}

my $id = register('SYNC0001');
ok $id, "registered $id";

my $car_wash = <<'JSON';
{
  "topic_request" : "startup",
  "device_id": "@ID@",
  "device_status" : "NORMAL",
  "payload": {
    "configs": {
      "machine":{
        "ACTIVE": true,
        "BANKNOTE": true,
        "COIN": true,
        "QR": true,
        "ON_TIME": "8:00",
        "OFF_TIME": "16:00",
        "SAVE_STATE" : true
      },
      "function": {
          "sec_per_baht": {
            "HP_WATER": 10,
            "FOAM": 10,
            "AIR": 10,
            "WATER": 10,
            "VACUUM": 10,
            "BLACK_TIRE": 10,
            "WAX": 10,
            "AIR_FRESHENER": 0,
            "PARKING_FEE":600
          }
    }
  }
  },
  "timestamp": 1758358335794
}
JSON

my $helmet = <<'JSON';
{
  "topic_request" : "startup",
  "device_id": "@ID@",
  "device_status" : "NORMAL",
  "payload": {
    "configs": {
      "machine":{
        "ACTIVE": true, "BANKNOTE": true, "COIN": true, "QR": true,
        "ON_TIME": "8:00", "OFF_TIME": "16:00", "SAVE_STATE" : true
      },
      "pricing": { "BASE_FEE": 30, "PROMOTION": 0, "WORK_PERIOD" : 600 },
      "function_start": { "DUST_BLOW": 0, "SANITIZE": 50, "UV": 100,
                          "OZONE": 200, "DRY_BLOW": 300, "PERFUME": 400 },
      "function_end": { "DUST_BLOW": 50, "SANITIZE": 100, "UV": 200,
                        "OZONE": 300, "DRY_BLOW": 400, "PERFUME": 600 }
    }
  },
  "timestamp": 1758358335794
}
JSON

my $dbh = $s->dbh;
sub device_row { $dbh->selectrow_hashref('SELECT * FROM devices WHERE id = ?', undef, shift) }

for my $case ([car_wash => $car_wash], [helmet_dryer => $helmet]) {
    my ($name, $text) = @$case;
    (my $body = $text) =~ s/\@ID\@/$id/;
    my $tx = $s->signed_post('/api/v1/devices/sync-state', $body);
    is $tx->res->code, 200, "$name startup -> 200";
    my $j = decode_json($tx->res->body);
    is_deeply [$j->{success}, $j->{message}], [1, 'Device state synced successfully'], "$name: success shape";
    my $row = device_row($id);
    is_deeply decode_json($row->{reported_configs}), decode_json($body)->{payload}{configs},
        "$name: reported configs round-trip exactly";
    is $row->{status}, 'NORMAL', "$name: status stored";
    ok $row->{online}, "$name: startup marks online";
}

# shutdown: offline, one device_status event
$dbh->do('LISTEN fleet_events');
(my $shutdown = $car_wash) =~ s/\@ID\@/$id/;
$shutdown =~ s/"startup"/"shutdown"/;
is $s->signed_post('/api/v1/devices/sync-state', $shutdown)->res->code, 200, 'shutdown -> 200';
ok !device_row($id)->{online}, 'shutdown marks offline';
is $s->signed_post('/api/v1/devices/sync-state', $shutdown)->res->code, 200, 'shutdown again -> 200';
my @events;
my $deadline = time + 3;
while (time < $deadline) {
    while (my $n = $dbh->pg_notifies) { push @events, decode_json($n->[2]) }
    sleep 0.1;
}
my @status = grep { $_->{type} eq 'device_status' && $_->{device_id} eq $id } @events;
is scalar(@status), 1, 'exactly one device_status event for one change';
is_deeply [map { $_->{online} ? 1 : 0 } @status], [0], 'the event says offline';

# refusals change nothing
my $before = encode_json(device_row($id));
(my $unknown = $car_wash) =~ s/\@ID\@/dev-doesnotexist/;
$s->check_error($s->signed_post('/api/v1/devices/sync-state', $unknown), 404, 'DEVICE_NOT_FOUND',
    '/api/v1/devices/sync-state');
(my $good = $helmet) =~ s/\@ID\@/$id/;
$s->check_error($s->signed_post('/api/v1/devices/sync-state', $good, 'x-signature' => '0' x 64), 401,
    'INVALID_SIGNATURE', '/api/v1/devices/sync-state');
(my $bad_req = $good) =~ s/"startup"/"reboot"/;
$s->check_error($s->signed_post('/api/v1/devices/sync-state', $bad_req), 400, 'VALIDATION_ERROR',
    '/api/v1/devices/sync-state', 'topic_request must be startup or shutdown');
$s->check_error($s->signed_post('/api/v1/devices/sync-state', '{"topic_request":"startup"}'), 400,
    'VALIDATION_ERROR', undef, 'device_id is required');
is encode_json(device_row($id)), $before, 'refused requests changed nothing';

# ---- sync-configs
my $path = "/api/v1/device/sync-configs/$id";
my $tx = $s->signed_post($path, '{"wash_time":300,"soap_amount":50}');
is $tx->res->code, 200, 'sync-configs -> 200';
is decode_json($tx->res->body)->{message}, 'Device configs synced successfully', 'sync-configs message';
is_deeply decode_json(device_row($id)->{reported_configs}), { wash_time => 300, soap_amount => 50 },
    'configs stored';
$s->check_error($s->signed_post($path, qq({"device_id":"other","a":1})), 400, 'VALIDATION_ERROR', $path,
    'device_id in the body does not match the path');
$s->check_error($s->signed_post('/api/v1/device/sync-configs/dev-nope', '{"a":1}'), 404, 'DEVICE_NOT_FOUND');
$s->check_error($s->signed_post($path, '[1]'), 400, 'VALIDATION_ERROR', $path, 'body must be a JSON object');
is_deeply decode_json(device_row($id)->{reported_configs}), { wash_time => 300, soap_amount => 50 },
    'refusals left the configs alone';

# ---- event-log uploads (seed 004)
my $upload = encode_json({ device_id => $id, items => [ {
    qr => { chargeId => 'ACB-1152-1152', net_amount => 0 },
    bank => { 20 => 0, 50 => 0, 100 => 0, 500 => 0, 1000 => 0 },
    coin => { 1 => 5, 2 => 0, 5 => 0, 10 => 0 },
    type => 'PAYMENT', status => 'SUCCEEDED', timestamp => 1760634265248, total_amount => 5 } ] });
$tx = $s->signed_post('/api/v1/device-event-logs/uploads', $upload);
is $tx->res->code, 201, 'upload -> 201';
is_deeply decode_json($tx->res->body),
    { success => 1, data => { length => 1, stored => 1 }, message => 'Logs uploaded successfully' },
    'upload answer: length and stored';
$tx = $s->signed_post('/api/v1/device-event-logs/uploads', $upload);
is_deeply decode_json($tx->res->body)->{data}, { length => 1, stored => 0 }, 're-upload after a reset stores nothing new';
is $s->count_rows('device_event_logs', "device_id = '$id'"), 1, 'one row';

my @bad = (
    [ { type => 'PAYMENT', status => 'DONE', timestamp => 1760634265249, total_amount => 5 },
      'items[1].status must be one of PENDING, SUCCEEDED, FAILED, CANCELLED' ],
    [ { type => 'PAYMENT', status => 'FAILED', timestamp => 'yesterday', total_amount => 5 },
      'items[1].timestamp must be epoch milliseconds' ],
    [ { type => 'PAYMENT', status => 'FAILED', timestamp => 1760634265249, total_amount => -1 },
      'items[1].total_amount must be a number >= 0' ],
    [ { type => 'PAYMENT', status => 'FAILED', timestamp => 1760634265249, total_amount => 1, coin => { 1 => 1.5 } },
      'items[1].coin counts must be integers >= 0' ],
    [ { type => 'PAYMENT', status => 'FAILED', timestamp => 1760634265249, total_amount => 1, bank => [] },
      'items[1].bank must be an object' ],
    [ { type => 'PAYMENT', status => 'FAILED', timestamp => 1760634265249, total_amount => 1, qr => { chargeId => 5 } },
      'items[1].qr must be {chargeId: string, net_amount: number}' ],
    [ { status => 'FAILED', timestamp => 1760634265249, total_amount => 1 },
      'items[1].type must be a non-empty string' ],
);
for my $b (@bad) {
    my $good_item = { type => 'PAYMENT', status => 'SUCCEEDED', timestamp => 1760634265300, total_amount => 1 };
    my $body = encode_json({ device_id => $id, items => [ $good_item, $b->[0] ] });
    $s->check_error($s->signed_post('/api/v1/device-event-logs/uploads', $body), 400, 'VALIDATION_ERROR',
        '/api/v1/device-event-logs/uploads', $b->[1], "bad item: $b->[1]");
}
is $s->count_rows('device_event_logs', "device_id = '$id'"), 1, 'a batch with a bad item stores none of it';
$s->check_error($s->signed_post('/api/v1/device-event-logs/uploads', '{"device_id":"dev-nope","items":[]}'),
    404, 'DEVICE_NOT_FOUND');
$s->check_error($s->signed_post('/api/v1/device-event-logs/uploads', qq({"device_id":"$id"})),
    400, 'VALIDATION_ERROR', undef, 'items is required');

$s->assert_no_crash;
done_testing;
