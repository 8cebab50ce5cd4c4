#!/usr/bin/perl
# Web device routes (SPEC 9, devices part; SPEC 5 sensors and cameras):
# claim by pin, list (own or all), get/patch/delete with ownership, admin
# owner changes, sensors and their readings.  A user never sees or touches
# another user's device: 404, exactly like a device that does not exist.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json encode_json);
use FleetStack;

my $s = FleetStack->new(workers => 2);
my $dbh = $s->dbh;

my $admin = $s->admin_token;
my $a_id = $s->create_user('alice@fleet.local', 'alice-pass-1234', 'user');
my $b_id = $s->create_user('bob@fleet.local', 'bob-pass-12345', 'user');
my $alice = $s->login('alice@fleet.local', 'alice-pass-1234');
my $bob = $s->login('bob@fleet.local', 'bob-pass-12345');

sub req {
    my ($method, $path, $token, $json) = @_;
    my %h = $token ? (Authorization => "Bearer $token") : ();
    my $tx = $s->ua->build_tx($method => $s->url($path) => \%h => (defined $json ? (json => $json) : ()));
    return $s->ua->start($tx);
}
sub body { decode_json($_[0]->res->body) }

sub register {
    my $chip = shift;
    my $j = decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}))->res->body);
    return @{ $j->{data} }{qw(device_id pin)};
}

# ---- claim
my ($dev, $pin) = register('WEB0001');
my $tx = req(POST => '/api/v1/devices/claim', $alice, { pin => $pin, name => 'Bay 1' });
is $tx->res->code, 200, 'alice claims with the pin';
my $d = body($tx)->{data};
is_deeply [@$d{qw(device_id name owner_id online)}], [$dev, 'Bay 1', $a_id, 1], 'claimed device shape';
ok exists $d->{$_}, "device has $_" for qw(status rssi last_seen reported_configs labels);

$s->check_error(req(POST => '/api/v1/devices/claim', $bob, { pin => $pin }), 404, 'DEVICE_NOT_FOUND',
    '/api/v1/devices/claim', undef, 'a used pin is gone');
(undef, my $pin2) = register('WEB0001');
$s->check_error(req(POST => '/api/v1/devices/claim', $bob, { pin => $pin2 }), 409, 'CONFLICT',
    undef, undef, "bob cannot claim alice's device");
$s->check_error(req(POST => '/api/v1/devices/claim', $bob, { pin => '12a4' }), 400, 'VALIDATION_ERROR');
$s->check_error(req(POST => '/api/v1/devices/claim', $bob, {}), 400, 'VALIDATION_ERROR', undef, 'pin is required');
$s->check_error(req(POST => '/api/v1/devices/claim', undef, { pin => $pin2 }), 401, 'UNAUTHORIZED');

# ---- list
my ($dev2, $pin3) = register('WEB0002');
is req(POST => '/api/v1/devices/claim', $bob, { pin => $pin3, name => 'Dryer' })->res->code, 200, 'bob claims another';
my $l = body(req(GET => '/api/v1/devices', $alice))->{data};
is_deeply [ $l->{total}, map { $_->{device_id} } @{ $l->{items} } ], [1, $dev], 'alice lists only her device';
$l = body(req(GET => '/api/v1/devices', $bob))->{data};
is_deeply [ $l->{total}, map { $_->{device_id} } @{ $l->{items} } ], [1, $dev2], 'bob lists only his';
$l = body(req(GET => '/api/v1/devices?limit=1&offset=1', $admin))->{data};
is_deeply [ $l->{total}, scalar @{ $l->{items} }, $l->{limit}, $l->{offset} ], [2, 1, 1, 1], 'admin sees all, paginated';
$s->check_error(req(GET => '/api/v1/devices?limit=0', $admin), 400, 'VALIDATION_ERROR', '/api/v1/devices',
    'limit must be an integer between 1 and 500');

# ---- get / patch / delete with ownership
is body(req(GET => "/api/v1/devices/$dev", $alice))->{data}{device_id}, $dev, 'owner gets her device';
is body(req(GET => "/api/v1/devices/$dev", $admin))->{data}{device_id}, $dev, 'admin gets any device';
$s->check_error(req(GET => "/api/v1/devices/$dev", $bob), 404, 'DEVICE_NOT_FOUND', "/api/v1/devices/$dev",
    undef, "bob: alice's device does not exist");
$s->check_error(req(PATCH => "/api/v1/devices/$dev", $bob, { name => 'mine' }), 404, 'DEVICE_NOT_FOUND');
$s->check_error(req(DELETE => "/api/v1/devices/$dev", $bob), 404, 'DEVICE_NOT_FOUND');
$s->check_error(req(POST => "/api/v1/devices/$dev/sensors", $bob, { type => 'x' }), 404, 'DEVICE_NOT_FOUND');
$s->check_error(req(GET => '/api/v1/devices/dev-nothere', $alice), 404, 'DEVICE_NOT_FOUND');

$tx = req(PATCH => "/api/v1/devices/$dev", $alice, { name => 'Bay 1A', labels => { parking_slot => 'B-12', zone => 'N' } });
is $tx->res->code, 200, 'owner patches name and labels';
is_deeply [ @{ body($tx)->{data} }{qw(name labels)} ], [ 'Bay 1A', { parking_slot => 'B-12', zone => 'N' } ], 'patched';
$tx = req(PATCH => "/api/v1/devices/$dev", $alice, { labels => { parking_slot => 'C-3' } });
is_deeply body($tx)->{data}{labels}, { parking_slot => 'C-3' }, 'a PATCH replaces the whole labels object';
$s->check_error(req(PATCH => "/api/v1/devices/$dev", $alice, { owner_id => $b_id }), 403, 'FORBIDDEN',
    undef, undef, 'only admins change owners');
