#!/usr/bin/perl
# The WebSocket server inside nginx (ngx_module/ngx_fleet_ws.c), at the
# protocol level, on raw sockets for exact control of every byte: the
# handshake and its refusals, frames (fragmentation with a ping inside,
# protocol errors and their close codes, the closing handshake), bytes
# pipelined behind the upgrade, an upgrade after a keep-alive request,
# rate limiting, a real client (npm ws) offering its token as a
# subprotocol, TLS, 1001 on a reload, the server's pings (a client that
# never answers is dropped), and clients that reset the connection before
# their 101.  Route: /ws/sensor-data/, which any signed-in user may open
# and which takes messages.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha1_base64);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX ();
use Socket qw(SOL_SOCKET SO_LINGER);
use Mojo::JSON qw(decode_json);
use Mojo::Message::Response;
use Time::HiRes qw(time sleep);
use FleetStack;

$SIG{PIPE} = 'IGNORE';

my $HAVE_SSL = eval { require IO::Socket::SSL; 1 };

# ---- TLS: a self-signed certificate for a second listener of the server
my $tmp = tempdir('ws-protocol-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $tls_port = FleetStack::free_port();
my $openssl = system("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    . " -keyout $tmp/key.pem -out $tmp/cert.pem >$tmp/openssl.log 2>&1") == 0;
chmod 0644, "$tmp/key.pem" if $openssl;     # nginx may read it as another user
chmod 0755, $tmp;

my $s = FleetStack->new(workers => 2,
    # the ping interval is shortened for the last part (after the reload)
    extra_http => "fleet_ws_max_message 1k;\n    fleet_ws_ping_interval 30s;\n"
                . "    fleet_ws_message_rate 2;\n    fleet_ws_message_burst 3;",
    extra_server => $openssl
        ? "listen 127.0.0.1:$tls_port ssl; ssl_certificate $tmp/cert.pem; ssl_certificate_key $tmp/key.pem;"
        : '');

my $admin = $s->admin_token;
$s->create_user('wsuser@fleet.local', 'wsuser-pass-1234', 'user');
my $user = $s->login('wsuser@fleet.local', 'wsuser-pass-1234');
my $PATH = '/ws/sensor-data/';

# ======================================================================
# raw client helpers: a connection is { sock, buf } (buf: bytes read, not
# yet parsed)

my $GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
sub accept_for { sha1_base64($_[0] . $GUID) . '=' }
sub new_key    { encode_base64(join('', map { chr int rand 256 } 1 .. 16), '') }

sub raw_connect {
    my (%o) = @_;
    my $sock = $o{ssl}
        ? IO::Socket::SSL->new(PeerHost => '127.0.0.1', PeerPort => $tls_port, Timeout => 5,
                               SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE())
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $s->http_port,
                                Proto => 'tcp', Timeout => 5);
    die "connect: $! " . ($o{ssl} ? IO::Socket::SSL::errstr() : '') unless $sock;
    return { sock => $sock, buf => '' };
}

sub send_bytes {
    my ($c, $bytes) = @_;
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite($c->{sock}, $bytes, length($bytes) - $off, $off);
        return 0 unless $n;
        $off += $n;
    }
    return 1;
}

# more bytes into $c->{buf}: 1 when some came, 0 at EOF (or reset), undef
# at the deadline
sub fill {
    my ($c, $deadline) = @_;
    my $sock = $c->{sock};
    return 0 if $c->{eof};
    unless ($sock->can('pending') && $sock->pending) {
        my $left = $deadline - time;
        return undef if $left <= 0;
        return undef unless IO::Select->new($sock)->can_read($left);
    }
    my $n = sysread($sock, my $chunk, 65536);
    if (!$n) {
        $c->{eof} = 1;
        return 0;
    }
    $c->{buf} .= $chunk;
    return 1;
}

# the HTTP request for an upgrade; a header given as undef is left out
sub upgrade_request {
    my ($path, %h) = @_;
    my $method = delete $h{-method} // 'GET';
    my $version = delete $h{-version} // '1.1';
    my $key = exists $h{'Sec-WebSocket-Key'} ? $h{'Sec-WebSocket-Key'} : new_key();
    my @hdr = (
        [ Host                    => '127.0.0.1' ],
        [ Upgrade                 => 'websocket' ],
        [ Connection              => 'Upgrade' ],
        [ 'Sec-WebSocket-Version' => '13' ],
        [ 'Sec-WebSocket-Key'     => $key ],
    );
    my %seen;
    my $req = "$method $path HTTP/$version\r\n";
    for my $pair (@hdr, map { [ $_ => $h{$_} ] } sort keys %h) {
        my ($name, $value) = @$pair;
        next if $seen{$name}++;
        $value = $h{$name} if exists $h{$name};
        $req .= "$name: $value\r\n" if defined $value;
    }
    return ("$req\r\n", $key);
}

