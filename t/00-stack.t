#!/usr/bin/perl
# The whole stack comes up; /healthz and /metrics answer (SPEC section 10).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json true);
use FleetStack;

my $s = FleetStack->new;
ok $s->http_port, 'stack is up on port ' . $s->http_port;

my $res = $s->ua->get($s->url('/healthz'))->res;
is $res->code, 200, 'GET /healthz -> 200';
like $res->headers->content_type // '', qr{^application/json}, 'healthz is JSON';
my $j = eval { decode_json($res->body) };
is ref $j, 'HASH', 'healthz body is an object' or diag $res->body;
is $j->{status}, 'ok', 'status ok';
ok exists $j->{database} && $j->{database} && ref $j->{database}, 'database: true (a JSON boolean)';
ok exists $j->{bridge} && $j->{bridge} && ref $j->{bridge}, 'bridge: true (a JSON boolean)';

$res = $s->ua->get($s->url('/metrics'))->res;
is $res->code, 200, 'GET /metrics -> 200';
like $res->headers->content_type // '', qr{^text/plain}, 'metrics is text/plain';
like $res->body, qr/^fleet_requests_total(\{[^}]*\})? \d+(\.\d+)?$/m, 'fleet_requests_total has a sample';
# every sample line is well-formed Prometheus text
my @bad = grep { !/^#/ && length && !/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEinfNa]+( \d+)?$/ }
    split /\n/, $res->body;
ok !@bad, 'every sample line is well-formed' or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];

# unknown paths outside /api are nginx's business; the API answers 404 JSON
$res = $s->ua->get($s->url('/api/v1/definitely-not-here'))->res;
is $res->code, 404, 'unknown API route -> 404';

$s->assert_no_crash;
done_testing;
