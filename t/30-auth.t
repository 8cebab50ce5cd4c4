#!/usr/bin/perl
# Login and JWT verification (SPEC section 2): HS256 only, exp required and
# enforced, sub must be a known user.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(hmac_sha512);
use Mojo::JSON qw(decode_json encode_json);
use FleetStack;

my $s = FleetStack->new;
my $LOGIN = '/api/v1/auth/login';
my $ME    = '/api/v1/users/me';

sub login_tx { $s->ua->post($s->url($LOGIN) => json => {@_}) }
sub me       { $s->get_auth($ME, $_[0]) }
sub j        { my $r = shift->res; eval { decode_json($r->body) } // {} }

# ---- login
my $tx = login_tx(email => $s->admin_email, password => $s->admin_password);
is $tx->res->code, 200, 'login -> 200' or diag $tx->res->body;
like $tx->res->headers->content_type // '', qr{^application/json}, 'login: JSON';
my $j = j($tx);
ok $j->{success} && ref $j->{success}, 'login: success true';
my $d = $j->{data} // {};
like $d->{token} // '', qr/^[\w-]+\.[\w-]+\.[\w-]+\z/, 'login: token is a JWT';
is $d->{token_type}, 'Bearer', 'login: token_type Bearer';
ok defined $d->{expires_in} && $d->{expires_in} =~ /^\d+\z/ && $d->{expires_in} > 0, 'login: expires_in > 0 (seconds)';
my $u = $d->{user} // {};
is_deeply [sort keys %$u], [qw(email id name role)], 'login: user has id, email, name, role'
    or diag explain $u;
is $u->{email}, $s->admin_email, 'login: user.email';
is $u->{role}, 'admin', 'login: user.role admin';
is "$u->{id}", $s->admin_id, 'login: user.id is the admin id' if defined $s->admin_id;
my $token = $d->{token} // '';

# the token's claims follow the SPEC
my (undef, $payload) = split /\./, $token;
my $claims = eval { decode_json(b64url_decode($payload // '')) } // {};
is $claims->{sub}, "$u->{id}", 'token: sub = user id';
ok !ref $claims->{sub} && $payload && b64url_decode($payload) =~ /"sub"\s*:\s*"/, 'token: sub is a string';
is $claims->{role}, 'admin', 'token: role';
ok $claims->{exp} && $claims->{exp} > time, 'token: exp in the future';

# ---- failed logins
my $t1 = login_tx(email => $s->admin_email, password => 'wrong-password');
$s->check_error($t1, 401, 'UNAUTHORIZED', $LOGIN, undef, 'wrong password -> 401');
my $t2 = login_tx(email => 'nobody@fleet.local', password => 'whatever-123');
$s->check_error($t2, 401, 'UNAUTHORIZED', $LOGIN, undef, 'unknown email -> 401');
is j($t2)->{message}, j($t1)->{message}, 'same message for wrong password and unknown email';

$s->check_error(login_tx(email => $s->admin_email), 400, 'VALIDATION_ERROR', $LOGIN, undef, 'missing password -> 400');
$s->check_error(login_tx(password => 'x'), 400, 'VALIDATION_ERROR', $LOGIN, undef, 'missing email -> 400');
$s->check_error(login_tx(), 400, 'VALIDATION_ERROR', $LOGIN, undef, 'empty object -> 400');

# ---- /users/me
$tx = me($token);
is $tx->res->code, 200, 'GET /users/me with the token -> 200' or diag $tx->res->body;
$j = j($tx);
ok $j->{success} && ref $j->{success}, 'me: success true';
is_deeply [sort keys %{ $j->{data} // {} }], [qw(email id name role)], 'me: id, email, name, role'
    or diag explain $j->{data};
is $j->{data}{email}, $s->admin_email, 'me: email';
is $j->{data}{role}, 'admin', 'me: role';

$s->check_error($s->ua->get($s->url($ME)), 401, 'UNAUTHORIZED', $ME, undef, 'no token -> 401');
$s->check_error($s->ua->get($s->url($ME) => { Authorization => 'Bearer' }), 401, 'UNAUTHORIZED', $ME, undef,
    'empty Bearer -> 401');
$s->check_error($s->ua->get($s->url($ME) => { Authorization => "Basic $token" }), 401, 'UNAUTHORIZED', $ME, undef,
    'wrong scheme -> 401');
$s->check_error(me('not.a.jwt'), 401, undef, $ME, undef, 'garbage token -> 401');

# ---- self-made tokens with the stack's secret
my $admin = $s->admin_id // $u->{id};
my $now = time;
my %good = (sub => "$admin", role => 'admin', iat => $now, exp => $now + 600);

$tx = me($s->make_jwt({%good}));
is $tx->res->code, 200, 'valid self-signed token for the admin -> 200' or diag $tx->res->body;

$s->check_error(me($s->make_jwt({ %good, exp => $now - 60 })), 401, 'TOKEN_EXPIRED', $ME, undef,
    'expired token -> 401 TOKEN_EXPIRED');

my $none = $s->make_jwt({%good}, header => { alg => 'none', typ => 'JWT' });
$none =~ s/[^.]+\z//;
$s->check_error(me($none), 401, undef, $ME, undef, 'alg none, empty signature -> 401');
my $none2 = $s->make_jwt({%good}, header => { alg => 'none', typ => 'JWT' });
$s->check_error(me($none2), 401, undef, $ME, undef, 'alg none with an HS256 signature -> 401');

my $h512 = FleetStack::_b64url(encode_json({ alg => 'HS512', typ => 'JWT' }));
my $p512 = FleetStack::_b64url(encode_json({%good}));
my $hs512 = "$h512.$p512." . FleetStack::_b64url(hmac_sha512("$h512.$p512", $s->jwt_secret));
$s->check_error(me($hs512), 401, undef, $ME, undef, 'HS512 token (validly signed) -> 401');

my $orig = $s->make_jwt({ %good, role => 'user' });
my ($oh, undef, $os) = split /\./, $orig;
my $tampered = join '.', $oh, FleetStack::_b64url(encode_json({ %good, role => 'admin' })), $os;
$s->check_error(me($tampered), 401, undef, $ME, undef, 'tampered payload -> 401');

$s->check_error(me($s->make_jwt({%good}, secret => 'another-secret')), 401, undef, $ME, undef,
    'token signed with another secret -> 401');

my %noexp = %good;
delete $noexp{exp};
$s->check_error(me($s->make_jwt(\%noexp)), 401, undef, $ME, undef, 'missing exp -> 401');
$s->check_error(me($s->make_jwt({ %good, nbf => $now + 600 })), 401, undef, $ME, undef, 'nbf in the future -> 401');
$s->check_error(me($s->make_jwt({ %good, sub => '987654321' })), 401, undef, $ME, undef,
    'sub of a user that does not exist -> 401');

# ---- a plain user
my $uid = $s->create_user('user1@fleet.local', 'user-pass-5678', 'user');
ok $uid, "created user $uid";
my $utoken = $s->login('user1@fleet.local', 'user-pass-5678');
ok $utoken, 'user login';
$tx = me($utoken // '');
is $tx->res->code, 200, 'user token on /users/me -> 200';
is j($tx)->{data}{role}, 'user', 'me: role user';
is j($tx)->{data}{email}, 'user1@fleet.local', 'me: user email';
$tx = me($s->make_jwt({ sub => "$uid", role => 'user', exp => $now + 600 }));
is $tx->res->code, 200, 'self-signed user token -> 200';
is j($tx)->{data}{role}, 'user', 'self-signed user token: role user';

$s->assert_no_crash;
done_testing;

sub b64url_decode {
    my $s = shift;
    $s =~ tr{-_}{+/};
    $s .= '=' x ((4 - length($s) % 4) % 4);
    require MIME::Base64;
    return MIME::Base64::decode_base64($s);
}
