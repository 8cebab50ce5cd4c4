#!/usr/bin/perl
# Payments (SPEC 8; seed 004 "Device QR Code Payment", "MQTT Payment
# Status", "Timeout Fallback"): a device creates a PromptPay QR payment
# (seed shape, an EMVCo payload decoded here independently), polls its
# status; the gateway's webhook (HMAC-SHA256, checked first) or an admin
# moves it to a final state once, and the expiry timer cancels it; each
# change is published once, signed, on device/{chargeId}/payment-status,
# from the rows (also after the bridge was down).  Users see only their own
# payments.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha256_hex hmac_sha256_hex);
use IO::Select;
use IO::Socket::UNIX;
use Mojo::JSON qw(decode_json encode_json);
use POSIX ();
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);
use FleetStack;
use FleetMQTT qw(bridge_ping wait_for start_extra_bridge stop_extra_bridge
    clear_session notifies);

# a TTL of its own, to see the directive at work in the expiry time
my $s = FleetStack->new(workers => 2, extra_http => 'fleet_payment_ttl 20m;');
my $dbh = $s->dbh;
my $secret = $s->device_secret;
my $admin = $s->admin_token;
my $CREATE = '/api/v1/payment-gateway/payments';
my $WEBHOOK = '/api/v1/payment-gateway/webhook';

sub body { my $j = eval { decode_json($_[0]->res->body) }; $j // {} }

sub register {
    my $chip = shift;
    my $j = decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"car_wash_v1.00"}))->res->body);
    BAIL_OUT("need-register: no device_id") unless $j->{data}{device_id};
    return @{ $j->{data} }{qw(device_id pin)};
}

