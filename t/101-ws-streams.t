#!/usr/bin/perl
# Browser streams over WebSocket (SPEC 7, seeds 000 and 002): rights before
# the 101, seed shapes, end-to-end from a device's MQTT message to every
# entitled subscriber and nobody else, ownership changes taking effect at
# once, client-sent readings, camera frames (seed 000) and their REST
# routes, fan-out across both workers, and a slow reader cut off while a
# fast one on the same room gets everything.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time);
use Mojo::IOLoop;
use Mojo::JSON qw(decode_json encode_json);
use FleetStack;
use FleetMQTT qw(sign_msg publish wait_for);

my $port2 = FleetStack::free_port();
my $s = FleetStack->new(workers => 2,
    # a second listener with reuseport spreads connections over both workers
    extra_http => "fleet_ws_max_queue 256k;\n"
                . "server { listen 127.0.0.1:$port2 reuseport; location /ws/ { fleet_api; } }");

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

sub device_for {
    my ($chip, $token, $name) = @_;
    my $j = decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}))->res->body);
    my ($id, $pin) = @{ $j->{data} }{qw(device_id pin)};
    req(POST => '/api/v1/devices/claim', $token, { pin => $pin, name => $name })->res->code == 200
        or die "claim $chip failed";
    return $id;
}

# ---- WebSocket clients on Mojo's loop: each collects decoded messages
sub ws_open {
    my ($path, $token, %o) = @_;
    my $c = { msgs => [], path => $path };
    my $url = ($o{port} ? "http://127.0.0.1:$o{port}$path" : $s->url($path));
    $url =~ s/^http/ws/;
    my %h = $token ? (Authorization => "Bearer $token") : ();
    my $ua = $c->{ua} = Mojo::UserAgent->new(inactivity_timeout => 0, connect_timeout => 5);
    $ua->websocket($url => \%h => sub {
        my (undef, $tx) = @_;
        $c->{code} = $tx->res->code;
        $c->{res_body} = $tx->res->body;
        if (!$tx->is_websocket) { $c->{done} = 1; return }
        $c->{tx} = $tx;
        $tx->max_websocket_size(16 * 1024 * 1024);
        $tx->on(message => sub { push @{ $c->{msgs} }, decode_json($_[1]) });
        $tx->on(finish => sub { $c->{closed} = $_[1]; $c->{done} = 1 });
        $c->{open} = 1;
    });
    wait_loop(10, sub { $c->{open} || $c->{done} });
    return $c;
}

sub wait_loop {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    until ($cond->()) {
        return 0 if time > $deadline;
        my $t = Mojo::IOLoop->timer(0.05 => sub { });
        Mojo::IOLoop->one_tick;
        Mojo::IOLoop->remove($t);
    }
    return 1;
}