# one HTTP response: { status, headers => {lc name => value}, body, res }
# (res: a Mojo::Message::Response for FleetStack::check_error)
sub read_response {
    my ($c, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    until ($c->{buf} =~ /\r\n\r\n/) {
        return { status => 0, error => $c->{eof} ? 'EOF' : 'timeout' } unless fill($c, $deadline);
    }
    $c->{buf} =~ s/\A(.*?\r\n)\r\n//s;
    my $head = $1;
    my ($status) = $head =~ m{\AHTTP/1\.[01] (\d{3})} or return { status => 0, error => "bad head: $head" };
    my %h;
    for (split /\r\n/, $head) { $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/ }
    my $body = '';
    if ($status != 101 && defined $h{'content-length'}) {
        while (length $c->{buf} < $h{'content-length'}) {
            last unless fill($c, $deadline);
        }
        $body = substr($c->{buf}, 0, $h{'content-length'}, '');
    }
    return { status => $status, headers => \%h, body => $body,
             res => Mojo::Message::Response->new->parse("$head\r\n$body") };
}

# an upgrade on a new (or given) connection; the token as a Bearer header
# unless told otherwise.  Returns the connection with {res} and {key}.
sub ws_connect {
    my ($path, %o) = @_;
    my $c = $o{conn} // raw_connect(ssl => $o{ssl});
    my %h = %{ $o{headers} // {} };
    $h{Authorization} = "Bearer $o{token}" if defined $o{token} && !exists $h{Authorization};
    my ($req, $key) = upgrade_request($path, %h);
    send_bytes($c, $req . ($o{after} // ''));
    $c->{key} = $key;
    $c->{res} = read_response($c);
    return $c;
}

sub upgraded {
    my ($c, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = ok(($c->{res}{status} // 0) == 101
        && ($c->{res}{headers}{'sec-websocket-accept'} // '') eq accept_for($c->{key}), $name);
    diag "got $c->{res}{status} " . ($c->{res}{error} // $c->{res}{body} // '') unless $ok;
    return $ok;
}

# a client frame: masked unless mask => 0; fin => 0 for a fragment; rsv
# (bits 4 2 1 = RSV1 RSV2 RSV3); ext => 2 or 8 forces that length encoding,
# len => N announces N bytes whatever the payload
sub ws_frame {
    my ($opcode, $payload, %o) = @_;
    $payload //= '';
    my $fin = $o{fin} // 1;
    my $mask = $o{mask} // 1;
    my $b0 = ($fin ? 0x80 : 0) | (($o{rsv} // 0) << 4) | $opcode;
    my $len = length $payload;
    my $announce = $o{len} // $len;
    my $ext = $o{ext} // ($announce < 126 ? 0 : $announce <= 0xffff ? 2 : 8);
    my $m = $mask ? 0x80 : 0;
    my $f = pack('C', $b0);
    $f .= $ext == 0 ? pack('C', $m | $announce)
        : $ext == 2 ? pack('Cn', $m | 126, $announce)
        : pack('CQ>', $m | 127, $announce);
    return $f . $payload unless $mask;
    my $key = pack('N', int rand 2**32);
    my $k = substr($key x (int($len / 4) + 1), 0, $len);
    return $f . $key . ($payload ^ $k);
}

sub close_frame { ws_frame(8, pack('n', $_[0]) . ($_[1] // '')) }

# one server frame: { fin, rsv, opcode, masked, payload, code, reason },
# undef at the deadline, { eof => 1 } when the connection is gone
sub read_frame {
    my ($c, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    for (;;) {
        my $b = $c->{buf};
        if (length $b >= 2) {
            my ($b0, $b1) = unpack 'CC', $b;
            my ($len, $hl) = ($b1 & 0x7f, 2);
            if ($len == 126) { $hl = 4; $len = length $b >= 4 ? unpack('x2n', $b) : undef }
            elsif ($len == 127) { $hl = 10; $len = length $b >= 10 ? unpack('x2Q>', $b) : undef }
            $hl += 4 if $b1 & 0x80;
            if (defined $len && length $b >= $hl + $len) {
                my $p = substr($b, $hl, $len);
                if ($b1 & 0x80) {
                    my $key = substr($b, $hl - 4, 4);
                    $p ^= substr($key x (int($len / 4) + 1), 0, $len);
                }
                substr($c->{buf}, 0, $hl + $len, '');
                my $f = { fin => $b0 >> 7, rsv => ($b0 >> 4) & 7, opcode => $b0 & 0x0f,
                          masked => $b1 >> 7, payload => $p };
                if ($f->{opcode} == 8 && $len >= 2) {
                    $f->{code} = unpack 'n', $p;
                    $f->{reason} = substr($p, 2);
                }
                return $f;
            }
        }
        my $r = fill($c, $deadline);
        return { eof => 1 } if defined $r && !$r;
        return undef unless defined $r;
    }
}

# the next frame that is not a ping (pings are answered, and counted)
sub next_frame {
    my ($c, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    for (;;) {
        my $f = read_frame($c, $deadline - time) or return undef;
        return $f unless ($f->{opcode} // -1) == 9;
        $c->{pings}++;
        send_bytes($c, ws_frame(10, $f->{payload}));
    }
}

# the next text message, decoded
sub next_json {
    my ($c, $timeout) = @_;
    my $f = next_frame($c, $timeout) or return undef;
    return { frame => $f } unless ($f->{opcode} // -1) == 1;
    return eval { decode_json($f->{payload}) } // { text => $f->{payload} };
}

# frames until the server's close frame and then until EOF:
# { close => frame or undef, eof => 0/1, frames => [others] }
sub read_until_closed {
    my ($c, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    my %r = (frames => []);
    while (my $f = read_frame($c, $deadline - time)) {
        if ($f->{eof}) { $r{eof} = 1; last }
        if ($f->{opcode} == 8 && !$r{close}) { $r{close} = $f; next }
        push @{ $r{frames} }, $f;
    }
    return \%r;
}

sub closed_with {
    my ($c, $code, $name, $timeout) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = read_until_closed($c, $timeout);
    my $got = $r->{close} ? $r->{close}{code} // 'no code' : 'no close frame';
    is $got, $code, "$name: close frame $code";
    ok $r->{eof}, "$name: then the server closes TCP";
    return $r;
}

# events: published through PostgreSQL; a subscriber that has not got one
# yet gets it again (a worker's LISTEN may still be starting)
my $EVENT = 0;
sub publish {
    my $v = shift;
    $s->psql("SELECT fleet_notify('sensor_data_update', jsonb_build_object("
        . "'sensor_id', 1, 'device_id', 'x', 'value', $v))");
}
sub gets_event {
    my ($c, $timeout) = @_;
    my $v = ++$EVENT;
    my $deadline = time + ($timeout // 15);
    while (time < $deadline) {
        publish($v);
        my $round = time + 1;
        while (time < $round) {
            my $m = next_json($c, $round - time) // next;
            return $m if ref $m eq 'HASH' && ($m->{type} // '') eq 'sensor_data_update'
                      && ($m->{value} // '') eq $v;
            return undef if $m->{frame} && ($m->{frame}{eof} || $m->{frame}{opcode} == 8);
        }
    }
    return undef;
}

sub body_json { my $r = shift; eval { decode_json($r->{body}) } // {} }

# ======================================================================
# the handshake

my $c = ws_connect($PATH, token => $admin, headers => { 'Sec-WebSocket-Key' => 'dGhlIHNhbXBsZSBub25jZQ==' });
is $c->{res}{status}, 101, 'upgrade: 101';
is $c->{res}{headers}{'sec-websocket-accept'}, 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', "the RFC 6455 example key's accept value";
like $c->{res}{headers}{upgrade} // '', qr/^websocket$/i, 'Upgrade: websocket';
like $c->{res}{headers}{connection} // '', qr/\bupgrade\b/i, 'Connection: Upgrade';
ok !exists $c->{res}{headers}{'sec-websocket-protocol'}, 'no subprotocol when none was offered';
ok gets_event($c), 'and events flow';
send_bytes($c, close_frame(1000));
closed_with($c, 1000, 'client close 1000');

# the three ways to give the token
$c = ws_connect("$PATH?access_token=$admin");
upgraded($c, 'token as ?access_token=');
close $c->{sock};
$c = ws_connect($PATH, headers => { 'Sec-WebSocket-Protocol' => "access_token, $admin" });
upgraded($c, 'token as a subprotocol');
is $c->{res}{headers}{'sec-websocket-protocol'}, 'access_token', '... answered with the access_token marker, never the token';
ok gets_event($c), '... and events flow';
close $c->{sock};
$c = ws_connect($PATH, token => $user);
upgraded($c, 'a user (not admin) may open /ws/sensor-data/');
close $c->{sock};
$c = ws_connect($PATH, headers => { 'Sec-WebSocket-Protocol' => "bearer, $admin" });
upgraded($c, 'token as a subprotocol with the bearer marker');
is $c->{res}{headers}{'sec-websocket-protocol'}, 'bearer', '... answered with bearer';
close $c->{sock};
$c = ws_connect($PATH, token => $admin, headers => { 'Sec-WebSocket-Protocol' => 'chat, superchat' });
upgraded($c, 'other subprotocols offered, token in the header');
ok !exists $c->{res}{headers}{'sec-websocket-protocol'}, '... none is chosen (none is spoken)';
close $c->{sock};
for my $t ([ 'Connection: keep-alive, Upgrade (Firefox)', { Connection => 'keep-alive, Upgrade' } ],
           [ 'Upgrade: WebSocket, Connection: upgrade',    { Upgrade => 'WebSocket', Connection => 'upgrade' } ]) {
    $c = ws_connect($PATH, token => $admin, headers => $t->[1]);
    upgraded($c, "$t->[0]: 101");
    close $c->{sock};
}

# refusals: an error envelope with the version this server speaks, no 101
my @refused = (
    [ 'no Upgrade header',            { Upgrade => undef } ],
    [ 'Upgrade: h2c',                 { Upgrade => 'h2c' } ],
    [ 'no Connection: Upgrade',       { Connection => 'keep-alive' } ],
    [ 'version 8',                    { 'Sec-WebSocket-Version' => '8' } ],
    [ 'no Sec-WebSocket-Version',     { 'Sec-WebSocket-Version' => undef } ],
    [ 'no key',                       { 'Sec-WebSocket-Key' => undef } ],
    [ 'key not base64',               { 'Sec-WebSocket-Key' => '!!!!!!!!!!!!!!!!!!!!!!==' } ],
    [ 'key of 15 bytes',              { 'Sec-WebSocket-Key' => encode_base64('x' x 15, '') } ],
    [ 'key of 17 bytes',              { 'Sec-WebSocket-Key' => encode_base64('x' x 17, '') } ],
    [ 'HTTP/1.0',                     { -version => '1.0' } ],
);
for my $t (@refused) {
    my ($name, $h) = @$t;
    my $r = ws_connect($PATH, token => $admin, headers => $h)->{res};
    $s->check_error($r->{res}, 400, 'WEBSOCKET_REQUIRED', $PATH, undef, "$name: 400 WEBSOCKET_REQUIRED");
    is $r->{headers}{'sec-websocket-version'}, '13', "$name: Sec-WebSocket-Version: 13";
}

my $r = ws_connect($PATH, token => $admin, headers => { -method => 'POST', 'Content-Length' => 0 })->{res};
ok +($r->{status} == 400 && body_json($r)->{errorCode} eq 'WEBSOCKET_REQUIRED')
    || ($r->{status} == 405 && body_json($r)->{errorCode} eq 'METHOD_NOT_ALLOWED'),
    'POST: refused (400 WEBSOCKET_REQUIRED or 405 METHOD_NOT_ALLOWED)'
    or diag "$r->{status} $r->{body}";

my %claims = %{ decode_json(decode_base64(((split /\./, $admin)[1] =~ tr/-_/+\//r) . '==')) };
my $expired = $s->make_jwt({ %claims, iat => time - 7200, exp => time - 3600 });
my $forged = $s->make_jwt({ %claims }, secret => 'not-the-secret');
for my $t ([ 'no token',                           {},                       'UNAUTHORIZED' ],
           [ 'an expired token',                   { token => $expired },    'TOKEN_EXPIRED' ],
           [ 'a token signed with another secret', { token => $forged },     'UNAUTHORIZED' ],
           [ 'a garbage token',                    { token => 'garbage' },   'UNAUTHORIZED' ],
           [ 'a garbage ?access_token=',           { query => 'garbage' },   'UNAUTHORIZED' ],
           [ 'a garbage subprotocol token',        { protocol => 'access_token, a.b.c' }, 'UNAUTHORIZED' ]) {
    my ($name, $o, $code) = @$t;
    my $path = $o->{query} ? "$PATH?access_token=$o->{query}" : $PATH;
    my %h = $o->{protocol} ? ('Sec-WebSocket-Protocol' => $o->{protocol}) : ();
    my $res = ws_connect($path, token => $o->{token}, headers => \%h)->{res};
    $s->check_error($res->{res}, 401, $code, $PATH, undef, "$name: 401 $code, no 101");
}
$r = ws_connect('/ws/devices/all', token => $user)->{res};
$s->check_error($r->{res}, 403, 'FORBIDDEN', '/ws/devices/all', undef, "/ws/devices/all with a user's token: 403 FORBIDDEN, no 101");

# ======================================================================
# frames

# messages the stream answers: each row on a connection of its own, its
# bytes as one write or (array) several; the socket stays open (a second
# message is answered too)
sub padded { my $n = shift; my $t = '{"type":"x","pad":"'; $t . ('p' x ($n - length($t) - 2)) . '"}' }
my $long = padded(1024);
my $text = '{"type":"caf' . "\xc3\xa9" . '"}';
my @answered = (
    [ 'a text frame that is not JSON',          ws_frame(1, '{not json'),                      'INVALID_JSON' ],
    [ 'an empty text frame',                    ws_frame(1, ''),                               'INVALID_JSON' ],
    [ 'a binary frame',                         ws_frame(2, '{"type":"sensor_data"}'),         'INVALID_JSON' ],
    [ 'a message of exactly 1k (the limit)',    ws_frame(1, $long),                            'UNKNOWN_TYPE' ],
    [ '1k in two fragments',                    ws_frame(1, substr($long, 0, 500), fin => 0)
                                                . ws_frame(0, substr($long, 500)),             'UNKNOWN_TYPE' ],
    [ 'a character split between fragments',    ws_frame(1, substr($text, 0, 13), fin => 0)
                                                . ws_frame(0, substr($text, 13)),              'UNKNOWN_TYPE' ],
    [ 'empty fragments around the message',     ws_frame(1, '', fin => 0) . ws_frame(0, '{"type":1}', fin => 0)
                                                . ws_frame(0, ''),                             'UNKNOWN_TYPE' ],
    [ 'a 300-byte frame written byte by byte',  [ split //, ws_frame(1, padded(300)) ],        'UNKNOWN_TYPE' ],
    [ 'a frame split inside its mask',          [ unpack '(a5)*', ws_frame(1, '{"type":2}') ], 'UNKNOWN_TYPE' ],
);
for my $t (@answered) {
    my ($name, $bytes, $code) = @$t;
    $c = ws_connect($PATH, token => $admin);
    send_bytes($c, $_) for ref $bytes ? @$bytes : $bytes;
    my $m = next_json($c);
    ok +(ref $m eq 'HASH' && ($m->{type} // '') eq 'error' && ($m->{code} // '') eq $code
         && length($m->{message} // '')), "$name: {type: error, code: $code, message}"
        or diag explain $m;
    send_bytes($c, ws_frame(1, '{"type":"again"}'));
    is next_json($c)->{code}, 'UNKNOWN_TYPE', "$name: the socket stays open, the next one is answered";
    close $c->{sock};
}

# a message in three fragments with a ping between them
$c = ws_connect($PATH, token => $admin);
send_bytes($c, ws_frame(1, '{"type":', fin => 0) . ws_frame(9, 'ping-in-between')
             . ws_frame(0, '"no', fin => 0) . ws_frame(0, 'pe"}'));
my $f = read_frame($c);
ok $f && $f->{opcode} == 10 && $f->{payload} eq 'ping-in-between' && $f->{fin} && !$f->{masked},
    'a ping between fragments: a pong with its payload, unmasked';
my $m = next_json($c);
is $m->{code}, 'UNKNOWN_TYPE', 'the fragments are one message: {"type":"nope"} is UNKNOWN_TYPE';
send_bytes($c, ws_frame(9, ''));
$f = read_frame($c);
ok $f && $f->{opcode} == 10 && $f->{payload} eq '', 'an empty ping: an empty pong';
send_bytes($c, ws_frame(10, 'unsolicited'));
send_bytes($c, ws_frame(1, '[]'));
is next_json($c)->{code}, 'INVALID_JSON', 'an unsolicited pong is ignored';
send_bytes($c, ws_frame(8, ''));
my $rc = read_until_closed($c);
ok $rc->{close} && $rc->{close}{payload} eq '' && $rc->{eof}, 'a close without a code: an empty close back, TCP closed';

# protocol errors: a close frame with the code, then the server closes TCP
my $garbage = "this is not a WebSocket frame\r\n" . join('', map { chr int rand 256 } 1 .. 64);
my @errors = (
    [ 'unmasked client frame',                    ws_frame(1, '{}', mask => 0),             1002 ],
    [ 'RSV1 set (no extension negotiated)',       ws_frame(1, '{}', rsv => 4),              1002 ],
    [ 'RSV3 set',                                 ws_frame(1, '{}', rsv => 1),              1002 ],
    [ 'unknown opcode 3',                         ws_frame(3, 'x'),                         1002 ],
    [ 'continuation without a message',           ws_frame(0, 'x'),                         1002 ],
    [ 'a text frame inside a fragmented message', ws_frame(1, 'a', fin => 0) . ws_frame(1, 'b'), 1002 ],
    [ 'fragmented ping',                          ws_frame(9, 'x', fin => 0),               1002 ],
    [ 'ping over 125 bytes',                      ws_frame(9, 'p' x 126),                   1002 ],
    [ '16-bit length for 5 bytes',                ws_frame(1, 'x' x 5, ext => 2),           1002 ],
    [ '64-bit length for 200 bytes',              ws_frame(1, 'x' x 200, ext => 8),         1002 ],
    [ '64-bit length with its top bit set',       ws_frame(1, 'x', ext => 8, len => 2**63), 1002 ],
    [ 'message of 1025 bytes (limit 1k)',         ws_frame(1, 'x' x 1025),                  1009 ],
    [ 'announcing 2**40 bytes',                   ws_frame(1, 'x', len => 2**40),           1009 ],
    [ 'close with code 1005 on the wire',         close_frame(1005),                        1002 ],
    [ 'close with code 999',                      close_frame(999),                         1002 ],
    [ 'close with a one-byte payload',            ws_frame(8, "\x03"),                      1002 ],
    [ 'message of 2k (fleet_ws_max_message 1k)',  ws_frame(1, 'x' x 2048),                  1009 ],
    [ '2k in three fragments',                    ws_frame(1, 'x' x 700, fin => 0) . ws_frame(0, 'x' x 700, fin => 0)
                                                  . ws_frame(0, 'x' x 700),                 1009 ],
    [ 'invalid UTF-8 in a text frame',            ws_frame(1, qq({"type":"\xc3\x28"})),     1007 ],
    [ 'UTF-8 encoded surrogate',                  ws_frame(1, "\xed\xa0\x80"),              1007 ],
    [ 'close reason not UTF-8',                   close_frame(1000, "\xff"),                1007 ],
    [ 'garbage',                                  $garbage,                                 1002 ],
);
for my $t (@errors) {
    my ($name, $bytes, $code) = @$t;
    my $other = $name eq 'garbage' ? ws_connect($PATH, token => $admin) : undef;
    $c = ws_connect($PATH, token => $admin);
    send_bytes($c, $bytes);
    closed_with($c, $code, $name);
    next unless $other;
    # meanwhile, another client on the same room and plain HTTP are fine
    ok gets_event($other), 'garbage on one connection: another client on the same room still gets events';
    is $s->ua->get($s->url('/healthz'))->res->code, 200, '... and plain HTTP is served';
    close $other->{sock};
}

$c = ws_connect($PATH, token => $admin);
send_bytes($c, close_frame(1000, 'bye'));
$rc = closed_with($c, 1000, 'client close 1000 with a reason');
ok !@{ $rc->{frames} }, '... and nothing else after it';

$c = ws_connect($PATH, token => $admin);
send_bytes($c, close_frame(4000));
closed_with($c, 4000, 'client close 4000 (private use) is echoed');

$c = ws_connect($PATH, token => $admin);
send_bytes($c, ws_frame(9, 'q' x 125));
$f = read_frame($c);
ok $f && $f->{opcode} == 10 && $f->{payload} eq 'q' x 125, 'a ping of 125 bytes (the most): the same pong';
send_bytes($c, close_frame(1001) . ws_frame(1, '{"type":"after close"}'));
$rc = closed_with($c, 1001, 'client close 1001 followed by a message');
ok !@{ $rc->{frames} }, '... the message after the close is ignored';

# a frame in the same write as the upgrade request
$c = ws_connect($PATH, token => $admin, after => ws_frame(1, '{"type":"pipelined"}'));
upgraded($c, 'upgrade with a frame right behind it');
$m = next_json($c);
is $m->{code}, 'UNKNOWN_TYPE', '... the frame is processed';
send_bytes($c, close_frame(1000));
closed_with($c, 1000, '... then a normal close');

for my $t ([ 'a close frame behind the upgrade request', close_frame(1000), 1000 ],
           [ 'an unmasked frame behind the upgrade request', ws_frame(1, '{}', mask => 0), 1002 ]) {
    $c = ws_connect($PATH, token => $admin, after => $t->[1]);
    upgraded($c, "$t->[0]: 101");
    closed_with($c, $t->[2], $t->[0]);
}

# the upgrade request and its frame in two writes that split the frame
$c = raw_connect();
my ($req, $key) = upgrade_request($PATH, Authorization => "Bearer $admin");
my $fr = ws_frame(1, '{"type":"split"}');
send_bytes($c, $req . substr($fr, 0, 3));
$c->{key} = $key;
$c->{res} = read_response($c);
upgraded($c, 'upgrade with half a frame behind it');
send_bytes($c, substr($fr, 3));
is next_json($c)->{code}, 'UNKNOWN_TYPE', '... the rest completes it';
close $c->{sock};

# ======================================================================
# rate limiting (fleet_ws_message_rate 2, burst 3)

$c = ws_connect($PATH, token => $admin);
send_bytes($c, join '', map { ws_frame(1, 'x') } 1 .. 6);
my %codes;
for (1 .. 6) {
    my $m = next_json($c);
    $codes{ ref $m eq 'HASH' ? $m->{code} // ($m->{frame} ? "frame $m->{frame}{opcode}" : 'none') : 'none' }++;
}
ok $codes{RATE_LIMITED}, "6 messages at once: some RATE_LIMITED ($codes{RATE_LIMITED})";
is join(',', sort keys %codes), 'INVALID_JSON,RATE_LIMITED', '... the others answered as usual, none lost'
    or diag explain \%codes;
send_bytes($c, ws_frame(9, 'still'));
$f = read_frame($c);
ok $f && $f->{opcode} == 10, '... and the connection stays open';
close $c->{sock};

$c = ws_connect($PATH, token => $admin);
send_bytes($c, join '', map { ws_frame(1, 'x') } 1 .. 30);
$rc = read_until_closed($c);
is $rc->{close} && $rc->{close}{code}, 1008, '30 messages at once: flooding, close 1008';
ok $rc->{eof}, '... TCP closed';
ok +(grep { $_->{opcode} == 1 && $_->{payload} =~ /RATE_LIMITED/ } @{ $rc->{frames} }),
    '... after some RATE_LIMITED answers';

# ======================================================================
# a keep-alive request, then an upgrade on the same connection

$c = raw_connect();
send_bytes($c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n");
$r = read_response($c);
is $r->{status}, 200, 'GET /healthz with keep-alive';
ws_connect($PATH, token => $admin, conn => $c);
upgraded($c, '... then an upgrade on the same connection: 101');
ok gets_event($c), '... and events flow';
send_bytes($c, ws_frame(1, '{'));
is next_json($c)->{code}, 'INVALID_JSON', '... and messages are answered';
close $c->{sock};

# big headers (nginx's large header buffers) and a frame in the same write
my $cookie = 'session=' . ('c' x 3000);
$c = ws_connect($PATH, token => $admin, headers => { Cookie => $cookie }, after => ws_frame(1, '{"type":"big"}'));
upgraded($c, 'an upgrade with a 3k header and a frame behind it');
is next_json($c)->{code}, 'UNKNOWN_TYPE', '... the frame is answered';
ok gets_event($c), '... and events flow';
close $c->{sock};

$c = raw_connect();
send_bytes($c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: $cookie\r\n\r\n");
is read_response($c)->{status}, 200, 'a keep-alive request with a 3k header';
ws_connect($PATH, token => $admin, conn => $c, headers => { Cookie => $cookie }, after => ws_frame(1, '{"type":"big2"}'));
upgraded($c, '... then an upgrade with a 3k header and a frame on the same connection');
is next_json($c)->{code}, 'UNKNOWN_TYPE', '... the frame is answered';
ok gets_event($c), '... and events flow';
close $c->{sock};

# the same three in one write: request, upgrade, frame
$c = raw_connect();
($req, $key) = upgrade_request($PATH, Authorization => "Bearer $admin");
send_bytes($c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" . $req . ws_frame(1, '{"type":"piped"}'));
is read_response($c)->{status}, 200, 'pipelined: GET /healthz, upgrade and a frame in one write: 200';
$c->{key} = $key;
$c->{res} = read_response($c);
upgraded($c, '... then 101');
is next_json($c)->{code}, 'UNKNOWN_TYPE', '... then the frame is answered';
ok gets_event($c), '... and events flow';
close $c->{sock};

# ======================================================================
# a real client: npm ws, the token as a subprotocol

SKIP: {
    my $node = `sh -c 'command -v node' 2>/dev/null`;
    chomp $node;
    my $modules = "$FindBin::Bin/../scripts/node/node_modules";
    fail('node is required under scripts/test') if !$node && $ENV{FLEET_REQUIRE_CLIENTS};
    fail('npm ws is required under scripts/test')
        if !-f "$modules/ws/package.json" && $ENV{FLEET_REQUIRE_CLIENTS};
    skip 'node is not installed', 6 unless $node;
    skip "npm ws is missing in $modules (scripts/lib/common.sh fleet_node_deps)", 6 unless -f "$modules/ws/package.json";
    local $ENV{NODE_PATH} = $modules;
    (my $url = $s->url($PATH)) =~ s/^http/ws/;
    my $pid = open(my $fh, '-|', $node, "$FindBin::Bin/node/ws-client.js", $url, $admin)
        or die "node: $!";
    my ($buf, @ev) = ('');
    my $next_event = sub {
        my ($want, $timeout, $tick) = @_;
        my $deadline = time + $timeout;
        while (time < $deadline) {
            while ($buf =~ s/\A([^\n]*)\n//) {
                my $e = eval { decode_json($1) } // { event => 'bad line', line => $1 };
                push @ev, $e;
                return $e if $e->{event} eq $want || $e->{event} =~ /^(close|timeout|unexpected-response)$/;
            }
            $tick->() if $tick;
            next unless IO::Select->new($fh)->can_read(0.5);
            sysread($fh, $buf, 4096, length $buf) or last;
        }
        return { event => 'none' };
    };
    my $e = $next_event->('open', 10);
    is $e->{event}, 'open', 'ws: connected with new WebSocket(url, ["access_token", token])';
    is $e->{protocol}, 'access_token', "ws: ws.protocol is 'access_token'";
    my $v = ++$EVENT;
    my $last = 0;
    $e = $next_event->('message', 15, sub { if (time - $last > 1) { publish($v); $last = time } });
    is $e->{data}{value}, $v, 'ws: an event published through PostgreSQL arrives';
    $e = $next_event->('pong', 10);
    is_deeply [ @$e{qw(event data)} ], [ 'pong', 'fleet-ping' ], "ws: ws.ping() gets a 'pong' with the payload";
    $e = $next_event->('close', 10);
    is_deeply [ @$e{qw(event code)} ], [ 'close', 1000 ], 'ws: close(1000) gets a close event with code 1000';
    # it exits by itself after the close (bounded wait, else stopped)
    my $deadline = time + 5;
    my $reaped;
    sleep 0.05 until ($reaped = waitpid($pid, POSIX::WNOHANG()) == $pid) || time > $deadline;
    my $status = $reaped ? $? : 'still running';
    unless ($reaped) { kill 'TERM', $pid; waitpid $pid, 0 }
    close $fh;
    is $status, 0, 'ws: the client exited by itself, status 0' or diag explain \@ev;
}

# ======================================================================
# TLS (a second listener of the same server)

SKIP: {
    skip 'IO::Socket::SSL is not installed (libio-socket-ssl-perl)', 5 unless $HAVE_SSL;
    skip "openssl could not make a certificate: " . `cat $tmp/openssl.log`, 5 unless $openssl;
    $c = ws_connect($PATH, token => $admin, ssl => 1);
    upgraded($c, 'TLS: upgrade over https');
    ok gets_event($c), 'TLS: events flow';
    send_bytes($c, ws_frame(1, 'x' x 300));
    is next_json($c)->{code}, 'INVALID_JSON', 'TLS: a message is answered';
    send_bytes($c, close_frame(1000));
    closed_with($c, 1000, 'TLS: close');
}

# ======================================================================
# reload: clients are told 1001 and reconnect to the new workers (which
# run with fleet_ws_ping_interval 1s for the next part)

my @held = map { ws_connect($PATH, token => $admin) } 1 .. 3;
push @held, ws_connect($PATH, token => $admin, ssl => 1) if $HAVE_SSL && $openssl;
upgraded($_, 'a client before the reload') for @held;
my $conf = do { local (@ARGV, $/) = ($s->nginx_conf_path); <> };
$conf =~ s/fleet_ws_ping_interval 30s;/fleet_ws_ping_interval 1s;/ or die 'no ping interval in nginx.conf';
open my $cf, '>', $s->nginx_conf_path or die $!;
print $cf $conf;
close $cf;
$s->reload_nginx;
for my $i (0 .. $#held) {
    my $rc = read_until_closed($held[$i], 10);
    my $who = $i == 3 ? 'the TLS client' : "client $i";
    is $rc->{close} && $rc->{close}{code}, 1001, "reload: $who gets close 1001 (going away)";
    ok $rc->{eof}, "reload: $who then sees TCP closed";
}
$c = ws_connect($PATH, token => $admin);
upgraded($c, 'after the reload: a new connection');
ok gets_event($c), '... gets events from the new workers';
close $c->{sock};

# ======================================================================
# server pings (now every second)

my $silent = ws_connect($PATH, token => $admin);      # never reads, never answers
upgraded($silent, 'a client that will never answer');
$c = ws_connect($PATH, token => $admin);
upgraded($c, 'a client that answers pings');
$f = read_frame($c, 10);
ok $f && $f->{opcode} == 9, 'a ping comes within a bounded wait' or diag explain $f;
# several intervals, answering each ping with a pong: still connected
my $pings = 0;
while ($f && ($f->{opcode} // -1) == 9) {
    $pings++;
    send_bytes($c, ws_frame(10, $f->{payload}));
    last if $pings == 4;
    $f = read_frame($c, 5);
}
is $pings, 4, 'answering pongs: connected through 4 pings';
send_bytes($c, ws_frame(1, 'x'));
is next_json($c)->{code}, 'INVALID_JSON', '... and still served';
$rc = read_until_closed($silent, 10);
ok $rc->{eof}, 'the client that never answered is closed (within 10 s of the check)'
    or diag 'frames: ' . scalar @{ $rc->{frames} };
ok +(grep { $_->{opcode} == 9 } @{ $rc->{frames} }), '... after pings it did not answer';
ok !$c->{eof}, 'the answering client is still connected';
send_bytes($c, close_frame(1000));
closed_with($c, 1000, 'the answering client closes normally');

# ======================================================================
# a client that resets its connection while PostgreSQL decides on the
# upgrade: the worker finds it gone when it sends the 101 and must only
# clean up (PostgreSQL is frozen so that the reset comes first)

# the server side of a connection has read everything the client sent
sub server_read_all {
    my $c = shift;
    my $want = sprintf '%04X', $c->{sock}->sockport;
    my $srv = sprintf '%04X', $s->http_port;
    open my $fh, '<', '/proc/net/tcp' or return 1;    # cannot tell: go on
    while (my $line = <$fh>) {
        # sl local rem st tx_queue:rx_queue
        next unless $line =~ /^\s*\d+: [0-9A-F]{8}:$srv [0-9A-F]{8}:$want [0-9A-F]{2} [0-9A-F]{8}:([0-9A-F]{8})/;
        return hex($1) == 0;
    }
    return 0;
}

my @workers = $s->nginx_worker_pids;
my @resets;
$s->freeze_pg;
for my $i (1 .. 4) {
    my $rc = raw_connect();
    my ($req) = upgrade_request("$PATH?reset=$i", Authorization => "Bearer $admin");
    send_bytes($rc, $req);
    push @resets, $rc;
}
my $deadline = time + 10;
sleep 0.05 until time > $deadline || !grep { !server_read_all($_) } @resets;
for my $rc (@resets) {
    setsockopt($rc->{sock}, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));   # close sends RST
    close $rc->{sock};
}
$s->thaw_pg;
# the worker logs each request as it answers it (101 just before sending
# it); a worker that went wrong on one dies right after (bounded waits)
my $access = "@{[ $s->dir ]}/nginx/access.log";
my $logged = sub { scalar(() = do { local (@ARGV, $/) = ($access); <> // '' } =~ m{\?reset=\d+ HTTP/1\.1" \d{3} }g) };
my $died = sub { grep { !kill 0, $_ } @workers };
$deadline = time + 15;
sleep 0.05 until time > $deadline || $logged->() == @resets || $died->();
$deadline = time + 2;
sleep 0.05 until time > $deadline || $died->();
is_deeply [ grep { kill 0, $_ } @workers ], \@workers,
    'clients reset before their 101 went out: every worker survives'
    or diag grep { /exited on signal|double free|free\(\)/ } split /^/, $s->error_log;
$c = ws_connect($PATH, token => $admin);
upgraded($c, '... and a new client is served');
close $c->{sock};

# ======================================================================
# an upgrade PostgreSQL allows while its worker is leaving (a reload came
# in between): the client must not stay on the old worker, which would
# then never exit; it is told 1001 like the others (or refused)

sub leaving_workers {
    my $master = $s->nginx_master_pid;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        next unless $line =~ /^(\d+) \(.*\) (\S) (\d+)/s && $3 == $master && $2 ne 'Z';
        my $pid = $1;
        open my $cf, '<', "/proc/$pid/cmdline" or next;
        push @pids, $pid if (<$cf> // '') =~ /shutting down/;
    }
    return @pids;
}

$s->freeze_pg;
$c = raw_connect();
($req, $key) = upgrade_request("$PATH?during=reload", Authorization => "Bearer $admin");
send_bytes($c, $req);
$deadline = time + 10;
sleep 0.05 until time > $deadline || server_read_all($c);
$s->reload_nginx;
$s->thaw_pg;
$c->{key} = $key;
$c->{res} = read_response($c);
if (($c->{res}{status} // 0) == 101) {
    # answering pings, as a live client does
    my ($close, $end) = (undef, time + 10);
    while (my $f = next_frame($c, $end - time)) {
        last if $f->{eof};
        if ($f->{opcode} == 8) { $close = $f; last }
    }
    is $close && $close->{code}, 1001, 'an upgrade completed in a leaving worker: close 1001 (going away)';
} else {
    ok $c->{res}{status} >= 500, "an upgrade decided in a leaving worker: refused ($c->{res}{status})";
}
close $c->{sock};      # either way: lets a lingering old worker go now
$deadline = time + 10;
sleep 0.05 until time > $deadline || !leaving_workers();
ok !leaving_workers(), '... and the old workers have exited';
$c = ws_connect($PATH, token => $admin);
upgraded($c, '... a new client is served by the new workers');
ok gets_event($c), '... and gets events';
close $c->{sock};

# ======================================================================
# the end: metrics, no crash

my $metrics = $s->ua->get($s->url('/metrics'))->res->body // '';
like $metrics, qr/^# TYPE fleet_websockets gauge$/m, '/metrics: fleet_websockets is a gauge';
like $metrics, qr/^fleet_websockets(\{[^}]*\})? \d+$/m, '/metrics: fleet_websockets has a value';
like $s->error_log, qr/did not answer a ping/, 'the error log says why the silent client went';
$s->assert_no_crash;

done_testing;
