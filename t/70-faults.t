#!/usr/bin/perl
# Faults (issue 8): the bridge killed with SIGKILL and restarted, the broker
# restarted, nginx reloaded under load.  Each time: no worker crash, no lost
# rows, service resumes by itself.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json);
use Time::HiRes qw(time sleep);
use POSIX ();
use FleetStack;

my $s = FleetStack->new(workers => 2);
my $PATH = '/api/v1/devices/need-register';

sub healthz {
    my $res = $s->fresh_ua->get($s->url('/healthz'))->res;
    return ($res->code // 0, eval { decode_json($res->body) } // {});
}

# polls /healthz until $want->($code, $json) holds (bounded)
sub wait_health {
    my ($secs, $want) = @_;
    my ($code, $h);
    my $deadline = time + $secs;
    while (time < $deadline) {
        ($code, $h) = healthz();
        return ($code, $h) if $want->($code, $h);
        sleep 0.25;
    }
    return ($code, $h);
}

my ($code, $h) = healthz();
is $code, 200, 'healthy at start';
ok $h->{bridge} && $h->{mqtt}, 'bridge and broker reachable';

# ---- the bridge dies without cleaning up
$s->kill_bridge('KILL');
($code, $h) = wait_health(20, sub { $_[0] == 503 });
is $code, 503, 'bridge killed: /healthz -> 503';
ok !$h->{bridge}, 'healthz: bridge false';
is $s->signed_post($PATH, '{"chip_id":"FAULT1","mac_address":"24:6F:28:00:00:03","firmware_version":"v1"}')
    ->res->code, 200, 'devices still register while the bridge is down';

$s->start_bridge;
($code, $h) = wait_health(20, sub { $_[0] == 200 });
is $code, 200, 'bridge restarted: /healthz -> 200 again (the link reconnects)';

# ---- the broker goes away and comes back
$s->stop_broker;
($code, $h) = wait_health(40, sub { $_[0] == 503 && !$_[1]{mqtt} });
ok !$h->{mqtt}, 'broker down: healthz mqtt false';
is $code, 503, 'broker down: /healthz -> 503';
$s->start_broker;
($code, $h) = wait_health(40, sub { $_[0] == 200 });
is $code, 200, 'broker back: /healthz -> 200 (the bridge reconnected)';
ok $h->{mqtt}, 'healthz: mqtt true';

# ---- nginx reloads while registrations keep coming: every request gets
# an answer, and every 200 is a row
my $reloader = fork // die "fork: $!";
if (!$reloader) {
    my $rc = 0;
    for (1 .. 3) {
        sleep 0.4;
        eval { $s->reload_nginx; 1 } or do { print STDERR "# reload: $@"; $rc = 1 };
    }
    POSIX::_exit($rc);
}

my (%codes, @bad, %ids);
my $t0 = time;
my $i = 0;
my $ua = $s->fresh_ua;
while (time - $t0 < 20) {
    my $chip = sprintf 'RL%06d', ++$i;
    my $body = qq({"chip_id":"$chip","mac_address":"24:6F:28:00:00:04","firmware_version":"v1"});
    # a new connection each time: a keep-alive connection to a worker that
    # is shutting down may be closed between requests, which is normal
    my $tx = $ua->post($s->url($PATH) => { 'Content-Type' => 'application/json',
        'x-signature' => $s->sign($body), Connection => 'close' } => $body);
    my $c = $tx->res->code // 0;
    $codes{$c}++;
    if ($c == 200) {
        $ids{$chip} = decode_json($tx->res->body)->{data}{device_id};
    } else {
        push @bad, "$chip: " . ($tx->error ? $tx->error->{message} : "status $c");
    }
    last if $i >= 300 && waitpid($reloader, POSIX::WNOHANG()) > 0;
}
my $reload_rc = waitpid($reloader, 0) > 0 ? $? >> 8 : 0;
is $reload_rc, 0, 'nginx reloaded three times during the burst';
ok !@bad, "all $i requests answered 200 across the reloads ("
    . join(', ', map { "$_: $codes{$_}" } sort keys %codes) . ')'
    or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];

my $rows = $s->dbh->selectall_hashref(
    q{SELECT chip_id, id FROM devices WHERE chip_id LIKE 'RL%'}, 'chip_id');
my @missing = grep { !$rows->{$_} || $rows->{$_}{id} ne $ids{$_} } keys %ids;
ok !@missing, scalar(keys %ids) . ' answered registrations are all rows with their device_id'
    or diag "missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]";

($code) = healthz();
is $code, 200, 'healthy after the reloads';
is scalar(my @w = $s->nginx_worker_pids), 2, 'two workers after the reloads';
$s->assert_no_crash;

done_testing;
