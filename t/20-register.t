#!/usr/bin/perl
# POST /api/v1/devices/need-register (SPEC section 4) and the error envelope
# for validation, JSON and routing errors (SPEC section 3).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json encode_json);
use FleetStack;

my $s = FleetStack->new;
my $PATH = '/api/v1/devices/need-register';

sub body_for {
    my ($chip) = @_;
    my $mac = join ':', '24', '6F', unpack('(A2)*', sprintf('%08X', hex($chip) & 0xffffffff));
    return qq({"chip_id":"$chip","mac_address":"$mac","firmware_version":"car_wash_v1.00"});
}
sub register { $s->signed_post($PATH, body_for($_[0])) }
sub devices  { $s->count_rows('devices') }

# checks the success shape; returns data
sub registered_ok {
    my ($tx, $name) = @_;
    my $res = $tx->res;
    my $j = eval { decode_json($res->body) };
    my $ok = is($res->code, 200, "$name -> 200")
        && like($res->headers->content_type // '', qr{^application/json}, "$name: JSON")
        && is(ref $j, 'HASH', "$name: object");
    $ok &&= ok($j->{success} && ref $j->{success}, "$name: success true")
        & is($j->{message}, 'Device registered successfully', "$name: message")
        & like($j->{data}{pin} // '', qr/^\d{4}\z/, "$name: pin is 4 digits")
        & like($res->body, qr/"pin"\s*:\s*"\d{4}"/, "$name: pin is a JSON string")
        & ok(defined $j->{data}{device_id} && !ref $j->{data}{device_id} && length $j->{data}{device_id},
             "$name: device_id present");
    diag $res->body unless $ok;
    return $ok ? $j->{data} : {};
}

# ---- happy path
my $d1 = registered_ok(register('24AB3C91'), 'first registration');
my $d2 = registered_ok(register('24AB3C91'), 'same chip again');
is $d2->{device_id}, $d1->{device_id}, 'same chip -> same device_id';
is devices(), 1, 'one device row';

my (%ids, %pins);
for my $i (1 .. 20) {
    my $d = registered_ok(register(sprintf '10%06X', $i), "chip $i");
    $ids{$d->{device_id} // "undef$i"}++;
    $pins{$d->{pin} // "undef$i"}++;
}
is scalar(keys %ids), 20, '20 chips -> 20 distinct device_ids';
ok !exists $ids{$d1->{device_id} // ''}, 'none equal to the first device';
is scalar(keys %pins), 20, '20 chips -> 20 distinct pins in the responses';
is devices(), 21, '21 device rows';

# every unexpired pin in the database is unique
my $pins = $s->dbh->selectcol_arrayref('SELECT pin FROM device_pins WHERE expires_at > now()');
is scalar(@$pins), 21, 'each device has one unexpired pin in the database';
my %seen;
my @dup = grep { $seen{$_}++ } @$pins;
ok !@dup, 'unexpired pins are distinct in the database' or diag "duplicates: @dup";
ok $pins{$_}, "response pin $_ is in the database" for grep { !/undef/ } sort keys %pins;

# ---- signatures: 401, nothing stored
my $n = devices();
my $b = body_for('DEADBEEF');
$s->check_error($s->signed_post($PATH, $b, 'x-signature' => undef), 401, 'INVALID_SIGNATURE', $PATH, undef,
    'missing signature -> 401');
$s->check_error($s->signed_post($PATH, $b, 'x-signature' => $s->sign($b . 'x')), 401, 'INVALID_SIGNATURE',
    $PATH, undef, 'wrong signature -> 401');
$s->check_error($s->signed_post($PATH, $b, 'x-signature' => $s->sign($PATH)), 401, 'INVALID_SIGNATURE',
    $PATH, undef, 'target signature on a request with a body -> 401');
is devices(), $n, 'no device stored for bad signatures';

# ---- validation
$s->check_error($s->signed_post($PATH, '{"mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}'),
    400, 'VALIDATION_ERROR', $PATH, 'chip_id is required', 'missing chip_id -> 400');
$s->check_error($s->signed_post($PATH, '{"chip_id":12345,"mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}'),
    400, 'VALIDATION_ERROR', $PATH, 'chip_id must be a string', 'numeric chip_id -> 400');
$s->check_error($s->signed_post($PATH, '[]'), 400, 'VALIDATION_ERROR', $PATH, 'body must be a JSON object',
    'array body -> 400');
# a bare string is valid JSON (RFC 8259) but not an object; either code is fine
$s->check_error($s->signed_post($PATH, '"str"'), 400, undef, $PATH, undef, 'string body -> 400');
$s->check_error($s->signed_post($PATH, '{bad json'), 400, 'INVALID_JSON', $PATH, undef, 'malformed JSON -> 400');

# an empty body is a request without a body: it signs the request target
my $tx = $s->ua->post($s->url($PATH) => { 'Content-Type' => 'application/json', 'x-signature' => $s->sign($PATH) } => '');
$s->check_error($tx, 400, undef, $PATH, undef, 'empty body -> 400');
is devices(), $n, 'nothing stored for invalid bodies';

# ---- routing
$s->check_error($s->ua->get($s->url('/api/v1/nope')), 404, 'NOT_FOUND', '/api/v1/nope', undef,
    'unknown route -> 404 NOT_FOUND');
$s->check_error($s->ua->get($s->url('/api/v1/nope?x=1')), 404, 'NOT_FOUND', '/api/v1/nope', undef,
    'unknown route with query -> path without the query');
$tx = $s->ua->get($s->url($PATH) => { 'x-signature' => $s->sign($PATH) });
$s->check_error($tx, 405, undef, $PATH, undef, 'GET need-register -> 405 envelope');

$s->assert_no_crash;
done_testing;
