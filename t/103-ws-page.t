#!/usr/bin/perl
# The built-in WebSocket test interface (seed 002 "Testing": /websocket-test/,
# www/websocket-test/) driven by headless Chromium: sign in, open
# /ws/sensor-data/, send a reading through the form and see it come back as a
# sensor_data_update, see SENSOR_NOT_FOUND shown for an unknown sensor, switch
# to /ws/sensor/{id}/, a mocked stream (log capped at 200, camera frame shown
# as an image), sign out; no console errors, no foreign requests, the token
# never in a URL or in storage.  t/node/page-check.js does the driving.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json);
use Digest::SHA ();
use FleetStack;

my $chromium = $ENV{CHROMIUM} // '/usr/bin/chromium';
my $node_path = "$FleetStack::ROOT/scripts/node/node_modules";
my $script = "$FindBin::Bin/node/page-check.js";

FleetStack::skip_or_fail("no Chromium at $chromium (apt-get install chromium)") unless -x $chromium;
my $node = (grep { -x "$_/node" } split /:/, $ENV{PATH} // '')[0];
FleetStack::skip_or_fail('node is not installed') unless $node;
$node .= '/node';
FleetStack::skip_or_fail("playwright-core is missing from $node_path (npm ci in scripts/node)")
    unless -f "$node_path/playwright-core/package.json";

my $s = FleetStack->new(workers => 2);

# a user with a claimed device and one sensor
my ($email, $pw) = ('page@fleet.local', 'page-pass-1234');
my $uid = $s->create_user($email, $pw, 'user');
my $token = $s->login($email, $pw) or die "login failed\n";
my $reg = decode_json($s->signed_post('/api/v1/devices/need-register',
    '{"chip_id":"PAGE0001","mac_address":"24:6F:28:AB:3C:92","firmware_version":"v1"}')->res->body);
my ($dev, $pin) = @{ $reg->{data} }{qw(device_id pin)};
ok $dev && $pin, "device $dev registered";
my $tx = $s->ua->post($s->url('/api/v1/devices/claim') => { Authorization => "Bearer $token" }
    => json => { pin => $pin, name => 'Page bay' });
is $tx->res->code, 200, 'claimed';
$tx = $s->ua->post($s->url("/api/v1/devices/$dev/sensors") => { Authorization => "Bearer $token" }
    => json => { type => 'temperature', unit => 'celsius', name => 'Water' });
is $tx->res->code, 201, 'sensor created';
my $sid = decode_json($tx->res->body)->{data}{sensor_id};
like $sid, qr/^\d+$/, "sensor $sid";

# the page, as nginx serves it: one file, style and script inline (the test
# nginx config has no MIME types for .css or .js), nothing from elsewhere
my $res = $s->ua->get($s->url('/websocket-test/'))->res;
is $res->code, 200, 'GET /websocket-test/';
like $res->headers->content_type // '', qr{^text/html}, 'as text/html';
my $html = $res->body;
unlike $html, qr{<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?!data:)[^"'\s>]}i,
    'the page loads no other file';
# the CSP allows the inline style and script by hash: they must match
(my $code = $html) =~ s/<!--.*?-->//gs;
for my $kind (qw(script style)) {
    my ($inline) = $code =~ m{<$kind>(.*?)</$kind>}s;
    my $want = "'sha256-" . Digest::SHA::sha256_base64($inline // '') . "='";
    my ($got) = $code =~ m{\b$kind-src ('[^']*')};
    is $got, $want, "the CSP $kind-src hash matches the inline $kind"
        or diag "put $kind-src $want in the CSP of www/websocket-test/index.html";
}

# the browser run (bounded: page-check.js stops itself, timeout(1) backs it up)
local $ENV{NODE_PATH} = $node_path;
local $ENV{CHROMIUM} = $chromium;
my @cmd = ($node, $script, $s->url(''), $email, $pw, $sid);
unshift @cmd, 'timeout', '-k', '5', '55' if grep { -x "$_/timeout" } split /:/, $ENV{PATH};
open my $fh, '-|', @cmd or die "cannot run node: $!";
my $out = do { local $/; <$fh> // '' };
close $fh;
my $status = $? >> 8;
my ($line) = grep { /^\{/ } reverse split /\n/, $out;
my $r = eval { decode_json($line // '') };
ok $r, 'page-check printed its JSON result' or diag "exit $status, output:\n$out";
$r //= {};
diag "page-check: $r->{error} (at step $r->{step})" if $r->{error};
is $status, 0, 'page-check exited 0';
ok $r->{ok}, 'the page works end to end';
is $r->{update}{sensor_id}, $sid + 0, 'the sensor_data_update the page showed is for our sensor';
is $r->{update}{device_id}, $dev, '... on our device';
is $r->{update}{value}, 21.75, '... with the value sent through the form';
is $r->{error_message}{code}, 'SENSOR_NOT_FOUND', 'an unknown sensor is shown as SENSOR_NOT_FOUND';
is_deeply $r->{console_errors}, [], 'no console errors';
is_deeply $r->{page_errors}, [], 'no uncaught page errors';
is_deeply $r->{foreign_requests}, [], 'no requests to other origins';
ok !grep({ /access_token|eyJ/ } @{ $r->{ws_urls} // [] }), 'the token is never in a WebSocket URL'
    or diag explain $r->{ws_urls};
note "page-check took $r->{ms} ms" if $r->{ms};
for my $k (sort keys %{ $r->{checks} // {} }) {
    my $v = $r->{checks}{$k};
    next if ref $v ne 'HASH' && ref $v ne 'ARRAY' && $v;     # passed (JSON true)
    diag "check $k: " . (ref $v ? Mojo::JSON::encode_json($v) : $v);
}

# both readings were stored
is $s->count_rows('sensor_readings', "sensor_id = $sid"), 2, 'two readings stored';

# the access log (request lines) never carries the token
my $access = do { local $/; open my $fh, '<', $s->dir . '/nginx/access.log' or die $!; <$fh> };
unlike $access, qr/eyJ[\w-]+\.[\w-]+\./, 'no token in the access log';

$s->assert_no_crash;
done_testing;
