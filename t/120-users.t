#!/usr/bin/perl
# Accounts (SPEC 2 and 9, seed 003's account and admin events): register
# (and fleet_registration off), login and logout (a revoked token is
# refused everywhere a token opens something), the caller's profile, the
# admin's users, roles, maintenance notice and audit log.  Socket.IO
# events are watched with the real npm socket.io-client
# (t/node/sio-listen.js): each arrives in its rooms and nowhere else.
#
# "Nowhere else" without timing: after each step a barrier event goes to
# room "*" (every socket); NOTIFY delivers in commit order, so a socket that
# has the barrier has everything committed before it.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IPC::Open2;
use Time::HiRes qw(time sleep);
use Mojo::JSON qw(decode_json encode_json true false);
use FleetStack;

my $ITER = 20000;
my $s = FleetStack->new(workers => 2, extra_http => "fleet_password_iterations $ITER;");
my $dbh = $s->dbh;

my $REGISTER = '/api/v1/auth/register';
my $LOGIN    = '/api/v1/auth/login';
my $LOGOUT   = '/api/v1/auth/logout';
my $ME       = '/api/v1/users/me';
my $USERS    = '/api/v1/admin/users';
my $MAINT    = '/api/v1/admin/maintenance';
my $AUDIT    = '/api/v1/admin/audit';

sub req {
    my ($method, $path, $token, $json) = @_;
    my %h = $token ? (Authorization => "Bearer $token") : ();
    my $tx = $s->ua->build_tx($method => $s->url($path) => \%h => (defined $json ? (json => $json) : ()));
    return $s->ua->start($tx);
}
sub body { my $j = eval { decode_json($_[0]->res->body) }; ref $j ? $j : {} }
sub user_count { $s->count_rows('users') }

my $admin = $s->admin_token;
my $admin_id = $s->admin_id;
my $svc = $s->make_jwt({ sub => 'svc', role => 'service', exp => time + 3600 });
my $b_id = $s->create_user('bob@fleet.local', 'bob-pass-12345', 'user');
my $bob = $s->login('bob@fleet.local', 'bob-pass-12345');

# ======================================================================
# Socket.IO sockets: admin, alice (registered below), bob

my $node = `sh -c 'command -v node' 2>/dev/null`;
chomp $node;
my $modules = "$FindBin::Bin/../scripts/node/node_modules";
my $SIO = $node && -f "$modules/socket.io-client/package.json";
diag 'node or npm socket.io-client missing: Socket.IO checks skipped' unless $SIO;
fail('node and npm socket.io-client are required under scripts/test (FLEET_REQUIRE_CLIENTS)')
    if !$SIO && $ENV{FLEET_REQUIRE_CLIENTS};

my ($DRV_OUT, $DRV_IN, $DRV_BUF, $DRV_PID, %LINES) = (undef, undef, '');
if ($SIO) {
    local $ENV{NODE_PATH} = $modules;
    $DRV_PID = open2($DRV_OUT, $DRV_IN, $node, "$FindBin::Bin/node/sio-listen.js");
    $DRV_IN->autoflush(1);
}
END { if ($DRV_PID && kill 0, $DRV_PID) { kill 'TERM', $DRV_PID; waitpid $DRV_PID, 0 } }

sub cmd { print $DRV_IN encode_json($_[0]), "\n" }

