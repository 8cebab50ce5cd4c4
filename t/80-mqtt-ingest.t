#!/usr/bin/perl
# MQTT ingest (issue 3): device messages on server/{id}/{kind} are verified
# (SPEC section 2) and stored by the bridge through one SQL function call
# each; bad ones leave no trace and are counted; camera frames are checked
# by X-API-KEY; the last will and silence make a device offline, with one
# device_status event per change.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use MIME::Base64 qw(encode_base64);
use Digest::SHA qw(sha256_hex);
use FleetStack;
use FleetMQTT qw(sign_msg sign_pretty publish bridge_ping wait_for notifies);

# devices silent for 3 s go offline (the bridge gets it from FleetStack)
BEGIN { $ENV{FLEET_OFFLINE_AFTER_S} = 3 }

my $s = FleetStack->new(workers => 1);
my $secret = $s->device_secret;
my $dbh = $s->dbh;
my $T0 = int(time) * 1000;      # epoch ms for device timestamps

sub register {
    my ($chip, $mac) = @_;
    my $tx = $s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"$mac","firmware_version":"v1"}));
    my $j = FleetStack::json_of($tx);
    my $id = ref $j eq 'HASH' && ref $j->{data} eq 'HASH' ? $j->{data}{device_id} : undef;
    BAIL_OUT('need-register gave no device_id: ' . ($tx->res->body // '')) unless $id;
    return $id;
}

sub pub_signed {
    my ($id, $kind, $json) = @_;
    publish($s, "server/$id/$kind", sign_msg($secret, $json));
}

sub pong { bridge_ping($s->bridge_socket) // {} }

sub device { $dbh->selectrow_hashref('SELECT * FROM devices WHERE id = ?', undef, $_[0]) }

# JSON text from DBD::Pg (a character string when it decoded UTF-8)
sub jdecode {
    my $t = shift // return undef;
    utf8::encode($t) if utf8::is_utf8($t);
    return eval { Mojo::JSON::decode_json($t) };
}

sub scalar_sql { my ($sql, @bind) = @_; ($dbh->selectrow_array($sql, undef, @bind))[0] }

# waits until counter $name reached $want; returns the last pong
sub wait_counter {
    my ($name, $want, $secs) = @_;
    my $p = {};
    wait_for($secs // 10, sub { $p = pong(); ($p->{$name} // -1) >= $want });
    return $p;
}

# device_status events for $id (online => $online) among @events
sub status_events {
    my ($events, $id, $online) = @_;
    return scalar grep {
        ($_->{type} // '') eq 'device_status' && ($_->{device_id} // '') eq $id
            && (!!$_->{online}) == (!!$online)
    } @$events;
}

# collects events until $cond(\@events) holds (bounded), then $settle s more
sub collect_events {
    my ($events, $cond, $secs, $settle) = @_;
    wait_for($secs, sub { push @$events, notifies($dbh); $cond->($events) });
    my $end = time + ($settle // 0.7);
    while (time < $end) { push @$events, notifies($dbh); sleep 0.05 }
    return $events;
}

my $p0 = pong();
ok exists $p0->{$_}, "pong has $_" for qw(mqtt_in mqtt_out stored dropped_bad_signature
    dropped_invalid dropped_rejected unhandled queue_len);
ok $p0->{mqtt} && $p0->{pg}, 'bridge connected to MQTT and PostgreSQL';

my $A = register('MQTT-A', '24:6F:28:00:00:0A');
my $B = register('MQTT-B', '24:6F:28:00:00:0B');
my $C = register('MQTT-C', '24:6F:28:00:00:0C');

$dbh->do('LISTEN fleet_events');

# ---- streaming: latest state, online, one event per change
$dbh->do('UPDATE devices SET online = false WHERE id = ?', undef, $A);
notifies($dbh);
pub_signed($A, 'streaming', sprintf '{"rssi":-67,"status":"IDLE","uptime":12345,"timestamp":%d}', $T0);
ok wait_for(10, sub { (device($A)->{rssi} // 0) == -67 }), 'streaming stored';
my $d = device($A);
ok $d->{online}, 'streaming: online = true';
is $d->{status}, 'IDLE', 'streaming: status';
is $d->{uptime}, 12345, 'streaming: uptime';
ok scalar_sql(q{SELECT last_seen > now() - interval '30 seconds' FROM devices WHERE id = ?}, $A),
    'streaming: last_seen is now';
my @ev;
collect_events(\@ev, sub { status_events($_[0], $A, 1) >= 1 }, 5, 0);
pub_signed($A, 'streaming', sprintf '{"rssi":-60,"status":"WASHING","uptime":12405,"timestamp":%d}', $T0 + 60000);
ok wait_for(10, sub { (device($A)->{rssi} // 0) == -60 }), 'second streaming stored';
collect_events(\@ev, sub { 0 }, 0, 0.7);
is status_events(\@ev, $A, 1), 1, 'offline -> online: exactly one device_status event, none for the repeat';
is status_events(\@ev, $A, 0), 0, 'no offline event meanwhile';

# ---- bad signatures leave no trace and are counted
my $p = pong();
my ($bad0, $inv0) = ($p->{dropped_bad_signature}, $p->{dropped_invalid});
my $before = device($A);
my $good = sign_msg($secret, '{"rssi":-11,"status":"HACKED","uptime":1}');
(my $tampered = $good) =~ s/-11/-12/;
my $body = '{"rssi":-11,"status":"HACKED","uptime":1}';
my $sig = sha256_hex($body . $secret);
my %bad = (
    'wrong hash'        => sign_msg('not-the-secret', $body),
    'missing sha256'    => $body,
    'sha256 not last'   => qq({"rssi":-11,"sha256":"$sig","status":"HACKED","uptime":1}),
    'tampered value'    => $tampered,
    'upper-case member' => qq({"rssi":-11,"status":"HACKED","uptime":1,"SHA256":"$sig"}),
);
publish($s, "server/$A/streaming", $bad{$_}) for sort keys %bad;
publish($s, "server/$A/streaming", 'not json at all');
publish($s, "server/$A/streaming", '[' . join(',', ('1') x 10) . ']');
$p = wait_counter('dropped_bad_signature', $bad0 + keys %bad);
is $p->{dropped_bad_signature} - $bad0, scalar keys %bad, 'each bad signature counted';
$p = wait_counter('dropped_invalid', $inv0 + 2);
is $p->{dropped_invalid} - $inv0, 2, 'non-JSON and non-object messages counted as invalid';
my $after = device($A);
is_deeply [@$after{qw(rssi status uptime last_seen)}], [@$before{qw(rssi status uptime last_seen)}],
    'bad messages changed nothing';
# an oversized message (64 KiB limit) is dropped without a look inside
publish($s, "server/$A/streaming",
    sign_msg($secret, '{"rssi":-1,"status":"' . ('x' x 70000) . '"}'));
$p = wait_counter('dropped_invalid', $inv0 + 3);
is $p->{dropped_invalid} - $inv0, 3, 'a message over 64 KiB is dropped as invalid';
is device($A)->{rssi}, -60, '... and not stored';
like $s->bridge_log, qr/warn mqtt message on server\/\Q$A\E\/streaming dropped/, 'dropped messages are logged';
my $warns = () = $s->bridge_log =~ /warn mqtt message on server\/\Q$A\E\/streaming dropped/g;
is $warns, 1, '... once a minute per topic';

# ---- messages that must verify: numbers as written, unicode, nested,
# pretty-printed signed over the compact form
pub_signed($A, 'sensor', sprintf '{"type":"temperature","unit":"C","value":23.7,"timestamp":%d}', $T0);
pub_signed($A, 'sensor', sprintf '{"type":"temperature","unit":"C","value":1.0,"timestamp":%d}', $T0 + 1000);
my $temp_id;
ok wait_for(10, sub {
    $temp_id = scalar_sql(q{SELECT id FROM sensors WHERE device_id = ? AND type = 'temperature'}, $A);
    $temp_id && scalar_sql('SELECT count(*) FROM sensor_readings WHERE sensor_id = ?', $temp_id) == 2;
}), 'float readings 23.7 and 1.0 verified and stored (sensor auto-created from type and unit)';
is_deeply $dbh->selectcol_arrayref('SELECT value FROM sensor_readings WHERE sensor_id = ? ORDER BY ts',
    undef, $temp_id), [23.7, 1], '... values 23.7 and 1';
is scalar_sql('SELECT unit FROM sensors WHERE id = ?', $temp_id), 'C', '... unit C';

# raw UTF-8, \u escapes, escaped quotes, nested objects and arrays
my $uni = '{"event":"note","data":{"text":"ล้างรถ ✓ café","esc":"\u00e9\u0e01 \"q\" \\\\ /","n":-42,"nested":{"a":[1,-2.5e3,{"b":null,"c":[true,false]}]}},"timestamp":' . ($T0 + 1) . '}';
pub_signed($A, 'event', $uni);
my $pretty_compact = '{"event":"pretty","data":{"msg":"two  spaces","list":[1,2]},"timestamp":' . ($T0 + 2) . '}';
my $pretty = qq({\n  "event": "pretty",\n  "data": {\n    "msg": "two  spaces",\n    "list": [ 1, 2 ]\n  },\n  "timestamp": ) . ($T0 + 2) . qq(\n}\n);
publish($s, "server/$A/event", sign_pretty($secret, $pretty, $pretty_compact));
ok wait_for(10, sub { scalar_sql(q{SELECT count(*) FROM device_events WHERE device_id = ? AND event IN ('note', 'pretty')}, $A) == 2 }),
    'unicode/nested and pretty-printed events verified and stored';
my $note = scalar_sql(q{SELECT data::text FROM device_events WHERE device_id = ? AND event = 'note'}, $A) // '';
my $notej = jdecode($note) // {};
is $notej->{text}, "\x{e25}\x{e49}\x{e32}\x{e07}\x{e23}\x{e16} \x{2713} caf\x{e9}", 'unicode text intact';
is $notej->{esc}, "\x{e9}\x{e01} \"q\" \\ /", 'escapes decoded';
is_deeply $notej->{nested}, { a => [1, -2500, { b => undef, c => [Mojo::JSON::true, Mojo::JSON::false] }] }, 'nested data intact';
is $notej->{n}, -42, 'negative integer';
is scalar_sql(q{SELECT data->>'msg' FROM device_events WHERE device_id = ? AND event = 'pretty'}, $A), 'two  spaces',
    'pretty message: spaces inside strings kept';

# ---- sensors: by id, batch, unknown id
$p = pong();
my $rej0 = $p->{dropped_rejected};
pub_signed($A, 'sensor', sprintf '{"sensor_id":%d,"value":5,"timestamp":%d}', $temp_id, $T0 + 2000);
pub_signed($A, 'sensor', sprintf '{"readings":[{"sensor_id":%d,"value":6.5,"timestamp":%d},'
    . '{"type":"humidity","unit":"%%","value":55,"timestamp":%d},'
    . '{"type":"humidity","unit":"%%","value":56,"timestamp":"%s"}]}',
    $temp_id, $T0 + 3000, $T0 + 3000, '2030-01-02T03:04:05.678Z');
pub_signed($A, 'sensor', sprintf '{"sensor_id":987654321,"value":1,"timestamp":%d}', $T0 + 4000);
ok wait_for(10, sub { scalar_sql('SELECT count(*) FROM sensor_readings WHERE sensor_id = ?', $temp_id) == 4 }),
    'reading by sensor_id and in a batch stored';
my $hum = scalar_sql(q{SELECT id FROM sensors WHERE device_id = ? AND type = 'humidity'}, $A);
ok $hum, 'batch: humidity sensor auto-created';
is_deeply $dbh->selectcol_arrayref('SELECT value FROM sensor_readings WHERE sensor_id = ? ORDER BY ts', undef, $hum // 0),
    [55, 56], 'batch: both humidity readings (epoch ms and ISO 8601 timestamps)';
$p = wait_counter('dropped_rejected', $rej0 + 1);
is $p->{dropped_rejected} - $rej0, 1, 'unknown sensor_id: rejected and counted';
is scalar_sql('SELECT count(*) FROM sensor_readings r JOIN sensors s ON s.id = r.sensor_id WHERE s.device_id = ?', $A), 6,
    '... and nothing stored for it';

# ---- events
pub_signed($B, 'event', '{"event":"charging_started","data":{"kw":7.4,"connector":2},"timestamp":"2025-01-02T03:04:05Z"}');
ok wait_for(10, sub { scalar_sql('SELECT count(*) FROM device_events WHERE device_id = ?', $B) == 1 }), 'event stored';
my $e = $dbh->selectrow_hashref('SELECT event, data::text AS data, ts = ? AS ts_ok FROM device_events WHERE device_id = ?',
    undef, '2025-01-02T03:04:05Z', $B);
is $e->{event}, 'charging_started', 'event name';
is_deeply jdecode($e->{data}), { kw => 7.4, connector => 2 }, 'event data';
ok $e->{ts_ok}, 'event timestamp';

# unknown device: rejected, counted, not an error
$rej0 = pong()->{dropped_rejected};
pub_signed('dev-nobody', 'event', '{"event":"x","data":{}}');
$p = wait_counter('dropped_rejected', $rej0 + 1);
is $p->{dropped_rejected} - $rej0, 1, 'message for an unknown device: rejected';

# ---- camera frames: X-API-KEY, not sha256
my $key = $s->camera_api_key;
my $jpeg = encode_base64(join('', map { chr(($_ * 7) % 256) } 1 .. 90000), '');
my $mac = 'AA:BB:CC:00:11:22';
publish($s, 'server/AABBCC001122/image', qq({"X-API-KEY":"$key","X-MAC-ADDRESS":"$mac","image":"$jpeg"}));
my $cam;
ok wait_for(10, sub { $cam = $dbh->selectrow_hashref('SELECT * FROM devices WHERE mac_address = ?', undef, $mac) }),
    'camera frame with the right key: camera device created';
is $cam->{kind}, 'camera', '... kind camera';
ok !defined $cam->{owner_id}, '... unclaimed (owner_id NULL)';
is scalar_sql('SELECT image FROM camera_frames WHERE mac = ?', $mac), $jpeg, 'camera_frames row holds the image';

$p = pong();
($bad0, $inv0) = ($p->{dropped_bad_signature}, $p->{dropped_invalid});
publish($s, 'server/AABBCC001133/image', qq({"X-API-KEY":"${key}x","X-MAC-ADDRESS":"AA:BB:CC:00:11:33","image":"$jpeg"}));
publish($s, 'server/AABBCC001144/image', qq({"X-MAC-ADDRESS":"AA:BB:CC:00:11:44","image":"$jpeg"}));
publish($s, 'server/AABBCC001155/image', qq({"X-API-KEY":"$key","image":"$jpeg"}));
my $huge = encode_base64('z' x (1600 * 1024), '');
publish($s, 'server/AABBCC001166/image', qq({"X-API-KEY":"$key","X-MAC-ADDRESS":"AA:BB:CC:00:11:66","image":"$huge"}));
$p = wait_counter('dropped_bad_signature', $bad0 + 2);
is $p->{dropped_bad_signature} - $bad0, 2, 'wrong or missing X-API-KEY: counted';
$p = wait_counter('dropped_invalid', $inv0 + 2);
is $p->{dropped_invalid} - $inv0, 2, 'no X-MAC-ADDRESS, or over 2 MiB: invalid';
is scalar_sql(q{SELECT count(*) FROM devices WHERE mac_address IN ('AA:BB:CC:00:11:33', 'AA:BB:CC:00:11:44',
    'AA:BB:CC:00:11:55', 'AA:BB:CC:00:11:66')}), 0, '... no camera created for them';
is scalar_sql('SELECT count(*) FROM camera_frames'), 1, '... and no frame stored';

# ---- kinds without a handler
$p = pong();
my $unh0 = $p->{unhandled};
my $seen0 = $p->{stored} + $p->{dropped_rejected} + $p->{dropped_invalid};
pub_signed($A, 'whatever', '{"x":1}');
$p = wait_counter('unhandled', $unh0 + 1);
is $p->{unhandled} - $unh0, 1, 'unknown kind: unhandled';
# ack: fleet_ingest_ack() may not exist yet (unhandled), or it handles it
pub_signed($A, 'ack', '{"command_id":"cmd-none","device_id":"' . $A . '","command":"PING","status":"SUCCESS"}');
ok wait_for(10, sub {
    my $q = pong();
    ($q->{unhandled} - $unh0) + ($q->{stored} + $q->{dropped_rejected} + $q->{dropped_invalid} - $seen0) == 2;
}), 'ack: handled or counted unhandled, once';

# ---- last will: offline, one event
pub_signed($B, 'streaming', '{"rssi":-50,"status":"IDLE","uptime":5}');
ok wait_for(10, sub { device($B)->{online} && (device($B)->{rssi} // 0) == -50 }), 'device B online';
@ev = ();
notifies($dbh);
pub_signed($B, 'status', '{"status":"OFFLINE"}');
ok wait_for(10, sub { !device($B)->{online} }), 'last will: online = false';
collect_events(\@ev, sub { status_events($_[0], $B, 0) >= 1 }, 5);
is status_events(\@ev, $B, 0), 1, 'last will: exactly one device_status (offline) event';
my $st0 = pong()->{stored};
pub_signed($B, 'status', '{"status":"OFFLINE"}');
wait_counter('stored', $st0 + 1);
collect_events(\@ev, sub { 0 }, 0, 0.5);
is status_events(\@ev, $B, 0), 1, 'a repeated last will: no second event';

# ---- silence: offline by itself (FLEET_OFFLINE_AFTER_S=3), then back
pub_signed($C, 'streaming', '{"rssi":-70,"status":"IDLE","uptime":9}');
ok wait_for(10, sub { (device($C)->{rssi} // 0) == -70 && device($C)->{online} }), 'device C online';
@ev = ();
notifies($dbh);
my $t = time;
ok wait_for(15, sub { !device($C)->{online} }), 'silent device goes offline by itself';
cmp_ok time - $t, '<', 12, '... within ~10 s';
collect_events(\@ev, sub { status_events($_[0], $C, 0) >= 1 }, 5);
is status_events(\@ev, $C, 0), 1, '... with exactly one device_status event';
like $s->bridge_log, qr/info \d+ devices? marked offline/, 'bridge logs the offline marking';
pub_signed($C, 'streaming', '{"rssi":-71,"status":"IDLE","uptime":19}');
ok wait_for(10, sub { device($C)->{online} }), 'streaming: online again';
collect_events(\@ev, sub { status_events($_[0], $C, 1) >= 1 }, 5);
is status_events(\@ev, $C, 1), 1, '... one device_status (online) event';
is status_events(\@ev, $C, 0), 1, '... and still the one offline event';

# ---- counters add up
$p = pong();
is $p->{queue_len}, 0, 'ingest queue empty';
is $p->{mqtt_in}, $p->{stored} + $p->{dropped_bad_signature} + $p->{dropped_invalid}
    + $p->{dropped_rejected} + $p->{unhandled}, 'every received message counted once';
$s->assert_no_crash;

done_testing;