sub create {
    my ($dev, $amount, %o) = @_;
    my $text = $o{text} // encode_json({ device_id => $dev, amount => $amount,
        payment_method => 'QR_PROMPT_PAY', description => 'Car wash payment' });
    return $s->signed_post($CREATE, $text);
}
sub charge_of { body($_[0])->{data}{payment_results}{chargeId} }
sub status_path { "/api/v1/payment-gateway/payments/$_[0]/status" }
sub status_of {
    my $tx = $s->signed_get(status_path($_[0]));
    return body($tx)->{data}{status};
}
sub webhook_body {
    my ($charge, $status, %extra) = @_;
    return encode_json({ chargeId => $charge, status => $status, timestamp => 1758358335794, %extra });
}
sub req {
    my ($method, $path, $token, $json) = @_;
    my %h = $token ? (Authorization => "Bearer $token") : ();
    my $tx = $s->ua->build_tx($method => $s->url($path) => \%h => (defined $json ? (json => $json) : ()));
    return $s->ua->start($tx);
}
sub events_of {
    return @{ $dbh->selectall_arrayref(
        'SELECT status, source, published_at IS NOT NULL AS published FROM payment_events
          WHERE charge_id = ? ORDER BY id', { Slice => {} }, $_[0]) };
}

# ---- an independent reading of EMVCo QR payloads

sub crc16_ccitt_false {
    my $crc = 0xFFFF;
    for my $c (unpack 'C*', $_[0]) {
        $crc ^= $c << 8;
        $crc = $crc & 0x8000 ? (($crc << 1) ^ 0x1021) & 0xFFFF : ($crc << 1) & 0xFFFF for 1 .. 8;
    }
    return sprintf '%04X', $crc;
}

# "IDLLvalue..." -> [[id, value], ...], undef unless the TLVs chain exactly
sub tlvs {
    my $s = shift;
    my @out;
    while (length $s) {
        return undef unless $s =~ /\A(\d\d)(\d\d)/;
        my ($id, $len) = ($1, $2);
        return undef if length($s) < 4 + $len;
        push @out, [ $id, substr($s, 4, $len) ];
        substr($s, 0, 4 + $len) = '';
    }
    return \@out;
}

# checks a PromptPay bill payment; returns its top-level tags as a hash
sub check_qr {
    my ($raw, $amount, $ref, $name) = @_;
    my $top = tlvs($raw);
    ok $top, "$name: the payload is a chain of TLVs" or return {};
    my %t = map { $_->[0] => $_->[1] } @$top;
    is_deeply [ map { $_->[0] } @$top ], [qw(00 01 30 53 54 58 62 63)], "$name: tags in order";
    is $t{'00'}, '01', "$name: payload format indicator 01";
    is $t{'01'}, '12', "$name: point of initiation 12 (dynamic, one payment)";
    my %m = map { $_->[0] => $_->[1] } @{ tlvs($t{30}) // [] };
    is_deeply \%m, { '00' => 'A000000677010112', '01' => $s->promptpay_biller_id,
                     '02' => $s->promptpay_merchant_ref },
        "$name: tag 30 = PromptPay bill payment AID, biller id, merchant reference";
    is $t{53}, '764', "$name: currency 764 (THB)";
    is $t{54}, $amount, "$name: amount $amount baht";
    is $t{58}, 'TH', "$name: country TH";
    my %a = map { $_->[0] => $_->[1] } @{ tlvs($t{62}) // [] };
    is_deeply \%a, { '07' => $ref }, "$name: reference in 62/07";
    like $raw, qr/6304[0-9A-F]{4}\z/, "$name: tag 63 is last, 4 hex digits";
    is $t{63}, crc16_ccitt_false(substr($raw, 0, -4)), "$name: CRC-16/CCITT-FALSE over everything before it";
    return \%t;
}

is crc16_ccitt_false('123456789'), '29B1', 'the test CRC: check value';
is crc16_ccitt_false(substr('00020101021230530016A00000067701011201150105562181354030210CATCARWASH'
    . '530376454041.005802TH6220071625092401060816266304B1D4', 0, -4)), 'B1D4', "the test CRC: the seed's B1D4";

# ---- the devices' side: one subscriber on device/+/payment-status, QoS 1
my $subfile = $s->dir . '/payment-status.txt';
my $sub_pid = fork // die "fork: $!";
if (!$sub_pid) {
    open STDOUT, '>', $subfile or POSIX::_exit(126);
    open STDERR, '>&', \*STDOUT;
    { no warnings qw(exec);
      exec 'mosquitto_sub', '-h', '127.0.0.1', '-p', $s->mqtt_port, '-q', '1',
          '-t', 'device/+/payment-status', '-v'; }
    POSIX::_exit(127);
}
END { if ($sub_pid) { kill 'TERM', $sub_pid; waitpid $sub_pid, 0 } }

# the raw texts received for one chargeId so far
sub messages {
    my $charge = shift;
    open my $fh, '<', $subfile or return ();
    my @got;
    while (my $line = <$fh>) {
        chomp $line;
        my ($topic, $msg) = split / /, $line, 2;
        push @got, $msg if $topic eq "device/$charge/payment-status" && defined $msg;
    }
    return @got;
}
# FleetMQTT's rule, read back: the sha256 member is last, over the rest
sub sig_ok {
    my $text = shift;
    my ($base, $sig) = $text =~ /\A(.*),"sha256":"([0-9a-f]{64})"\}\z/s or return 0;
    return sha256_hex("$base}" . $secret) eq $sig;
}

ok wait_for(10, sub {
    FleetMQTT::publish($s, 'device/probe/payment-status', '{"probe":1}');
    wait_for(1, sub { messages('probe') });
}), 'the device subscriber is listening';

my ($dev, $pin) = register('PAYCHIP1');

# ======================================================================
# create: seed 004's shape with real values

my $t0 = time;
my $tx = create($dev, 100);
is $tx->res->code, 200, 'create -> 200';
my $j = body($tx);
is_deeply [ $j->{success}, $j->{message} ], [ 1, 'Payment created successfully' ], 'success shape';
my $p = $j->{data};
is_deeply [ sort keys %$p ],
    [ sort qw(id device_id amount payment_method reference_id status payment_results created_at updated_at) ],
    'the seed\'s members';
like $p->{id}, qr/\A c [0-9a-z]{24} \z/x, "id like the seed's cuid: $p->{id}";
is $p->{device_id}, $dev, 'device_id';
ok !ref $p->{amount} && $p->{amount} == 100, 'amount is the number 100 (satang), not a Decimal object';
like $tx->res->body, qr/"amount":\s*100[,}]/, 'amount written as an integer';
is $p->{payment_method}, 'QR_PROMPT_PAY', 'payment_method';
like $p->{reference_id}, qr/\A CCW - \d{13} - [0-9A-Z]{6} \z/x, "reference_id like the seed's: $p->{reference_id}";
my ($ref_ms) = $p->{reference_id} =~ /-(\d{13})-/;
cmp_ok abs($ref_ms / 1000 - $t0), '<', 30, 'its middle part is the time in epoch milliseconds';
is $p->{status}, 'PENDING', 'status PENDING';
my $r = $p->{payment_results};
is_deeply [ sort keys %$r ], [ sort qw(chargeId redirect encodedImage actionRequired paymentMethodType) ],
    'payment_results members';
like $r->{chargeId}, qr/\A ch_ [0-9A-Za-z]{27} \z/x, "chargeId like the seed's: $r->{chargeId}";
ok exists $r->{redirect} && !defined $r->{redirect}, 'redirect null';
is $r->{actionRequired}, 'ENCODED_IMAGE', 'actionRequired';
is $r->{paymentMethodType}, 'QR_PROMPT_PAY', 'paymentMethodType';
is_deeply [ sort keys %{ $r->{encodedImage} } ], [qw(expiry rawData)], 'encodedImage members';

# the seed's times: "2025-09-24 01:06:07", Thai time (UTC+7)
sub thai_epoch {
    my ($y, $mo, $d, $h, $mi, $sec) = $_[0] =~ /\A(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\z/ or return undef;
    return timegm($sec, $mi, $h, $d, $mo - 1, $y) - 7 * 3600;
}
for my $k (qw(created_at updated_at)) {
    my $e = thai_epoch($p->{$k});
    ok defined $e && abs($e - $t0) < 30, "$k '$p->{$k}' is now, Thai local time as in the seed";
}
my $exp = thai_epoch($r->{encodedImage}{expiry});
is $exp - thai_epoch($p->{created_at}), 20 * 60, 'expiry = created_at + fleet_payment_ttl (20m here)';

(my $qr_ref = $p->{reference_id}) =~ s/-//g;
check_qr($r->{encodedImage}{rawData}, '1.00', $qr_ref, '100 satang');

my $charge = $r->{chargeId};
my $row = $dbh->selectrow_hashref('SELECT * FROM payments WHERE charge_id = ?', undef, $charge);
is_deeply [ @$row{qw(status amount device_id description raw_data)} ],
    [ 'PENDING', 100, $dev, 'Car wash payment', $r->{encodedImage}{rawData} ], 'the row';

# other amounts in baht with two decimals
for my $case ([5, '0.05'], [123456, '1234.56'], [10000000, '100000.00'], [1, '0.01']) {
    my ($satang, $baht) = @$case;
    my $t = create($dev, $satang);
    is $t->res->code, 200, "$satang satang accepted";
    my $d = body($t)->{data};
    (my $ref = $d->{reference_id} // '') =~ s/-//g;
    check_qr($d->{payment_results}{encodedImage}{rawData} // '', $baht, $ref, "$satang satang");
    is $d->{amount}, $satang, "$satang satang: amount in satang";
}

# ======================================================================
# the status route (bodiless: the signature is over the request target)

$tx = $s->signed_get(status_path($charge));
is $tx->res->code, 200, 'status -> 200';
is_deeply body($tx), { success => 1, data => { chargeId => $charge, status => 'PENDING' },
                       message => 'Payment status checked successfully' }, 'seed 004 "Timeout Fallback" shape';
is $s->signed_get(status_path($charge) . '?poll=1')->res->code, 200, 'a query string is part of what is signed';
$s->check_error($s->signed_get(status_path($charge), 'x-signature' => $s->sign(status_path('ch_other'))),
    401, 'INVALID_SIGNATURE', status_path($charge), undef, 'status: a signature over another path');
$s->check_error($s->signed_get(status_path($charge), 'x-signature' => undef),
    401, 'INVALID_SIGNATURE', status_path($charge), undef, 'status: no signature');
$s->check_error($s->signed_get(status_path('ch_doesnotexist')), 404, 'PAYMENT_NOT_FOUND',
    status_path('ch_doesnotexist'), 'no payment with chargeId ch_doesnotexist', 'status: unknown chargeId');

# ======================================================================
# the webhook: SUCCEEDED, published once, signed, seed shape

$dbh->do('LISTEN fleet_events');
notifies($dbh);
my $wb = webhook_body($charge, 'SUCCEEDED', paid_amount => 100, transaction_ref => 'BANK-REF-0001');
$tx = $s->webhook_post($wb);
is $tx->res->code, 200, 'webhook SUCCEEDED -> 200';
is_deeply body($tx), { success => 1, data => { chargeId => $charge, status => 'SUCCEEDED', changed => 1 },
                       message => 'Payment status updated' }, 'webhook answer';
is status_of($charge), 'SUCCEEDED', 'the status route shows it at once';
ok wait_for(10, sub { messages($charge) >= 1 }), 'a message arrives on device/{chargeId}/payment-status';
my ($m) = messages($charge);
ok sig_ok($m), 'its trailing sha256 verifies (SPEC 2)' or diag $m;
like $m, qr/\A\{"command_id":"cmd-payment-\d+","command":"PAYMENT","payload":\{"chargeId":"\Q$charge\E","status":"SUCCEEDED"\},"timestamp":\d{13},"sha256":"[0-9a-f]{64}"\}\z/,
    "seed 004's members in the seed's order, compact" or diag $m;
my $mj = eval { decode_json($m) } // {};
cmp_ok abs($mj->{timestamp} / 1000 - time), '<', 60, 'timestamp is epoch milliseconds of the change';
$row = $dbh->selectrow_hashref('SELECT * FROM payments WHERE charge_id = ?', undef, $charge);
is_deeply [ @$row{qw(status paid_amount transaction_ref)} ], [ 'SUCCEEDED', 100, 'BANK-REF-0001' ],
    'paid_amount and transaction_ref kept';
ok $row->{finished_at}, 'finished_at set';
ok wait_for(5, sub { my @e = events_of($charge); @e == 1 && $e[0]{published} }), 'one event, marked published on PUBACK';
is_deeply [ map { [ $_->{status}, $_->{source} ] } events_of($charge) ], [ [ 'SUCCEEDED', 'webhook' ] ], 'event source webhook';
my @n = grep { $_->{type} eq 'payment_status' } notifies($dbh);
is scalar(@n), 1, 'one payment_status envelope on the bus';
is_deeply [ @{ $n[0] // {} }{qw(chargeId status device_id)} ], [ $charge, 'SUCCEEDED', $dev ], 'its members';

# the same status again: 200, nothing changes, nothing is published
my $pub_before = bridge_ping($s->bridge_socket)->{payments_published};
$tx = $s->webhook_post($wb);
is $tx->res->code, 200, 'the same webhook again -> 200';
is_deeply body($tx)->{data}, { chargeId => $charge, status => 'SUCCEEDED', changed => 0 }, 'changed: false';
is body($tx)->{message}, 'Payment is already SUCCEEDED', 'message says so';
$tx = $s->webhook_post(webhook_body($charge, 'SUCCEEDED', paid_amount => 99));
is $tx->res->code, 200, 'SUCCEEDED again with other details -> 200';
sleep 2.5;
is scalar(messages($charge)), 1, 'still one message for that payment';
is scalar(events_of($charge)), 1, 'still one event row';
is bridge_ping($s->bridge_socket)->{payments_published}, $pub_before, 'the bridge published nothing more';
is $dbh->selectrow_array('SELECT paid_amount FROM payments WHERE charge_id = ?', undef, $charge), 100,
    'the repeat changed no detail';
ok !grep({ $_->{type} eq 'payment_status' } notifies($dbh)), 'and put nothing on the bus';

# leaving a final state: 409
for my $st (qw(FAILED CANCELLED)) {
    $s->check_error($s->webhook_post(webhook_body($charge, $st)), 409, 'CONFLICT', $WEBHOOK,
        "payment $charge is already SUCCEEDED and cannot become $st", "SUCCEEDED -> $st: 409");
}
is status_of($charge), 'SUCCEEDED', 'still SUCCEEDED';
is scalar(events_of($charge)), 1, 'no event for the refusals';

# FAILED and CANCELLED from the gateway
for my $st (qw(FAILED CANCELLED)) {
    my $c = charge_of(create($dev, 300));
    is $s->webhook_post(webhook_body($c, $st, timestamp => '2025-09-24T01:10:00+07:00'))->res->code, 200,
        "webhook $st (ISO timestamp) -> 200";
    is status_of($c), $st, "status $st";
    ok wait_for(10, sub { grep { (eval { decode_json($_) } // {})->{payload}{status} eq $st } messages($c) }),
        "$st published";
    $s->check_error($s->webhook_post(webhook_body($c, 'SUCCEEDED')), 409, 'CONFLICT', $WEBHOOK, undef,
        "$st -> SUCCEEDED: 409");
}

# ======================================================================
# a device polls while the gateway confirms: never back, ends SUCCEEDED

{
    my $c = charge_of(create($dev, 700));
    my $child = fork // die "fork: $!";
    if (!$child) {
        sleep 0.4;
        my $ua = $s->fresh_ua;
        my $b = webhook_body($c, 'SUCCEEDED');
        my $res = $ua->post($s->url($WEBHOOK) => { 'Content-Type' => 'application/json',
            'x-webhook-signature' => $s->webhook_sign($b) } => $b)->res;
        POSIX::_exit(($res->code // 0) == 200 ? 0 : 1);
    }
    # poll until ten polls in a row saw SUCCEEDED (at most 8 s)
    my @seen;
    my $deadline = time + 8;
    while (time < $deadline) {
        push @seen, status_of($c) // 'none';
        last if @seen >= 10 && !grep { $_ ne 'SUCCEEDED' } @seen[-10 .. -1];
        sleep 0.03;
    }
    waitpid $child, 0;
    is $?, 0, 'the concurrent webhook got 200';
    my $seq = join ' ', @seen;
    like $seq, qr/\A(PENDING )+(SUCCEEDED ?)+\z/, 'polls see PENDING then SUCCEEDED, never back'
        or diag $seq;
    is status_of($c), 'SUCCEEDED', 'and it stays SUCCEEDED';
    ok wait_for(10, sub { messages($c) == 1 }), 'one MQTT message for it';
}

# ======================================================================
# validation: precise messages, nothing stored

my $count = $s->count_rows('payments');
my @bad = (
    [ { amount => 0 }, 'amount must be greater than 0 satang' ],
    [ { amount => -100 }, 'amount must be greater than 0 satang' ],
    [ { amount => 10000001 }, 'amount must be at most 10000000 satang (100000.00 baht)' ],
    [ { amount => 9007199254740993 }, 'amount must be at most 10000000 satang (100000.00 baht)' ],
    [ { amount => 1.5 }, 'amount must be a whole number of satang (100 = 1.00 baht)' ],
    [ { amount => '100' }, 'amount must be a number of satang, not a string (100 = 1.00 baht)' ],
    [ { amount => \1 }, 'amount must be an integer number of satang (100 = 1.00 baht)' ],
    [ { amount => undef }, 'amount is required' ],
    [ { amount => 100, payment_method => 'CREDIT_CARD' }, 'payment_method must be QR_PROMPT_PAY (the only method supported)' ],
    [ { amount => 100, payment_method => undef }, 'payment_method is required' ],
    [ { amount => 100, payment_method => 5 }, 'payment_method must be a string' ],
    [ { amount => 100, description => 'x' x 256 }, 'description must be at most 255 characters' ],
    [ { amount => 100, device_id => undef }, 'device_id is required' ],
    [ { amount => 100, device_id => 'dev/../x' }, "device_id may contain only letters, digits, '-', '_', ':' and '.'" ],
);
for my $b (@bad) {
    my %body = (device_id => $dev, payment_method => 'QR_PROMPT_PAY', description => 'Car wash payment', %{ $b->[0] });
    delete $body{$_} for grep { !defined $body{$_} } keys %body;
    $s->check_error(create(undef, undef, text => encode_json(\%body)), 400, 'VALIDATION_ERROR', $CREATE, $b->[1],
        "refused: $b->[1]");
}
$s->check_error(create(undef, undef, text => qq({"device_id":"$dev","amount":100.0,"payment_method":"QR_PROMPT_PAY"})),
    400, 'VALIDATION_ERROR', $CREATE, 'amount must be a whole number of satang (100 = 1.00 baht)', 'refused: 100.0');
$s->check_error(create(undef, undef, text => qq({"device_id":"$dev","amount":1e2,"payment_method":"QR_PROMPT_PAY"})),
    400, 'VALIDATION_ERROR', $CREATE, undef, 'refused: 1e2');
$s->check_error(create('dev-doesnotexist', 100), 404, 'DEVICE_NOT_FOUND', $CREATE,
    'device dev-doesnotexist is not registered', 'unknown device: 404');
$s->check_error(create(undef, undef, text => '{"device_id":'), 400, 'INVALID_JSON', $CREATE);
my $good = encode_json({ device_id => $dev, amount => 100, payment_method => 'QR_PROMPT_PAY' });
$s->check_error($s->signed_post($CREATE, $good, 'x-signature' => $s->sign($good . ' ')), 401, 'INVALID_SIGNATURE',
    $CREATE, undef, 'create: wrong x-signature');
$s->check_error($s->signed_post($CREATE, $good, 'x-signature' => undef), 401, 'INVALID_SIGNATURE',
    $CREATE, undef, 'create: no x-signature');
is $s->count_rows('payments'), $count, 'no refused request stored a payment';

# ======================================================================
# the webhook's signature is checked before anything else

my $wc = charge_of(create($dev, 400));
my $wgood = webhook_body($wc, 'SUCCEEDED');
my $hmac = hmac_sha256_hex($wgood, $s->payment_webhook_secret);
$s->check_error($s->webhook_post($wgood, 'x-webhook-signature' => undef), 401, 'INVALID_SIGNATURE', $WEBHOOK,
    'x-webhook-signature is missing', 'webhook: no signature');
for my $case ([ "sha1=$hmac", 'sha1= scheme' ], [ $hmac, 'bare hex, no scheme' ], [ "sha256:$hmac", 'sha256: scheme' ],
              [ "sha512=$hmac", 'sha512= scheme' ], [ "sha256=${hmac}00", 'too long' ]) {
    $s->check_error($s->webhook_post($wgood, 'x-webhook-signature' => $case->[0]), 401, 'INVALID_SIGNATURE', $WEBHOOK,
        'x-webhook-signature must be sha256=<64 hex digits of HMAC-SHA256(body, secret)>', "webhook: $case->[1]");
}
for my $case ([ $s->webhook_sign($wgood, 'another-secret-0123456789'), 'another secret' ],
              [ $s->webhook_sign(webhook_body($wc, 'FAILED')), "another body's signature" ],
              [ 'sha256=' . sha256_hex($wgood . $s->payment_webhook_secret), 'plain SHA256(body || secret)' ]) {
    $s->check_error($s->webhook_post($wgood, 'x-webhook-signature' => $case->[0]), 401, 'INVALID_SIGNATURE', $WEBHOOK,
        'x-webhook-signature does not match the body', "webhook: $case->[1]");
}
$s->check_error($s->webhook_post('{"chargeId":', 'x-webhook-signature' => $s->webhook_sign('{}')), 401,
    'INVALID_SIGNATURE', $WEBHOOK, undef, 'bad JSON with a bad signature: 401 first');
$s->check_error($s->webhook_post('{"chargeId":'), 400, 'INVALID_JSON', $WEBHOOK, undef,
    'bad JSON, signed: 400');
is status_of($wc), 'PENDING', 'refused webhooks changed nothing';
is scalar(events_of($wc)), 0, 'and wrote no event';
my @wbad = (
    [ { status => 'PENDING' }, 'status must be SUCCEEDED, FAILED or CANCELLED' ],
    [ { status => 'PAID' }, 'status must be SUCCEEDED, FAILED or CANCELLED' ],
    [ { status => undef }, 'status is required' ],
    [ { chargeId => undef }, 'chargeId is required' ],
    [ { timestamp => undef }, 'timestamp is required' ],
    [ { timestamp => 'yesterday' }, 'timestamp must be epoch milliseconds or an ISO 8601 time between 2000 and 2100' ],
    [ { timestamp => 1.5 }, 'timestamp must be epoch milliseconds or an ISO 8601 string' ],
    [ { paid_amount => -1 }, 'paid_amount must be between 0 and 99999999999' ],
    [ { paid_amount => '100' }, 'paid_amount must be an integer' ],
);
for my $b (@wbad) {
    my %body = (chargeId => $wc, status => 'SUCCEEDED', timestamp => 1758358335794, %{ $b->[0] });
    delete $body{$_} for grep { !defined $body{$_} } keys %body;
    $s->check_error($s->webhook_post(encode_json(\%body)), 400, 'VALIDATION_ERROR', $WEBHOOK, $b->[1],
        "webhook refused: $b->[1]");
}
$s->check_error($s->webhook_post(webhook_body('ch_doesnotexist', 'SUCCEEDED')), 404, 'PAYMENT_NOT_FOUND', $WEBHOOK,
    'no payment with chargeId ch_doesnotexist', 'webhook: unknown chargeId');
is status_of($wc), 'PENDING', 'still PENDING';
# upper-case hex and scheme are the same signature
is $s->webhook_post($wgood, 'x-webhook-signature' => uc $s->webhook_sign($wgood))->res->code, 200,
    'SHA256=<upper-case hex> is accepted';
is status_of($wc), 'SUCCEEDED', 'and applied';

# ======================================================================
# admins confirm or cancel; users may not

my $u_id = $s->create_user('payer@fleet.local', 'payer-pass-1234', 'user');
my $user = $s->login('payer@fleet.local', 'payer-pass-1234');
my $o_id = $s->create_user('other@fleet.local', 'other-pass-1234', 'user');
my $other = $s->login('other@fleet.local', 'other-pass-1234');

my $ac = charge_of(create($dev, 500));
my $confirm = "/api/v1/payment-gateway/payments/$ac/confirm";
$s->check_error(req(POST => $confirm, $user), 403, 'FORBIDDEN', $confirm, undef, 'a user token: 403');
$s->check_error(req(POST => $confirm, undef), 401, 'UNAUTHORIZED', $confirm, undef, 'no token: 401');
is status_of($ac), 'PENDING', 'refusals changed nothing';
notifies($dbh);
$tx = req(POST => $confirm, $admin, { reason => 'paid in cash at the counter' });
is $tx->res->code, 200, 'admin confirm -> 200';
is body($tx)->{message}, 'Payment confirmed', 'message';
is body($tx)->{data}{status}, 'SUCCEEDED', 'SUCCEEDED';
is body($tx)->{data}{payment_results}{chargeId}, $ac, 'the payment in the answer';
is status_of($ac), 'SUCCEEDED', 'the status route shows it';
ok wait_for(10, sub { my @m = messages($ac); @m == 1 && sig_ok($m[0]) && $m[0] =~ /"status":"SUCCEEDED"/ }),
    'published once, signed';
my ($ev) = events_of($ac);
is_deeply [ @$ev{qw(status source)} ], [qw(SUCCEEDED admin)], 'event source admin';
is $dbh->selectrow_array(q{SELECT detail->>'reason' FROM payment_events WHERE charge_id = ?}, undef, $ac),
    'paid in cash at the counter', 'the reason is kept';
my ($act) = grep { $_->{type} eq 'admin_action' } notifies($dbh);
is_deeply [ $act->{adminId}, $act->{action}, $act->{details}{chargeId} ], [ $s->admin_id, 'payment_confirm', $ac ],
    'an admin_action envelope (seed 003 admin:action)';
is_deeply [ map { [ $_->{event}, @{ $_->{rooms} } ] } @{ $act->{sio} // [] } ], [ [ 'admin:action', 'admin' ] ],
    'to the admin Socket.IO room';
my ($audit) = grep { $_->{target} eq $ac } @{ body(req(GET => '/api/v1/admin/audit', $admin))->{data}{items} // [] };
is_deeply [ @{ $audit // {} }{qw(action admin_id)}, $audit->{details}{reason} ],
    [ 'payment_confirm', $s->admin_id, 'paid in cash at the counter' ], 'in the admin audit log';
is req(POST => $confirm, $admin)->res->code, 200, 'confirm again -> 200';
is body(req(POST => $confirm, $admin))->{data}{changed}, 0, 'changed: false';
my $cancel = "/api/v1/payment-gateway/payments/$ac/cancel";
$s->check_error(req(POST => $cancel, $admin), 409, 'CONFLICT', $cancel,
    "payment $ac is already SUCCEEDED and cannot become CANCELLED", 'cancel a SUCCEEDED payment: 409');

my $cc = charge_of(create($dev, 600));
$cancel = "/api/v1/payment-gateway/payments/$cc/cancel";
$tx = req(POST => $cancel, $admin);
is $tx->res->code, 200, 'admin cancel (no body) -> 200';
is body($tx)->{message}, 'Payment cancelled', 'message';
is status_of($cc), 'CANCELLED', 'CANCELLED';
ok wait_for(10, sub { grep { /"status":"CANCELLED"/ } messages($cc) }), 'published';
$s->check_error($s->webhook_post(webhook_body($cc, 'SUCCEEDED')), 409, 'CONFLICT', $WEBHOOK, undef,
    'a late SUCCEEDED webhook after a cancel: 409');
$s->check_error(req(POST => '/api/v1/payment-gateway/payments/ch_doesnotexist/confirm', $admin), 404,
    'PAYMENT_NOT_FOUND', undef, undef, 'confirm an unknown chargeId: 404');
$s->check_error(req(POST => $cancel, $admin, { reason => 5 }), 400, 'VALIDATION_ERROR', $cancel,
    'reason must be a string');
is scalar(grep { ($_->{target} // '') eq $cc || ($_->{target} // '') eq $ac }
          @{ body(req(GET => '/api/v1/admin/audit', $admin))->{data}{items} // [] }), 2,
    'one audit row per change, none for repeats or refusals';

# ======================================================================
# users: their own payments only

my ($udev, $upin) = register('PAYCHIP2');
is req(POST => '/api/v1/devices/claim', $user, { pin => $upin, name => 'Bay 2' })->res->code, 200, 'the user claims a device';
my $uc = charge_of(create($udev, 800));
$tx = req(GET => "/api/v1/payment-gateway/payments/$uc", $user);
is $tx->res->code, 200, 'the owner reads the payment';
is_deeply [ @{ body($tx)->{data} }{qw(status amount description)} ], [ 'PENDING', 800, 'Car wash payment' ], 'its data';
$s->check_error(req(GET => "/api/v1/payment-gateway/payments/$uc", $other), 404, 'PAYMENT_NOT_FOUND', undef,
    "no payment with chargeId $uc", "another user gets 404, exactly like a missing payment");
$s->check_error(req(GET => "/api/v1/payment-gateway/payments/$charge", $user), 404, 'PAYMENT_NOT_FOUND', undef,
    undef, "the user cannot read a payment of a device that is not theirs");
my $list = body(req(GET => '/api/v1/payment-gateway/payments', $user))->{data};
is_deeply [ map { $_->{payment_results}{chargeId} } @{ $list->{items} } ], [$uc], "the user's list: their payment only";
is $list->{total}, 1, 'total 1';
is body(req(GET => '/api/v1/payment-gateway/payments', $other))->{data}{total}, 0, 'the other user: none';
my $all = body(req(GET => "/api/v1/payment-gateway/payments?device_id=$dev&status=SUCCEEDED&limit=500", $admin))->{data};
ok $all->{total} >= 3 && !grep({ $_->{status} ne 'SUCCEEDED' || $_->{device_id} ne $dev } @{ $all->{items} }),
    "an admin lists any device's payments, filtered";
$s->check_error(req(GET => '/api/v1/payment-gateway/payments?status=PAID', $admin), 400, 'VALIDATION_ERROR', undef,
    'status must be PENDING, SUCCEEDED, FAILED or CANCELLED');
$s->check_error(req(GET => '/api/v1/payment-gateway/payments', undef), 401, 'UNAUTHORIZED');
my $hist = body(req(GET => "/api/v1/payment-gateway/payments/$ac", $admin))->{data}{history};
is_deeply [ map { [ $_->{status}, $_->{source}, $_->{published} ? 1 : 0 ] } @$hist ], [ [ 'SUCCEEDED', 'admin', 1 ] ],
    'the history of a payment';

# ======================================================================
# expiry: the bridge's timer cancels, once, however many bridges run it

my $xc = charge_of(create($dev, 900));
$dbh->do(q{UPDATE payments SET expires_at = now() - interval '1 second' WHERE charge_id = ?}, undef, $xc);
ok wait_for(8, sub { (status_of($xc) // '') eq 'CANCELLED' }), 'an expired payment becomes CANCELLED';
ok wait_for(10, sub { grep { /"status":"CANCELLED"/ && sig_ok($_) } messages($xc) }), 'CANCELLED published, signed';
is_deeply [ map { [ $_->{status}, $_->{source} ] } events_of($xc) ], [ [ 'CANCELLED', 'expiry' ] ], 'event source expiry';
like $s->bridge_log, qr/info 1 payment expired \(CANCELLED\)/, 'the bridge logs it at info';
$s->check_error($s->webhook_post(webhook_body($xc, 'SUCCEEDED')), 409, 'CONFLICT', $WEBHOOK, undef,
    'a payment that arrives after the expiry: 409');
my $fresh = charge_of(create($dev, 100));
sleep 1.5;
is status_of($fresh), 'PENDING', 'an unexpired payment is left alone';

my $b2 = start_extra_bridge($s, 'b2', '--client-id', 'fleet-bridge-b2');
ok wait_for(10, sub { my $pong = bridge_ping($b2->{socket}); $pong && $pong->{pg} && $pong->{mqtt} }),
    'a second bridge runs';
my @many = map { charge_of(create($dev, 1000 + $_)) } 1 .. 20;
$dbh->do(q{UPDATE payments SET expires_at = now() - interval '1 second' WHERE charge_id = ANY(?)}, undef, \@many);
ok wait_for(10, sub { !grep { (status_of($_) // '') ne 'CANCELLED' } @many }), 'twenty expired payments cancelled';
sleep 1.5;
is $dbh->selectrow_array('SELECT count(*) FROM payment_events WHERE charge_id = ANY(?)', undef, \@many), 20,
    'exactly one event each: two bridges never double-act';
ok wait_for(10, sub { !grep { !messages($_) } @many }), 'each published';
my $exp_total = (bridge_ping($s->bridge_socket)->{payments_expired} // 0) + (bridge_ping($b2->{socket})->{payments_expired} // 0);
is $exp_total, 21, 'the bridges counted 21 expiries between them';
stop_extra_bridge($b2);
clear_session($s, 'fleet-bridge-b2');

# ======================================================================
# rows first: with the bridge down the change is stored and visible, and
# published when the bridge returns

my $dc = charge_of(create($dev, 1100));
$s->kill_bridge('TERM');
is $s->webhook_post(webhook_body($dc, 'SUCCEEDED'))->res->code, 200, 'webhook while the bridge is down -> 200';
is status_of($dc), 'SUCCEEDED', 'the status route shows it';
sleep 1;
ok !messages($dc), 'nothing published yet';
is_deeply [ map { $_->{published} ? 1 : 0 } events_of($dc) ], [0], 'the event waits unpublished';
$s->start_bridge;
ok wait_for(10, sub { messages($dc) == 1 }), 'published once the bridge is back';
ok wait_for(5, sub { (events_of($dc))[0]{published} }), 'and marked published';

# the fast-path op
{
    my $sock = IO::Socket::UNIX->new(Peer => $s->bridge_socket, Type => SOCK_STREAM) or die "socket: $!";
    print $sock qq({"op":"payments_pending","id":9}\n);
    $sock->flush;
    my ($line, $sel, $deadline) = ('', IO::Select->new($sock), time + 5);
    while ($line !~ /\n/ && time < $deadline) {
        next unless $sel->can_read(0.2);
        sysread($sock, $line, 4096, length $line) or last;
    }
    my $rr = eval { decode_json((split /\n/, $line)[0]) } // {};
    ok $rr->{op} eq 'payments_pending' && $rr->{id} == 9 && $rr->{ok}, '{"op":"payments_pending"} is answered ok'
        or diag $line;
}

# ======================================================================
# configuration: what goes into the QR is checked when nginx starts

{
    my $d = $s->dir . '/conf-check';
    mkdir $d;
    my $so = ($ENV{FLEET_BUILD} // "$FindBin::Bin/../build") . '/nginx/objs/ngx_fleet_module.so';
    my $pre = $ENV{FLEET_NGINX_PRELOAD} ? "LD_PRELOAD=$ENV{FLEET_NGINX_PRELOAD} " : '';
    my $nginx_t = sub {
        my $http = shift;
        open my $fh, '>', "$d/nginx.conf" or die;
        print $fh "load_module $so;\nerror_log $d/error.log;\npid $d/nginx.pid;\nevents {}\n"
            . "http {\n client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fcgi;"
            . " uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi; access_log off;\n $http\n}\n";
        close $fh;
        my $out = qx{${pre}/usr/sbin/nginx -t -p $d/ -c $d/nginx.conf -e $d/error.log 2>&1};
        return ($? == 0, $out);
    };
    my ($ok, $out) = $nginx_t->('fleet_promptpay_biller_id 010556218135403; fleet_promptpay_merchant_ref CATCARWASH;'
        . ' fleet_payment_webhook_secret 0123456789abcdef; fleet_payment_ttl 15m;');
    ok $ok, 'a complete payments configuration passes nginx -t' or diag $out;
    for my $case (
        [ 'fleet_promptpay_biller_id 010556218135403;', '"fleet_promptpay_biller_id" and "fleet_promptpay_merchant_ref" go together' ],
        [ 'fleet_promptpay_biller_id 0105562181354030; fleet_promptpay_merchant_ref CATCARWASH;',
          '"fleet_promptpay_biller_id" must be 1 to 15 upper-case letters or digits' ],
        [ 'fleet_promptpay_biller_id 010556218135403; fleet_promptpay_merchant_ref catcarwash;',
          '"fleet_promptpay_merchant_ref" must be 1 to 20 upper-case letters or digits' ],
        [ 'fleet_payment_reference_prefix CAR-WASH;', '"fleet_payment_reference_prefix" must be 1 to 6 upper-case letters or digits' ],
        [ 'fleet_payment_webhook_secret short;', '"fleet_payment_webhook_secret" must be at least 16 bytes' ],
        [ 'fleet_payment_webhook_secret 0123456789abcdef; fleet_payment_webhook_secret 0123456789abcdef;', 'is duplicate' ],
        [ 'fleet_payment_ttl 0;', '"fleet_payment_ttl" must be between 1s and 7d' ],
        [ 'fleet_payment_ttl 8d;', '"fleet_payment_ttl" must be between 1s and 7d' ],
    ) {
        my ($good, $text) = $nginx_t->($case->[0]);
        ok !$good && $text =~ /\Q$case->[1]\E/, "nginx -t refuses: $case->[1]" or diag $text;
    }
}

$s->assert_no_crash;
done_testing;