sub pump {
    my ($secs) = @_;
    if (IO::Select->new($DRV_OUT)->can_read($secs)) {
        my $n = sysread($DRV_OUT, $DRV_BUF, 1 << 20, length $DRV_BUF);
        die "the socket.io driver exited\n" unless $n;
    }
    while ($DRV_BUF =~ s/\A([^\n]*)\n//) {
        my $l = eval { decode_json($1) } // { t => 'bad line', line => $1 };
        diag "driver: $l->{message}" if $l->{t} eq 'error';
        push @{ $LINES{ $l->{id} // '' } }, $l;
    }
}

sub wait_until {
    my ($secs, $cond) = @_;
    my $end = time + $secs;
    until ($cond->()) {
        return 0 if time > $end;
        pump(0.05);
    }
    return 1;
}

sub lines_of { my ($id, $t) = @_; grep { $_->{t} eq $t } @{ $LINES{$id} // [] } }

my @OPEN;      # the sockets a barrier waits for

sub sio_open {
    my ($id, $token) = @_;
    $LINES{$id} = [];
    cmd({ op => 'open', id => $id, url => 'http://127.0.0.1:' . $s->http_port,
          (defined $token ? (token => $token) : ()), opts => { transports => ['websocket'] } });
    wait_until(15, sub { lines_of($id, 'connect') || lines_of($id, 'connect_error') });
    return scalar lines_of($id, 'connect');
}

# every event each open socket got since the last call, barrier excluded,
# and admin:stats:updated too: its own timer sends it (at most once a
# second after a change), not any step of this test
my $BARRIER = 0;
my %SEEN;
sub take {
    return {} unless $SIO;
    my $n = ++$BARRIER;
    is req(POST => '/api/v1/events', $svc, { room => '*', event => 'test:barrier', data => { n => $n } })->res->code,
        202, "barrier $n posted";
    my $has = sub { grep { $_->{t} eq 'event' && $_->{event} eq 'test:barrier' && $_->{data}{n} == $n }
                    @{ $LINES{ $_[0] } } };
    ok wait_until(15, sub { !grep { !$has->($_) } @OPEN }), "barrier $n reached every socket"
        or diag 'missing at: ' . join ' ', grep { !$has->($_) } @OPEN;
    my %got;
    for my $id (@OPEN) {
        my @l = @{ $LINES{$id} };
        my $from = $SEEN{$id} // 0;
        $SEEN{$id} = scalar @l;
        $got{$id} = [ grep { $_->{t} eq 'event' && $_->{event} !~ /^(?:test:barrier|admin:stats:updated)\z/ }
                      @l[ $from .. $#l ] ];
    }
    return \%got;
}

sub names { my ($got, $id) = @_; [ map { $_->{event} } @{ $got->{$id} // [] } ] }
sub data_of {
    my ($got, $id, $event) = @_;
    my ($e) = grep { $_->{event} eq $event } @{ $got->{$id} // [] };
    return $e ? $e->{data} : undef;
}

# $want: { socket => [event names] } for every open socket
sub events_are {
    my ($got, $want, $name) = @_;
    return unless $SIO;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    for my $id (@OPEN) {
        is_deeply names($got, $id), $want->{$id} // [], "$name: socket $id"
            or diag explain $got->{$id};
    }
}

sub iso_ok { like $_[0] // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/, $_[1] }

if ($SIO) {
    ok sio_open('admin', $admin), 'admin socket connected';
    ok sio_open('bob', $bob), 'bob socket connected';
    @OPEN = qw(admin bob);
    take();
}

# ======================================================================
# register

my $users_before = user_count();
my $tx = req(POST => $REGISTER, undef, { email => 'Alice@Fleet.Local', password => 'alice-pass-1234', name => 'Alice' });
is $tx->res->code, 201, 'register -> 201' or diag $tx->res->body;
my $j = body($tx);
ok $j->{success} && ref $j->{success}, 'register: success true';
is $j->{message}, 'Registration successful', 'register: message';
my $d = $j->{data} // {};
is_deeply [sort keys %$d], [qw(expires_in token token_type user)], "register: login's shape";
like $d->{token} // '', qr/^[\w-]+\.[\w-]+\.[\w-]+\z/, 'register: token is a JWT';
is $d->{token_type}, 'Bearer', 'register: token_type';
is $d->{expires_in}, 3600, 'register: expires_in (fleet_jwt_ttl)';
is_deeply [sort keys %{ $d->{user} // {} }], [qw(email id name role)], 'register: user has id, email, name, role';
is_deeply [@{ $d->{user} }{qw(email name role)}], ['Alice@Fleet.Local', 'Alice', 'user'], 'register: the user as given, role user';
like $d->{user}{id} // '', qr/^\d+\z/, 'register: id is a string of digits';
my $a_id = $d->{user}{id};
my $alice_reg = $d->{token};
is user_count(), $users_before + 1, 'one user stored';

$tx = req(GET => $ME, $alice_reg);
is $tx->res->code, 200, "the registration's token opens /users/me";
is body($tx)->{data}{email}, 'Alice@Fleet.Local', 'me: the new account';

my ($hash) = $dbh->selectrow_array('SELECT password_hash FROM users WHERE id = ?', undef, $a_id);
like $hash, qr/^pbkdf2_sha256\$$ITER\$\w{22}\$[A-Za-z0-9+\/]{43}=\z/,
    "stored as PBKDF2 with fleet_password_iterations ($ITER)";
unlike $hash, qr/alice-pass/, 'the password itself is not stored';

my $alice = $s->login('alice@fleet.local', 'alice-pass-1234');
ok $alice, 'the registered user logs in (email case-insensitive)';

$s->check_error(req(POST => $REGISTER, undef, { email => 'alice@FLEET.local', password => 'other-pass-123', name => 'A2' }),
    409, 'CONFLICT', $REGISTER, 'an account with this email already exists', 'same email, other case -> 409');
$s->check_error(req(POST => $REGISTER, undef, { email => 'admin@fleet.local', password => 'other-pass-123', name => 'A2' }),
    409, 'CONFLICT', $REGISTER, 'an account with this email already exists', "the admin's email -> 409");

my @bad = (
    [ {}, 'email is required' ],
    [ { password => 'alice-pass-1234', name => 'X' }, 'email is required' ],
    [ { email => 'x@example.com', name => 'X' }, 'password is required' ],
    [ { email => 'x@example.com', password => 'x-pass-12345' }, 'name is required' ],
    [ { email => 42, password => 'x-pass-12345', name => 'X' }, 'email must be a string' ],
    [ { email => 'x@example.com', password => 12345678, name => 'X' }, 'password must be a string' ],
    [ { email => 'x@example.com', password => 'x-pass-12345', name => ['X'] }, 'name must be a string' ],
    [ { email => 'not-an-email', password => 'x-pass-12345', name => 'X' }, 'email must be an email address (name@example.com)' ],
    [ { email => 'x@localhost', password => 'x-pass-12345', name => 'X' }, 'email must be an email address (name@example.com)' ],
    [ { email => 'x y@example.com', password => 'x-pass-12345', name => 'X' }, 'email must be an email address (name@example.com)' ],
    [ { email => ('e' x 250) . '@x.io', password => 'x-pass-12345', name => 'X' }, 'email must be at most 254 characters' ],
    [ { email => 'x@example.com', password => 'short', name => 'X' }, 'password must be at least 8 characters' ],
    [ { email => 'x@example.com', password => 'Password123', name => 'X' }, 'password is too common: choose another one' ],
    [ { email => 'x@example.com', password => 'zzzzzzzzzz', name => 'X' }, 'password must not be one character repeated' ],
    [ { email => 'xavier.dupont@example.com', password => 'Xavier.Dupont', name => 'X' }, 'password must not be the email address' ],
    [ { email => 'x@example.com', password => 'p' x 1025, name => 'X' }, 'password must be at most 1024 characters' ],
    [ { email => 'x@example.com', password => 'x-pass-12345', name => '' }, 'name must not be empty' ],
    [ { email => 'x@example.com', password => 'x-pass-12345', name => '    ' }, 'name must not be blank' ],
    [ { email => 'x@example.com', password => 'x-pass-12345', name => "a\tb" }, 'name must not contain control characters' ],
    [ { email => 'x@example.com', password => 'x-pass-12345', name => 'n' x 101 }, 'name must be at most 100 characters' ],
    [ { email => 'x@example.com', password => 'x-pass-12345', name => 'X', role => 'admin' },
      'only email, password and name can be given' ],
);
for my $b (@bad) {
    $s->check_error(req(POST => $REGISTER, undef, $b->[0]), 400, 'VALIDATION_ERROR', $REGISTER, $b->[1],
        "register refused: $b->[1]");
}
$s->check_error($s->ua->post($s->url($REGISTER) => { 'Content-Type' => 'application/json' } => '{"email":'),
    400, 'INVALID_JSON', $REGISTER, undef, 'register: bad JSON -> 400 INVALID_JSON');
$tx = req(POST => $REGISTER, undef, { email => 'ok@example.com', password => "\x{1F511}\x{1F512}" x 4, name => "R\x{e9}mi" });
is $tx->res->code, 201, 'a password of 8 emoji (32 bytes) and a UTF-8 name are fine' or diag $tx->res->body;
is body($tx)->{data}{user}{name}, "R\x{e9}mi", 'UTF-8 name kept';
ok $s->login('ok@example.com', "\x{1F511}\x{1F512}" x 4), 'and the emoji password logs in';
is user_count(), $users_before + 2, 'refused registrations stored nothing';

my $got = take();
events_are($got, { admin => [ 'admin:user:registered', 'user:logged_in', 'admin:user:registered', 'user:logged_in' ] },
    'registrations and logins (admin only: nobody else is in those rooms)');
if ($SIO) {
    my $reg = data_of($got, 'admin', 'admin:user:registered');
    is_deeply [ @{ $reg->{user} // {} }{qw(id email name role)} ], [ $a_id, 'Alice@Fleet.Local', 'Alice', 'user' ],
        'admin:user:registered {user} (the trigger of 004, once per account)';
    my $in = data_of($got, 'admin', 'user:logged_in');
    is_deeply $in->{user}, { id => $a_id, email => 'Alice@Fleet.Local', name => 'Alice', role => 'user' },
        'user:logged_in {user: {id, email, name, role}}';
    iso_ok($in->{at}, 'user:logged_in {at}');
    unlike encode_json($got), qr/pbkdf2|password/i, 'no password or hash in any event';
}

# ======================================================================
# login and logout events, in the user's own room and admin's

if ($SIO) {
    ok sio_open('alice', $alice), 'alice socket connected';
    @OPEN = qw(admin alice bob);
    take();
}
my $alice2 = $s->login('alice@fleet.local', 'alice-pass-1234');
ok $alice2, 'alice signs in on a second device';
$got = take();
events_are($got, { admin => ['user:logged_in'], alice => ['user:logged_in'] }, "alice's login: her room and admin");
is data_of($got, 'alice', 'user:logged_in')->{user}{id}, $a_id, "alice's tabs learn of the login" if $SIO;

$tx = req(POST => $LOGOUT, $alice2);
is $tx->res->code, 200, 'logout -> 200' or diag $tx->res->body;
is_deeply body($tx), { success => true, data => undef, message => 'Logged out successfully' }, 'logout body';
$got = take();
events_are($got, { admin => ['user:logged_out'], alice => ['user:logged_out'] }, "alice's logout: her room and admin");
if ($SIO) {
    my $out = data_of($got, 'alice', 'user:logged_out');
    is_deeply $out->{user}, { id => $a_id, email => 'Alice@Fleet.Local', name => 'Alice', role => 'user' },
        'user:logged_out {user}';
    iso_ok($out->{at}, 'user:logged_out {at}');
}

# the logged-out token is refused everywhere; the other one still works
my ($claims) = $alice2 =~ /^[^.]+\.([^.]+)\./;
$claims = decode_json(b64url_decode($claims));
my ($rjti, $rexp) = $dbh->selectrow_array(q{SELECT jti, extract(epoch FROM exp)::bigint FROM revoked_tokens WHERE user_id = ?},
    undef, $a_id);
is $rjti, $claims->{jti}, "the token's jti is on the revocation list";
is $rexp, $claims->{exp}, '... until its exp';
my $REVOKED = 'token has been revoked (logged out): sign in again';
$s->check_error(req(GET => $ME, $alice2), 401, 'UNAUTHORIZED', $ME, $REVOKED, 'revoked: GET /users/me');
$s->check_error(req(PATCH => $ME, $alice2, { name => 'Mallory' }), 401, 'UNAUTHORIZED', $ME, $REVOKED, 'revoked: PATCH /users/me');
$s->check_error(req(GET => '/api/v1/devices', $alice2), 401, 'UNAUTHORIZED', '/api/v1/devices', $REVOKED,
    'revoked: GET /devices');
$s->check_error(req(POST => '/api/v1/devices/claim', $alice2, { pin => '1234' }), 401, 'UNAUTHORIZED', undef, $REVOKED,
    'revoked: POST /devices/claim');
$s->check_error(req(GET => '/api/v1/commands/cmd-x', $alice2), 401, 'UNAUTHORIZED', undef, $REVOKED,
    'revoked: GET /commands/{id}');
$s->check_error(req(GET => '/api/v1/devices/bulk-events/setup-x', $alice2), 401, 'UNAUTHORIZED', undef, $REVOKED,
    'revoked: an SSE stream');
$s->check_error(req(POST => $LOGOUT, $alice2), 401, 'UNAUTHORIZED', $LOGOUT, $REVOKED, 'revoked: logout again');
my $ws = $s->raw_http("GET /ws/sensor-data/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $alice2\r\n"
    . "Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    . "Sec-WebSocket-Version: 13\r\n\r\n", timeout => 5);
is $ws->{status}, 401, 'revoked: a WebSocket upgrade -> 401';
is $ws->{json}{message}, $REVOKED, 'revoked: WebSocket refusal message';
$ws = $s->raw_http("GET /ws/sensor-data/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $alice\r\n"
    . "Upgrade: websocket\r\nConnection: Upgrade, close\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    . "Sec-WebSocket-Version: 13\r\n\r\n", timeout => 3);
is $ws->{status}, 101, 'her other token still upgrades';
is req(GET => $ME, $alice)->res->code, 200, 'her other token still opens /users/me';
if ($SIO) {
    ok !sio_open('revoked', $alice2), 'revoked: Socket.IO CONNECT refused';
    is +(lines_of('revoked', 'connect_error'))[0]{message}, 'token has been revoked', 'revoked: connect_error message';
    ok lines_of('alice', 'connect') && !lines_of('alice', 'disconnect'),
        'a socket opened before the logout stays (as it outlives exp)';
}

# a token without jti (an external issuer's) is revoked by its digest
my $ext = $s->make_jwt({ sub => "$a_id", role => 'user', iat => time, exp => time + 600 });
my $ext2 = $s->make_jwt({ sub => "$a_id", role => 'user', iat => time - 1, exp => time + 600 });
is req(GET => $ME, $ext)->res->code, 200, 'external token without jti works';
is req(POST => $LOGOUT, $ext)->res->code, 200, '... and logs out';
$s->check_error(req(GET => $ME, $ext), 401, 'UNAUTHORIZED', $ME, $REVOKED, '... then it is refused');
is req(GET => $ME, $ext2)->res->code, 200, 'another jti-less token of the same user is not';
like $s->psql(q{SELECT jti FROM revoked_tokens WHERE jti LIKE 'sha256:%'}), qr/^sha256:[0-9a-f]{48}$/m,
    'revoked as sha256:<digest>';
$s->check_error(req(POST => $LOGOUT, $s->make_jwt({ sub => "$a_id", role => 'user', exp => time - 10 })),
    401, 'TOKEN_EXPIRED', $LOGOUT, undef, 'an expired token cannot log out (it is refused already)');
$s->check_error(req(POST => $LOGOUT), 401, 'UNAUTHORIZED', $LOGOUT, 'a bearer token is required', 'logout without a token');

# revocations whose token expired are swept by the next logout
$s->psql(q{INSERT INTO revoked_tokens (jti, user_id, exp) VALUES ('old-1', NULL, now() - interval '1 hour'),
           ('old-2', NULL, now() - interval '10 minutes'), ('recent', NULL, now() - interval '1 minute')});
my $bye = $s->login('alice@fleet.local', 'alice-pass-1234');
is req(POST => $LOGOUT, $bye)->res->code, 200, 'another logout';
is $s->psql(q{SELECT string_agg(jti, ',' ORDER BY jti) FROM revoked_tokens WHERE jti IN ('old-1', 'old-2', 'recent')}),
    "recent\n", 'expired revocations swept (5 minutes of clock margin kept)';
$got = take();
events_are($got, { admin => [ ('user:logged_out', 'user:logged_in', 'user:logged_out') ],
                   alice => [ ('user:logged_out', 'user:logged_in', 'user:logged_out') ] },
    'the jti-less logout, a login and a logout: her room and admin');

# ======================================================================
# PATCH /users/me

$tx = req(PATCH => $ME, $alice, { name => 'Alice Martin' });
is $tx->res->code, 200, 'PATCH name -> 200' or diag $tx->res->body;
is_deeply body($tx)->{data}, { id => $a_id, email => 'Alice@Fleet.Local', name => 'Alice Martin', role => 'user' },
    'PATCH answers the user';
is body($tx)->{message}, 'Profile updated successfully', 'PATCH message';
$got = take();
events_are($got, { admin => ['user:profile:updated'], alice => ['user:profile:updated'] },
    'user:profile:updated: her room and admin');
if ($SIO) {
    is_deeply data_of($got, 'alice', 'user:profile:updated'),
        { old => { id => $a_id, email => 'Alice@Fleet.Local', name => 'Alice', role => 'user' },
          new => { id => $a_id, email => 'Alice@Fleet.Local', name => 'Alice Martin', role => 'user' } },
        'user:profile:updated {old, new}';
}

for my $b (
    [ {}, 'nothing to change: give name, email or password' ],
    [ { current_password => 'alice-pass-1234' }, 'nothing to change: give name, email or password' ],
    [ { email => 'alice@new.example' }, 'current_password is required to change the email or the password' ],
    [ { password => 'fresh-pass-777' }, 'current_password is required to change the email or the password' ],
    [ { role => 'admin' }, 'only name, email and password can be changed (with current_password)' ],
    [ { name => undef }, 'name must not be null' ],
    [ { name => 5 }, 'name must be a string' ],
    [ { name => '' }, 'name must not be empty' ],
    [ { name => ' ' }, 'name must not be blank' ],
    [ { email => 'nope', current_password => 'alice-pass-1234' }, 'email must be an email address (name@example.com)' ],
    [ { password => 'short', current_password => 'alice-pass-1234' }, 'password must be at least 8 characters' ],
    [ { password => '12345678', current_password => 'alice-pass-1234' }, 'password is too common: choose another one' ],
) {
    $s->check_error(req(PATCH => $ME, $alice, $b->[0]), 400, 'VALIDATION_ERROR', $ME, $b->[1], "PATCH refused: $b->[1]");
}
$s->check_error(req(PATCH => $ME, $alice, { password => 'fresh-pass-777', current_password => 'wrong-pass-000' }),
    403, 'FORBIDDEN', $ME, 'current_password is incorrect', 'wrong current_password -> 403');
$s->check_error(req(PATCH => $ME, $alice, { email => 'bob@FLEET.local', current_password => 'alice-pass-1234' }),
    409, 'CONFLICT', $ME, 'an account with this email already exists', "bob's email -> 409");
$s->check_error(req(PATCH => $ME, undef, { name => 'x' }), 401, 'UNAUTHORIZED', $ME, undef, 'PATCH without a token');
$s->check_error(req(PATCH => $ME, $svc, { name => 'x' }), 401, 'UNAUTHORIZED', $ME, 'unknown user',
    'a service token has no profile');

$tx = req(PATCH => $ME, $alice, { email => 'alice@new.example', password => 'fresh-pass-777',
                                  current_password => 'alice-pass-1234' });
is $tx->res->code, 200, 'email and password changed with current_password' or diag $tx->res->body;
is body($tx)->{data}{email}, 'alice@new.example', 'new email';
ok !$s->login('alice@fleet.local', 'alice-pass-1234'), 'the old email and password no longer log in';
ok !$s->login('alice@new.example', 'alice-pass-1234'), 'the old password no longer logs in';
my $alice3 = $s->login('alice@new.example', 'fresh-pass-777');
ok $alice3, 'the new ones do';
($hash) = $dbh->selectrow_array('SELECT password_hash FROM users WHERE id = ?', undef, $a_id);
like $hash, qr/^pbkdf2_sha256\$$ITER\$/, 'the new password is hashed the same way';

$tx = req(PATCH => $ME, $alice, { password => 'second-pass-888', current_password => 'fresh-pass-777' });
is $tx->res->code, 200, 'password alone changed';
ok $s->login('alice@new.example', 'second-pass-888'), 'and it logs in';
$got = take();
events_are($got, { admin => [ 'user:profile:updated', 'user:logged_in', 'user:logged_in' ],
                   alice => [ 'user:profile:updated', 'user:logged_in', 'user:logged_in' ] },
    'the email change is an event, the password-only change is not');
if ($SIO) {
    my $p = data_of($got, 'admin', 'user:profile:updated');
    is_deeply [ $p->{old}{email}, $p->{new}{email} ], [ 'Alice@Fleet.Local', 'alice@new.example' ], 'old and new email';
    unlike encode_json($got), qr/pbkdf2|password/i, 'no password or hash in any event';
}

# ======================================================================
# admin: users and roles

for my $route ([GET => $USERS], [PATCH => "$USERS/$b_id", { role => 'admin' }], [POST => $MAINT, { enabled => true }],
               [GET => $AUDIT]) {
    my ($m, $p, $b) = @$route;
    $s->check_error(req($m, $p, $bob, $b), 403, 'FORBIDDEN', $p, 'this route is for admins only', "user: $m $p -> 403");
    $s->check_error(req($m, $p, undef, $b), 401, 'UNAUTHORIZED', $p, 'a bearer token is required', "no token: $m $p -> 401");
}

$tx = req(GET => $USERS, $admin);
is $tx->res->code, 200, 'GET /admin/users';
my $list = body($tx)->{data};
is $list->{total}, user_count(), 'total: every account';
is_deeply [ map { $_->{id} } @{ $list->{items} } ], [ sort { $a <=> $b } map { $_->{id} } @{ $list->{items} } ],
    'ordered by id';
my ($li) = grep { $_->{id} eq $a_id } @{ $list->{items} };
is_deeply [sort keys %$li], [qw(created_at devices email id last_login_at name role updated_at)], 'list item fields';
iso_ok($li->{last_login_at}, 'last_login_at');
unlike $tx->res->body, qr/pbkdf2|password/i, 'no hash in the list';
$list = body(req(GET => "$USERS?limit=1&offset=1", $admin))->{data};
is_deeply [ scalar @{ $list->{items} }, $list->{limit}, $list->{offset} ], [1, 1, 1], 'limit and offset';
$s->check_error(req(GET => "$USERS?limit=0", $admin), 400, 'VALIDATION_ERROR', $USERS,
    'limit must be an integer between 1 and 500');

my $audit0 = $s->count_rows('admin_audit');
$s->check_error(req(PATCH => "$USERS/$admin_id", $admin, { role => 'user' }), 409, 'CONFLICT', "$USERS/$admin_id",
    'you are the last admin: make another user admin before giving up the role', 'the last admin cannot demote themselves');
$s->check_error(req(PATCH => "$USERS/$b_id", $admin, { role => 'root' }), 400, 'VALIDATION_ERROR', undef,
    'role must be admin or user');
$s->check_error(req(PATCH => "$USERS/$b_id", $admin, { role => 'service' }), 400, 'VALIDATION_ERROR', undef,
    'role must be admin or user');
$s->check_error(req(PATCH => "$USERS/$b_id", $admin, {}), 400, 'VALIDATION_ERROR', undef, 'role is required');
$s->check_error(req(PATCH => "$USERS/$b_id", $admin, { role => 'admin', name => 'B' }), 400, 'VALIDATION_ERROR', undef,
    'only role can be changed');
$s->check_error(req(PATCH => "$USERS/999999", $admin, { role => 'admin' }), 404, 'NOT_FOUND', "$USERS/999999",
    'no user 999999');
$s->check_error(req(PATCH => "$USERS/abc", $admin, { role => 'admin' }), 404, 'NOT_FOUND', "$USERS/abc", 'no such user');
$tx = req(PATCH => "$USERS/$b_id", $admin, { role => 'user' });
is_deeply [ $tx->res->code, body($tx)->{message} ], [ 200, 'Role unchanged' ], 'same role: 200, unchanged';
is $s->count_rows('admin_audit'), $audit0, 'refusals and no-ops are not audited';
$got = take();
events_are($got, {}, 'refusals and no-ops emit nothing');

$tx = req(PATCH => "$USERS/$b_id", $admin, { role => 'admin' });
is $tx->res->code, 200, 'admin promotes bob' or diag $tx->res->body;
is body($tx)->{data}{role}, 'admin', 'bob is admin';
$got = take();
events_are($got, { admin => [ 'admin:action', 'user:profile:updated' ], bob => ['user:profile:updated'] },
    "promotion: admin:action to admin only, user:profile:updated to bob's room and admin");
if ($SIO) {
    is_deeply data_of($got, 'admin', 'admin:action'),
        { adminId => "$admin_id", action => 'user_promoted',
          details => { userId => "$b_id", email => 'bob@fleet.local', oldRole => 'user', newRole => 'admin' } },
        'admin:action {adminId, action, details} (seed 003)';
    is_deeply [ data_of($got, 'bob', 'user:profile:updated')->{old}{role}, data_of($got, 'bob', 'user:profile:updated')->{new}{role} ],
        [ 'user', 'admin' ], 'bob learns of his new role';
}

# bob's old token says "user": admin routes need a token that says admin
$s->check_error(req(GET => $USERS, $bob), 403, 'FORBIDDEN', $USERS, undef, "bob's old token is still a user's");
my $bob_admin = $s->login('bob@fleet.local', 'bob-pass-12345');
is req(GET => $USERS, $bob_admin)->res->code, 200, "bob's new token is an admin's";

# bob demotes the first admin, whose admin token then stops working: the
# database's role wins over the token's
$tx = req(PATCH => "$USERS/$admin_id", $bob_admin, { role => 'user' });
is $tx->res->code, 200, 'bob demotes the first admin (two admins: allowed)' or diag $tx->res->body;
$s->check_error(req(GET => $USERS, $admin), 403, 'FORBIDDEN', $USERS, 'this route is for admins only',
    "a demoted admin's token is refused at once");
$s->check_error(req(POST => $MAINT, $admin, { enabled => true }), 403, 'FORBIDDEN', $MAINT, undef,
    "... on every admin route");
$s->check_error(req(PATCH => "$USERS/$b_id", $bob_admin, { role => 'user' }), 409, 'CONFLICT', undef,
    'you are the last admin: make another user admin before giving up the role', 'now bob is the last admin');
is req(PATCH => "$USERS/$admin_id", $bob_admin, { role => 'admin' })->res->code, 200, 'bob promotes the first admin back';
is req(GET => $USERS, $admin)->res->code, 200, 'whose token works again';
is req(PATCH => "$USERS/$b_id", $bob_admin, { role => 'user' })->res->code, 200, 'bob steps down himself (two admins)';
$got = take();
events_are($got, { admin => [ 'user:logged_in', 'admin:action', 'user:profile:updated', 'admin:action',
                              'user:profile:updated', 'admin:action', 'user:profile:updated' ],
                   bob => [ 'user:logged_in', 'user:profile:updated' ] },
    'role changes: admin:action to admin, user:profile:updated to the user and admin');
if ($SIO) {
    is_deeply [ map { "$_->{data}{adminId}:$_->{data}{action}:$_->{data}{details}{userId}" }
                grep { $_->{event} eq 'admin:action' } @{ $got->{admin} } ],
        [ "$b_id:user_demoted:$admin_id", "$b_id:user_promoted:$admin_id", "$b_id:user_demoted:$b_id" ],
        'who did what to whom';
}
is_deeply [ split /\n/, $s->psql(q{SELECT admin_id || ' ' || action || ' ' || target FROM admin_audit ORDER BY id}) ],
    [ "$admin_id user_promoted $b_id", "$b_id user_demoted $admin_id", "$b_id user_promoted $admin_id",
      "$b_id user_demoted $b_id" ], 'each role change is an audit row';

# ======================================================================
# maintenance

for my $b (
    [ {}, 'enabled is required' ],
    [ { enabled => 'yes' }, 'enabled must be a boolean' ],
    [ { enabled => undef }, 'enabled must not be null' ],
    [ { enabled => true, message => 7 }, 'message must be a string' ],
    [ { enabled => true, message => 'm' x 501 }, 'message must be at most 500 characters' ],
    [ { enabled => true, until => 'later' }, 'only enabled and message can be given' ],
) {
    $s->check_error(req(POST => $MAINT, $admin, $b->[0]), 400, 'VALIDATION_ERROR', $MAINT, $b->[1],
        "maintenance refused: $b->[1]");
}
$tx = req(POST => $MAINT, $admin, { enabled => true, message => 'Upgrade at 22:00 UTC' });
is $tx->res->code, 200, 'maintenance on' or diag $tx->res->body;
is_deeply body($tx), { success => true, message => 'Maintenance mode enabled',
                       data => { enabled => true, message => 'Upgrade at 22:00 UTC', adminId => "$admin_id" } },
    'maintenance answer';
is req(POST => $MAINT, $admin, { enabled => false })->res->code, 200, 'maintenance off (no message)';
$got = take();
events_are($got, { admin => [ 'admin:action', 'system:maintenance', 'admin:action', 'system:maintenance' ],
                   alice => [ 'system:maintenance', 'system:maintenance' ],
                   bob => [ 'system:maintenance', 'system:maintenance' ] },
    'system:maintenance to every socket, admin:action to admin only');
if ($SIO) {
    my @m = map { $_->{data} } grep { $_->{event} eq 'system:maintenance' } @{ $got->{bob} };
    is_deeply \@m, [ { enabled => true, message => 'Upgrade at 22:00 UTC', adminId => "$admin_id" },
                     { enabled => false, message => undef, adminId => "$admin_id" } ],
        'system:maintenance {enabled, message, adminId}';
    is_deeply [ map { $_->{data}{action} } grep { $_->{event} eq 'admin:action' } @{ $got->{admin} } ],
        [ 'maintenance_enabled', 'maintenance_disabled' ], 'admin:action for each';
}

# ======================================================================
# audit: owner changes, bulk commands, deletions by an admin

sub register_device {
    my $chip = shift;
    my $r = decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}))->res->body);
    return @{ $r->{data} }{qw(device_id pin)};
}
my ($dev, $pin) = register_device('USERS001');
is req(POST => '/api/v1/devices/claim', $alice, { pin => $pin, name => 'Bay 1' })->res->code, 200, 'alice claims a device';
is req(PATCH => "/api/v1/devices/$dev", $alice, { name => 'Bay 1A' })->res->code, 200, 'alice renames it';
my $n_audit = $s->count_rows('admin_audit');
is req(PATCH => "/api/v1/devices/$dev", $admin, { owner_id => $b_id })->res->code, 200, 'admin gives it to bob';
is req(PATCH => "/api/v1/devices/$dev", $admin, { owner_id => $b_id })->res->code, 200, 'the same owner again';
is req(POST => '/api/v1/devices/bulk-restart', $admin, { device_ids => [$dev] })->res->code, 200, 'admin bulk restart';
is req(POST => '/api/v1/devices/bulk-restart', $bob, { device_ids => [$dev] })->res->code, 200, "bob's own bulk restart";
is req(DELETE => "/api/v1/devices/$dev", $admin)->res->code, 200, 'admin deletes the device';
is $s->count_rows('admin_audit'), $n_audit + 3, "three admin changes audited (not alice's, not bob's, not the no-op)";

$tx = req(GET => $AUDIT, $admin);
is $tx->res->code, 200, 'GET /admin/audit';
my $au = body($tx)->{data};
is $au->{total}, $s->count_rows('admin_audit'), 'audit total';
my @items = @{ $au->{items} };
is_deeply [ map { $_->{action} } @items ],
    [ qw(device_deleted bulk_command device_owner_changed maintenance_disabled maintenance_enabled
         user_demoted user_promoted user_demoted user_promoted) ], 'newest first: every admin action';
is_deeply [sort keys %{ $items[0] }], [qw(action admin_email admin_id at details id target)], 'audit row fields';
is_deeply [ @{ $items[2] }{qw(admin_id admin_email target)} ], [ "$admin_id", 'admin@fleet.local', $dev ],
    'who and on what';
is_deeply $items[2]{details}, { device_id => $dev, old_owner_id => "$a_id", new_owner_id => "$b_id" },
    'owner change details';
my $setup = $items[1]{target};
like $setup, qr/^setup-/, 'the bulk command names its setup';
is_deeply $items[1]{details}, { setup_id => $setup, command => 'RESTART', total_devices => 1 }, 'bulk command details';
is_deeply $items[0]{details}, { device_id => $dev, name => 'Bay 1A', owner_id => "$b_id" }, 'deletion details';
is_deeply $items[3]{details}, { enabled => false, message => undef }, 'maintenance details';
iso_ok($items[0]{at}, 'audit at');
my $page = body(req(GET => "$AUDIT?limit=2&offset=1", $admin))->{data};
is_deeply [ map { $_->{action} } @{ $page->{items} } ], [qw(bulk_command device_owner_changed)], 'audit limit and offset';
$s->check_error(req(GET => "$AUDIT?offset=-1", $admin), 400, 'VALIDATION_ERROR', $AUDIT,
    'offset must be an integer between 0 and 2147483647');

$got = take();
if ($SIO) {
    my @acts = map { $_->{data}{action} } grep { $_->{event} eq 'admin:action' } @{ $got->{admin} };
    is_deeply \@acts, [qw(device_owner_changed bulk_command device_deleted)], 'admin:action for each, to admin';
    ok !grep({ $_->{event} eq 'admin:action' } map { @{ $got->{$_} } } qw(alice bob)), 'and to nobody else';
    my ($bulk) = grep { $_->{event} eq 'admin:action' && $_->{data}{action} eq 'bulk_command' } @{ $got->{admin} };
    is_deeply $bulk->{data}, { adminId => "$admin_id", action => 'bulk_command',
                               details => { setup_id => $setup, command => 'RESTART', total_devices => 1 } },
        'bulk command admin:action';
}

# ======================================================================
# login's password field: 1024 characters of 4 bytes each

$tx = req(POST => $LOGIN, undef, { email => 'bob@fleet.local', password => "\x{1F511}" x 1024 });
$s->check_error($tx, 401, 'UNAUTHORIZED', $LOGIN, 'invalid email or password',
    'login with a 4096-byte password: refused cleanly');

# no password in any log
my $logs = $s->error_log . FleetStack::_slurp($s->dir . '/nginx/access.log')
    . FleetStack::_slurp($s->dir . '/pg/postgresql.log');
for my $pw ('alice-pass-1234', 'fresh-pass-777', 'second-pass-888', 'wrong-pass-000', 'bob-pass-12345') {
    unlike $logs, qr/\Q$pw\E/, "no \"$pw\" in the nginx and PostgreSQL logs";
}

# ======================================================================
# fleet_registration off

cmd({ op => 'exit' }) if $SIO;
my $s2 = FleetStack->new(workers => 1, no_bridge => 1, extra_http => 'fleet_registration off;');
my $n2 = $s2->count_rows('users');
$tx = $s2->ua->post($s2->url($REGISTER) => json => { email => 'eve@example.com', password => 'eve-pass-1234', name => 'Eve' });
$s2->check_error($tx, 403, 'FORBIDDEN', $REGISTER, 'registration is closed', 'fleet_registration off -> 403');
is $s2->count_rows('users'), $n2, 'nothing stored';
ok $s2->login($s2->admin_email, $s2->admin_password), 'login still works there';
$s2->assert_no_crash;
$s2->stop;

$s->assert_no_crash;
done_testing;

sub b64url_decode {
    my $t = shift;
    $t =~ tr{-_}{+/};
    $t .= '=' x ((4 - length($t) % 4) % 4);
    require MIME::Base64;
    return MIME::Base64::decode_base64($t);
}
