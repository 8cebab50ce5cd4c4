#!/usr/bin/perl
# Every nginx worker keeps a LISTEN connection (ARCHITECTURE: PostgreSQL is
# the bus): a NOTIFY on fleet_events reaches both workers.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use FleetStack;

my $s = FleetStack->new(workers => 2);
my $SENT = 5;

sub counters {
    my $ua = $s->fresh_ua;      # a new connection each time: either worker answers
    my $body = $ua->get($s->url('/metrics'))->res->body // '';
    my %c;
    $c{$1} = $2 while $body =~ /^fleet_notify_received_total\{[^}]*worker="(\d+)"[^}]*\} (\d+)/mg;
    return \%c;
}

my $before = counters();
ok exists $before->{0} && exists $before->{1}, 'metrics has fleet_notify_received_total for workers 0 and 1'
    or diag explain $before;
my %base = map { $_ => $before->{$_} // 0 } 0, 1;

# wait (bounded) until both workers' LISTEN sessions exist: healthz answers
# 200 once the database is reachable, but LISTEN may come just after
my $listening = 0;
for (1 .. 50) {
    $listening = $s->psql(q{SELECT count(*) FROM pg_stat_activity WHERE query ~* '^\s*LISTEN'}) + 0;
    last if $listening >= 2;
    sleep 0.2;
}
diag "LISTEN sessions seen in pg_stat_activity: $listening" if $listening < 2;
$s->psql(qq{NOTIFY fleet_events, '{"test":1}'}) for 1 .. $SENT;

my ($c, $deadline) = ({}, time + 10);
while (time < $deadline) {
    $c = counters();
    last if ($c->{0} // 0) - $base{0} >= $SENT && ($c->{1} // 0) - $base{1} >= $SENT;
    sleep 0.2;
}
cmp_ok(($c->{0} // 0) - $base{0}, '>=', $SENT, "worker 0 received the $SENT notifications");
cmp_ok(($c->{1} // 0) - $base{1}, '>=', $SENT, "worker 1 received the $SENT notifications");

# a burst, including a payload near the 8000-byte limit
my $big = 'x' x 7900;
$s->psql(qq{SELECT pg_notify('fleet_events', '{"n":' || i || ',"pad":"$big"}') FROM generate_series(1, 20) i});
$deadline = time + 10;
my $want = $SENT + 20;
while (time < $deadline) {
    $c = counters();
    last if ($c->{0} // 0) - $base{0} >= $want && ($c->{1} // 0) - $base{1} >= $want;
    sleep 0.2;
}
cmp_ok(($c->{0} // 0) - $base{0}, '>=', $want, 'worker 0 received the burst');
cmp_ok(($c->{1} // 0) - $base{1}, '>=', $want, 'worker 1 received the burst');

$s->assert_no_crash;
done_testing;
