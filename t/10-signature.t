#!/usr/bin/perl
# x-signature on any location (SPEC section 2): fleet_signature in front of a
# proxy_pass, with the SPEC test vector.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use FleetStack;

my $BODY = '{"chip_id":"24AB3C91","mac_address":"24:6F:28:AB:3C:91","firmware_version":"car_wash_v1.00"}';
my $SIG  = '19604ab700d08658c2b44aa88efef97e4204bad6df3081ac71fa2362febb5383';

my $s = FleetStack->new(device_secret => 'modernchabackdoor');
is $s->sign($BODY), $SIG, 'harness computes the SPEC test vector';

sub failures {
    my $m = $s->ua->get($s->url('/metrics'))->res->body // '';
    my $n = 0;
    $n += $1 while $m =~ /^fleet_signature_failures_total(?:\{[^}]*\})? (\d+)/mg;
    return $n;
}
my $fail0 = failures();

sub post { my ($body, %h) = @_; $s->signed_post('/signed-proxy/x', $body, %h) }

# ---- good signatures
my $res = post($BODY, 'x-signature' => $SIG)->res;
is $res->code, 200, 'SPEC test vector -> 200';
is $res->body, "proxied POST /upstream-echo/x\n", 'request reached the upstream';

$res = post($BODY, 'x-signature' => uc $SIG)->res;
is $res->code, 200, 'uppercase hex accepted';

$res = post($BODY, 'X-Signature' => $SIG, 'x-signature' => undef)->res;
is $res->code, 200, 'header name is case-insensitive';

# ---- bad signatures: 401 INVALID_SIGNATURE, never reaching the upstream
my $flipped = $SIG;
substr($flipped, 10, 1) = substr($flipped, 10, 1) eq 'a' ? 'b' : 'a';
my %bad = (
    'missing header'      => undef,
    'one char flipped'    => $flipped,
    'too short'           => substr($SIG, 0, 63),
    'too long'            => $SIG . '0',
    'empty'               => '',
    'not hex'             => ('z' x 64),
    'signature of another secret' => FleetStack::sha256_hex($BODY . 'other'),
);
my $nbad = 0;
for my $case (sort keys %bad) {
    my $tx = post($BODY, 'x-signature' => $bad{$case});
    $s->check_error($tx, 401, 'INVALID_SIGNATURE', '/signed-proxy/x', undef, "$case -> 401 INVALID_SIGNATURE");
    unlike $tx->res->body, qr/proxied/, "$case: upstream not reached";
    $nbad++;
}

(my $changed = $BODY) =~ s/24AB3C91/24AB3C92/;
$s->check_error(post($changed, 'x-signature' => $SIG), 401, 'INVALID_SIGNATURE', '/signed-proxy/x',
    undef, 'body changed by one byte -> 401');
$s->check_error(post($BODY . ' ', 'x-signature' => $SIG), 401, 'INVALID_SIGNATURE', '/signed-proxy/x',
    undef, 'one byte appended -> 401');
$nbad += 2;

# path in the envelope has no query string
$s->check_error($s->signed_post('/signed-proxy/x?y=1', $BODY, 'x-signature' => $flipped), 401,
    'INVALID_SIGNATURE', '/signed-proxy/x', undef, 'envelope path excludes the query');
$nbad++;

# ---- bodiless requests sign the request target
my $tx = $s->signed_get('/signed-proxy/a?b=1');
is $tx->res->code, 200, 'GET signed over the request target -> 200';
is $tx->res->body, "proxied GET /upstream-echo/a?b=1\n", 'GET reached the upstream with its query';

$tx = $s->ua->get($s->url('/signed-proxy/a?b=1') => { 'x-signature' => $s->sign('/signed-proxy/a') });
$s->check_error($tx, 401, 'INVALID_SIGNATURE', '/signed-proxy/a', undef, 'GET signed over the path only -> 401');
$tx = $s->ua->get($s->url('/signed-proxy/a?b=1'));
$s->check_error($tx, 401, 'INVALID_SIGNATURE', '/signed-proxy/a', undef, 'GET without signature -> 401');
$nbad += 2;

# a body signature is not valid for the target and vice versa
$tx = $s->ua->get($s->url('/signed-proxy/a?b=1') => { 'x-signature' => $SIG });
$s->check_error($tx, 401, 'INVALID_SIGNATURE', '/signed-proxy/a', undef, 'GET with an unrelated signature -> 401');
$nbad++;

# ---- counted
my $fail1 = failures();
cmp_ok $fail1, '>=', $fail0 + $nbad, "fleet_signature_failures_total grew by at least $nbad ($fail0 -> $fail1)";

$s->assert_no_crash;
done_testing;