$s->check_error(req(PATCH => "/api/v1/devices/$dev", $alice, { rssi => 1 }), 400, 'VALIDATION_ERROR');
$s->check_error(req(PATCH => "/api/v1/devices/$dev", $alice, { labels => [1] }), 400, 'VALIDATION_ERROR',
    undef, 'labels must be an object');
$tx = req(PATCH => "/api/v1/devices/$dev", $admin, { owner_id => $b_id });
is body($tx)->{data}{owner_id}, $b_id, 'admin moves the device to bob';
$s->check_error(req(GET => "/api/v1/devices/$dev", $alice), 404, 'DEVICE_NOT_FOUND', undef, undef,
    'alice no longer sees it');
$s->check_error(req(PATCH => "/api/v1/devices/$dev", $admin, { owner_id => '999999' }), 400, 'VALIDATION_ERROR',
    undef, 'owner_id names no user');
is req(PATCH => "/api/v1/devices/$dev", $admin, { owner_id => $a_id })->res->code, 200, 'and back to alice';

# ---- sensors and readings
$tx = req(POST => "/api/v1/devices/$dev/sensors", $alice, { type => 'temperature', unit => 'celsius', name => 'Water' });
is $tx->res->code, 201, 'owner creates a sensor';
my $sid = body($tx)->{data}{sensor_id};
like $sid, qr/^\d+$/, "sensor id $sid";
$s->check_error(req(POST => "/api/v1/devices/$dev/sensors", $alice, { type => 'temperature' }), 409, 'CONFLICT');
$s->check_error(req(POST => "/api/v1/devices/$dev/sensors", $alice, { unit => 'x' }), 400, 'VALIDATION_ERROR',
    undef, 'type is required');

# readings as the bridge stores them (SQL ingest, MQTT is tested elsewhere)
for my $r ([21.5, '2025-09-11T15:30:00Z'], [22.0, '2025-09-11T15:31:00Z'], [23.7, 1757604720000]) {
    my $msg = encode_json({ sensor_id => $sid + 0, value => $r->[0], timestamp => $r->[1] });
    $dbh->selectrow_array('SELECT fleet_ingest_sensor(?, ?::jsonb)', undef, $dev, $msg);
}
$tx = req(GET => "/api/v1/sensors/$sid/readings?from=2025-09-11T15:30:30Z&to=2025-09-11T16:00:00Z&limit=10", $alice);
is $tx->res->code, 200, 'readings in a range';
my $rd = body($tx)->{data};
is_deeply [ @$rd{qw(sensor_id sensor_type unit device_id)} ], [ $sid, 'temperature', 'celsius', $dev ], 'readings header';
is_deeply $rd->{readings}, [ { value => 22, timestamp => '2025-09-11T15:31:00.000Z' },
                             { value => 23.7, timestamp => '2025-09-11T15:32:00.000Z' } ],
    'ISO 8601 out, epoch ms in, ordered by time';
is scalar @{ body(req(GET => "/api/v1/sensors/$sid/readings?limit=1", $alice))->{data}{readings} }, 1, 'limit';
$s->check_error(req(GET => "/api/v1/sensors/$sid/readings", $bob), 404, 'NOT_FOUND', undef, undef,
    "bob cannot read alice's sensor");
$s->check_error(req(GET => "/api/v1/sensors/$sid/readings?from=yesterday", $alice), 400, 'VALIDATION_ERROR');

# ---- cameras: a frame from an unknown MAC is an unclaimed camera only admins see
$dbh->selectrow_array('SELECT fleet_ingest_image(?, ?::jsonb)', undef, '00:11:22:33:44:55',
    '{"X-MAC-ADDRESS":"00:11:22:33:44:55","image":"/9j/4AAQ"}');
my @cams = grep { $_->{kind} eq 'camera' } @{ body(req(GET => '/api/v1/devices', $admin))->{data}{items} };
is_deeply [ map { [$_->{mac_address}, $_->{owner_id}] } @cams ], [ [ '00:11:22:33:44:55', undef ] ],
    'admin sees the unclaimed camera';
ok !grep({ $_->{kind} eq 'camera' } @{ body(req(GET => '/api/v1/devices', $alice))->{data}{items} }),
    'users do not';

# ---- delete: the owner unclaims, the admin deletes
$tx = req(DELETE => "/api/v1/devices/$dev", $alice);
is_deeply [ $tx->res->code, body($tx)->{data}{deleted} ], [200, 0], 'owner removes it from her account';
is $dbh->selectrow_array('SELECT owner_id FROM devices WHERE id = ?', undef, $dev), undef, 'unowned, still there';
$tx = req(DELETE => "/api/v1/devices/$dev2", $admin);
is_deeply [ $tx->res->code, body($tx)->{data}{deleted} ], [200, 1], 'admin deletes';
is $s->count_rows('devices', "id = '$dev2'"), 0, 'gone';

# a token for a user that no longer exists
$dbh->do('DELETE FROM users WHERE id = ?', undef, $b_id);
$s->check_error(req(GET => '/api/v1/devices', $bob), 401, 'UNAUTHORIZED', undef, undef, 'deleted user -> 401');

$s->assert_no_crash;
done_testing;
