#!/usr/bin/perl
# Request bodies at the edges (SPEC section 3): size limit with and without
# Content-Length, media type, hostile JSON.  Nothing is stored, nothing crashes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use FleetStack;

my $MAX = 65536;
my $s = FleetStack->new(max_body => $MAX);
my $PATH = '/api/v1/devices/need-register';
my $PORT = $s->http_port;
my @workers = $s->nginx_worker_pids;

sub devices { $s->count_rows('devices') }

# a valid registration body of exactly $len bytes
sub body_of_len {
    my ($len, $chip) = @_;
    my $head = qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1","pad":");
    my $tail = '"}';
    return $head . ('x' x ($len - length($head) - length($tail))) . $tail;
}

sub raw_post {
    my ($body, %o) = @_;
    my $ct = $o{content_type} // 'application/json';
    my $sig = $o{signature} // $s->sign($body);
    my $hdr = "POST $PATH HTTP/1.1\r\nHost: 127.0.0.1:$PORT\r\nConnection: close\r\n"
        . "Content-Type: $ct\r\nx-signature: $sig\r\n";
    if ($o{chunked}) {
        my @parts = ($hdr . "Transfer-Encoding: chunked\r\n\r\n");
        for (my $off = 0; $off < length $body; $off += 8192) {
            my $c = substr($body, $off, 8192);
            push @parts, sprintf("%x\r\n", length $c) . $c . "\r\n";
        }
        push @parts, "0\r\n\r\n";
        return $s->raw_http(\@parts);
    }
    return $s->raw_http($hdr . 'Content-Length: ' . length($body) . "\r\n\r\n" . $body);
}

my $n0 = devices();

# ---- size limit
my $big = body_of_len($MAX + 1000, 'B1000001');
my $r = raw_post($big);
$s->check_error($r->{res}, 413, 'PAYLOAD_TOO_LARGE', $PATH, undef, 'Content-Length over the limit -> 413');

$r = raw_post($big, chunked => 1);
$s->check_error($r->{res}, 413, 'PAYLOAD_TOO_LARGE', $PATH, undef, 'chunked body over the limit -> 413');

$r = raw_post(body_of_len($MAX + 1, 'B1000002'));
$s->check_error($r->{res}, 413, 'PAYLOAD_TOO_LARGE', $PATH, undef, 'one byte over the limit -> 413');
is devices(), $n0, 'nothing stored for oversize bodies';

# at the limit the body is fine (chunked too)
$r = raw_post(body_of_len($MAX, 'B1000003'));
is $r->{status}, 200, 'body of exactly max_body bytes -> 200' or diag substr($r->{raw}, 0, 400);
$r = raw_post(body_of_len($MAX, 'B1000004'), chunked => 1);
is $r->{status}, 200, 'chunked body of exactly max_body bytes -> 200' or diag substr($r->{raw}, 0, 400);
my $n1 = devices();
is $n1, $n0 + 2, 'the two bodies at the limit were stored';

# ---- media type
my $ok_body = '{"chip_id":"C0FFEE01","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}';
$r = raw_post($ok_body, content_type => 'text/plain');
$s->check_error($r->{res}, 415, 'UNSUPPORTED_MEDIA_TYPE', $PATH, undef, 'text/plain -> 415');
$r = raw_post($ok_body, content_type => 'application/json; charset=utf-8');
is $r->{status}, 200, 'application/json; charset=utf-8 is accepted';
$n1++;

# ---- hostile JSON
my %cases = (
    'deeply nested arrays'   => '[' x 10000,
    'deeply nested, closed'  => ('[' x 10000) . (']' x 10000),
    'deeply nested objects'  => ('{"a":' x 10000) . '1' . ('}' x 10000),
    'nested in a member'     => '{"chip_id":"C0FFEE02","x":' . ('[' x 10000) . (']' x 10000) . '}',
);
for my $case (sort keys %cases) {
    $r = raw_post($cases{$case});
    $s->check_error($r->{res}, 400, undef, $PATH, undef, "$case -> 400");
}

$r = raw_post(qq({"chip_id":"C0\xff\xfeEE03","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}));
$s->check_error($r->{res}, 400, 'INVALID_JSON', $PATH, undef, 'invalid UTF-8 in a string -> 400 INVALID_JSON');
$r = raw_post(qq({"chip_id":"C0\xc0\xafEE04","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}));
$s->check_error($r->{res}, 400, 'INVALID_JSON', $PATH, undef, 'overlong UTF-8 -> 400 INVALID_JSON');
$r = raw_post($ok_body . ' xyz');
$s->check_error($r->{res}, 400, 'INVALID_JSON', $PATH, undef, 'trailing garbage -> 400 INVALID_JSON');
$r = raw_post($ok_body . '{}');
$s->check_error($r->{res}, 400, 'INVALID_JSON', $PATH, undef, 'two JSON values -> 400 INVALID_JSON');
$r = raw_post('{"chip_id":"C0FFEE05","chip_id":"C0FFEE06","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}');
ok $r->{status} == 200 || $r->{status} == 400, "duplicate keys -> 200 or 400 ($r->{status})";
$n1++ if $r->{status} == 200;
$r = raw_post(qq({"chip_id":"C0\x00FFEE07","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}));
$s->check_error($r->{res}, 400, 'INVALID_JSON', $PATH, undef, 'raw NUL in a string -> 400 INVALID_JSON');

is devices(), $n1, 'nothing stored for the invalid bodies';

# ---- the workers survived
my $res = $s->ua->get($s->url('/healthz'))->res;
is $res->code, 200, '/healthz still 200';
# a crash would have replaced a worker; the log check below says why
my %now = map { $_ => 1 } $s->nginx_worker_pids;
ok !(grep { !$now{$_} } @workers), 'the workers of the start are all still serving';
$s->assert_no_crash;
done_testing;