sub of_type { my ($c, $type) = @_; [ grep { ref $_ eq 'HASH' && ($_->{type} // '') eq $type } @{ $c->{msgs} } ] }
sub ws_send { my ($c, $data) = @_; $c->{tx}->send(ref $data ? encode_json($data) : $data) }
sub refused {
    my ($c, $status, $code, $name) = @_;
    ok !$c->{open} && ($c->{code} // 0) == $status
        && (eval { decode_json($c->{res_body})->{errorCode} } // '') eq $code, $name
        or diag "got " . ($c->{code} // 'none') . ' ' . ($c->{res_body} // '');
}

my $A = device_for('WSA0001', $alice, 'Hydroponic System 1');
my $B = device_for('WSB0002', $bob, 'Dryer');
my $tx = req(POST => "/api/v1/devices/$A/sensors", $alice, { type => 'temperature', unit => 'celsius', name => 'Water' });
is $tx->res->code, 201, 'alice adds a temperature sensor' or diag $tx->res->body;
my $sid = body($tx)->{data}{id} // body($tx)->{data}{sensor_id};
$tx = req(POST => "/api/v1/devices/$B/sensors", $bob, { type => 'humidity', unit => '%' });
my $bsid = body($tx)->{data}{id} // body($tx)->{data}{sensor_id};
ok $sid && $bsid, "sensor ids $sid, $bsid";

# ---- rights before the 101
refused(ws_open("/ws/device/$A/", $bob), 404, 'DEVICE_NOT_FOUND', "bob: alice's device stream does not exist");
refused(ws_open("/ws/sensor/$sid/", $bob), 404, 'SENSOR_NOT_FOUND', "bob: alice's sensor stream does not exist");
refused(ws_open('/ws/sensor/abc/', $alice), 404, 'SENSOR_NOT_FOUND', 'a sensor id that is not a number');
refused(ws_open('/ws/sensor-data/', undef), 401, 'UNAUTHORIZED', 'no token: 401');
refused(ws_open('/ws/devices/all', $alice), 403, 'FORBIDDEN', 'camera overview is for admins');
refused(ws_open('/ws/device?esp_hmac=nonsense', $admin), 400, 'VALIDATION_ERROR', 'esp_hmac must be a MAC');
refused(ws_open('/ws/device', $admin), 400, 'VALIDATION_ERROR', 'esp_hmac is required');
my $ghost = $s->make_jwt({ sub => '999999', role => 'user', exp => time + 600 });
refused(ws_open('/ws/sensor-data/', $ghost), 401, 'UNAUTHORIZED', 'a token for an unknown user');

# ---- subscribers
my %c = (
    alice_all    => ws_open('/ws/sensor-data/', $alice),
    bob_all      => ws_open('/ws/sensor-data/', $bob),
    admin_all    => ws_open('/ws/sensor-data/', $admin),
    alice_dev    => ws_open("/ws/device/$A/", $alice),
    alice_sensor => ws_open("/ws/sensor/$sid/", $alice),
    bob_dev      => ws_open("/ws/device/$B/", $bob),
);
ok $c{$_}{open}, "$_ open" for sort keys %c;

# ---- a device's reading over MQTT reaches exactly the entitled subscribers
my $T0 = 1_757_604_600_000;     # 2025-09-11T15:30:00Z
publish($s, "server/$A/sensor", sign_msg($s->device_secret,
    sprintf '{"sensor_id":%d,"value":25.5,"timestamp":%d}', $sid, $T0));
ok wait_loop(10, sub { @{ of_type($c{$_}, 'sensor_data_update') } >= 1 } ), "$_ got the reading"
    for qw(alice_all admin_all alice_dev alice_sensor);
my $u = of_type($c{alice_dev}, 'sensor_data_update')->[0];
is_deeply $u, { type => 'sensor_data_update', sensor_id => $sid, sensor_type => 'temperature',
    device_id => $A, device_name => 'Hydroponic System 1', value => 25.5, unit => 'celsius',
    timestamp => '2025-09-11T15:30:00.000Z' }, "seed 002's sensor_data_update, enriched";

# bob's reading after alice's: bob_all's first update is his own, so alice's never reached him
publish($s, "server/$B/sensor", sign_msg($s->device_secret,
    sprintf '{"sensor_id":%d,"value":40,"timestamp":%d}', $bsid, $T0 + 1000));
ok wait_loop(10, sub { @{ of_type($c{bob_all}, 'sensor_data_update') } >= 1 }), 'bob gets his reading';
is_deeply [ map { $_->{device_id} } @{ of_type($c{bob_all}, 'sensor_data_update') } ], [$B],
    "... and never alice's";
ok wait_loop(10, sub { @{ of_type($c{admin_all}, 'sensor_data_update') } >= 2 }), 'admin gets both';
is scalar @{ of_type($c{alice_dev}, 'sensor_data_update') }, 1, "alice's device stream: only its own device";

# ---- device_status (seed 002)
publish($s, "server/$A/status", sign_msg($s->device_secret, '{"status":"OFFLINE"}'));
ok wait_loop(10, sub { @{ of_type($c{alice_dev}, 'device_status') } >= 1 }), 'device_status on the device stream';
my $st = of_type($c{alice_dev}, 'device_status')->[0];
is_deeply [ @$st{qw(device_id device_name status)} ], [ $A, 'Hydroponic System 1', 'inactive' ],
    "seed 002's device_status: inactive";
like $st->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/, '... with a timestamp';
ok !@{ of_type($c{bob_dev}, 'device_status') }, "bob's device stream hears nothing of alice's device";

# ---- readings sent by a browser (seed 002 incoming message)
ws_send($c{alice_sensor}, { type => 'sensor_data', sensor_id => $sid, value => 30.25,
                            timestamp => '2025-09-11T15:31:00Z' });
ok wait_loop(10, sub { grep { $_->{value} == 30.25 } @{ of_type($c{alice_all}, 'sensor_data_update') } }),
    'a reading sent on a stream is stored and fanned out';
is $s->psql("SELECT count(*) FROM sensor_readings WHERE sensor_id = $sid AND value = 30.25") + 0, 1, '... one row';

my @bad = (
    [ '{"type":"sensor_data","sensor_id":987654,"value":1}', 'SENSOR_NOT_FOUND', qr/sensor 987654 does not exist/ ],
    [ qq({"type":"sensor_data","sensor_id":$sid}), 'VALIDATION_ERROR', qr/value/ ],
    [ qq({"type":"sensor_data","sensor_id":$sid,"value":"hot"}), 'VALIDATION_ERROR', qr/value/ ],
    [ qq({"type":"sensor_data","sensor_id":$sid,"value":1,"timestamp":"yesterday"}), 'VALIDATION_ERROR', qr/timestamp/ ],
    [ '{"type":"subscribe"}', 'UNKNOWN_TYPE', qr/sensor_data/ ],
    [ '[1,2]', 'INVALID_JSON', qr/object/ ],
    [ 'not json', 'INVALID_JSON', qr/./ ],
);
for my $b (@bad) {
    my $n = @{ of_type($c{alice_dev}, 'error') };
    ws_send($c{alice_dev}, $b->[0]);
    ok wait_loop(10, sub { @{ of_type($c{alice_dev}, 'error') } > $n }), "error answer for $b->[0]";
    my $e = of_type($c{alice_dev}, 'error')->[-1];
    is $e->{code}, $b->[1], "... code $b->[1]";
    like $e->{message}, $b->[2], "... message: $e->{message}";
}
my $n = @{ of_type($c{bob_dev}, 'error') };
ws_send($c{bob_dev}, { type => 'sensor_data', sensor_id => $sid, value => 1 });
ok wait_loop(10, sub { @{ of_type($c{bob_dev}, 'error') } > $n }), "bob writing to alice's sensor";
is of_type($c{bob_dev}, 'error')->[-1]{code}, 'SENSOR_NOT_FOUND', '... is refused: SENSOR_NOT_FOUND';
ok !$c{alice_dev}{done}, 'the socket stays open after bad messages';
ws_send($c{alice_dev}, { type => 'sensor_data', sensor_id => $sid, value => 31 });
ok wait_loop(10, sub { grep { $_->{value} == 31 } @{ of_type($c{alice_dev}, 'sensor_data_update') } }),
    '... and still works';
refused(ws_open('/ws/devices/all', $bob), 403, 'FORBIDDEN', 'still refused after all that');

# ---- the device changes hands: streams follow at once
is req(PATCH => "/api/v1/devices/$A", $admin, { owner_id => "$b_id" })->res->code, 200, 'admin gives the device to bob';
my $na = @{ of_type($c{alice_all}, 'sensor_data_update') };
my $nb = @{ of_type($c{bob_all}, 'sensor_data_update') };
publish($s, "server/$A/sensor", sign_msg($s->device_secret,
    sprintf '{"sensor_id":%d,"value":26,"timestamp":%d}', $sid, $T0 + 5000));
ok wait_loop(10, sub { @{ of_type($c{bob_all}, 'sensor_data_update') } > $nb }), 'the new owner hears it';
ok wait_loop(10, sub { @{ of_type($c{admin_all}, 'sensor_data_update') } >= 5 }), 'admin too';
is scalar @{ of_type($c{alice_all}, 'sensor_data_update') }, $na, 'the former owner does not';
is scalar @{ of_type($c{alice_dev}, 'sensor_data_update') }, 3, "... not even on the device's own stream";

# ---- cameras (seed 000)
my $cam_all = ws_open('/ws/devices/all', $admin);
ok wait_loop(10, sub { @{ $cam_all->{msgs} } >= 1 }), 'camera overview: the latest frames at once';
is_deeply $cam_all->{msgs}[0], [], '... none yet';
my $mac = 'AA:BB:CC:00:22:33';
my $key = $s->camera_api_key;
publish($s, 'server/AABBCC002233/image', qq({"X-API-KEY":"$key","X-MAC-ADDRESS":"$mac","image":"/9j/AAAA"}));
ok wait_loop(10, sub { @{ $cam_all->{msgs} } >= 2 }), 'a new frame: the overview again';
my $frames = $cam_all->{msgs}[-1];
is ref $frames, 'ARRAY', '... an array';
is_deeply [ map { [ $_->{esp_hmac}, $_->{image_data} ] } @$frames ], [ [ $mac, 'data:image/jpeg;base64,/9j/AAAA' ] ],
    "... of seed 000's frame objects";
like $frames->[0]{timestamp}, qr/^\d{13}\z/, '... timestamp in ms';

my $cam = ws_open("/ws/device?esp_hmac=$mac", $admin);
ok wait_loop(10, sub { @{ $cam->{msgs} } >= 1 }), 'one camera: its latest frame at once';
is_deeply [ @{ $cam->{msgs}[0] }{qw(esp_hmac image_data)} ], [ $mac, 'data:image/jpeg;base64,/9j/AAAA' ], '... seed shape';
publish($s, 'server/AABBCC002233/image', qq({"X-API-KEY":"$key","X-MAC-ADDRESS":"$mac","image":"/9j/BBBB"}));
ok wait_loop(10, sub { @{ $cam->{msgs} } >= 2 }), '... and each new one';
is $cam->{msgs}[-1]{image_data}, 'data:image/jpeg;base64,/9j/BBBB', '... the new image';
refused(ws_open('/ws/device?esp_hmac=aa-bb-cc-00-22-33', $alice), 404, 'DEVICE_NOT_FOUND',
    "a user cannot watch a camera that is not theirs");

my $l = body(req(GET => '/v1/devices', $admin));
is_deeply [ @$l{qw(status count)}, map { $_->{esp_hmac} } @{ $l->{devices} } ], [ 'success', 1, $mac ],
    'GET /v1/devices: seed 000 list';
my $one = body(req(GET => '/v1/devices/aabbcc-002233', $admin));
$one = body(req(GET => "/v1/devices/$mac", $admin)) unless $one->{esp_hmac};
is_deeply [ @$one{qw(esp_hmac image_data)} ], [ $mac, 'data:image/jpeg;base64,/9j/BBBB' ], 'GET /v1/devices/{esp_hmac}';
$s->check_error(req(GET => '/v1/devices/AA:BB:CC:00:00:01', $admin), 404, 'DEVICE_NOT_FOUND');
$s->check_error(req(GET => '/v1/devices', $alice), 403, 'FORBIDDEN');
$s->check_error(req(GET => '/v1/devices', undef), 401, 'UNAUTHORIZED');

# ---- fan-out across both workers (reuseport spreads the connections)
my @many = map { ws_open('/ws/sensor-data/', $admin, port => $port2) } 1 .. 40;
is scalar(grep { $_->{open} } @many), 40, '40 more subscribers';
my $metrics = $s->ua->get($s->url('/metrics'))->result->body;
my @per_worker = $metrics =~ /^fleet_websockets\{worker="\d+"\} (\d+)/mg;
is scalar(grep { $_ > 0 } @per_worker), 2, 'both workers hold WebSockets' or diag $metrics;
$s->psql(q{SELECT fleet_notify('sensor_data_update', jsonb_build_object('sensor_id', 1, 'device_id', 'x', 'value', 42))});
ok wait_loop(10, sub { !grep { !grep { $_->{value} == 42 } @{ of_type($_, 'sensor_data_update') } } @many }),
    'one event reaches all 40, on both workers';

$_->{tx}->finish for @many;
wait_loop(10, sub { !grep { !$_->{done} } @many });

# ---- a slow reader is cut off; a fast one on the same room gets everything
my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port, Proto => 'tcp') or die $!;
print $slow "GET /ws/sensor-data/?access_token=$admin HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
    . "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
my $head = '';
wait_for(5, sub { sysread($slow, $head, 4096, length $head); $head =~ /\r\n\r\n/ });
like $head, qr{^HTTP/1.1 101}, 'a slow reader connects (and then reads nothing)';
my $fast = ws_open('/ws/sensor-data/', $admin);
my $pad = 'p' x 3000;
my $before = () = $metrics =~ /^fleet_ws_slow_closed_total\{worker="\d+"\} [1-9]/mg;
# 3000 events of ~3 KB: far more than the socket buffers and the 256k
# queue; published from a child so this process keeps reading meanwhile
my $pub = fork // die "fork: $!";
if ($pub == 0) {
    for my $batch (0 .. 29) {
        $s->psql("SELECT fleet_notify('sensor_data_update', jsonb_build_object('sensor_id', 2, 'device_id', 'x', "
            . "'device_name', '$pad', 'value', g)) FROM generate_series(" . ($batch * 100 + 1) . ", "
            . ($batch * 100 + 100) . ") g");
    }
    POSIX::_exit(0);
}
ok wait_loop(30, sub { @{ of_type($fast, 'sensor_data_update') } >= 3000 }), 'the fast reader gets all 3000'
    or diag scalar @{ of_type($fast, 'sensor_data_update') };
waitpid $pub, 0;
is_deeply [ map { $_->{value} } @{ of_type($fast, 'sensor_data_update') }[0 .. 2999] ], [ 1 .. 3000 ], '... in order';
$metrics = $s->ua->get($s->url('/metrics'))->result->body;
my @slow_closed = $metrics =~ /^fleet_ws_slow_closed_total\{worker="\d+"\} (\d+)/mg;
my $total = 0; $total += $_ for @slow_closed;
ok $total >= 1, 'the slow reader was cut off (fleet_ws_slow_closed_total)' or diag $metrics;
my ($got, $r, $closed) = (0);
my $sel = IO::Select->new($slow);
my $deadline = time + 30;
while (!$closed && time < $deadline) {
    next unless $sel->can_read(1);
    $r = sysread($slow, my $buf, 1 << 20);
    $closed = 1 if !$r;     # EOF (or a reset)
    $got += $r // 0;
}
ok $closed, "... its connection is closed once what was in flight is read"
    or diag "read $got bytes";

$s->assert_no_crash;
done_testing;
