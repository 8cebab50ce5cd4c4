#!/usr/bin/perl
# PostgreSQL goes away and comes back: requests fail fast with 503 JSON,
# never hang, never crash a worker, and service resumes by itself.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json);
use Mojo::Promise;
use Time::HiRes qw(time sleep);
use FleetStack;

my $s = FleetStack->new(workers => 2);
my $PATH = '/api/v1/devices/need-register';
my $n = 0;
sub register {
    my $chip = sprintf 'DB%06X', ++$n;
    return $s->signed_post($PATH, qq({"chip_id":"$chip","mac_address":"24:6F:28:00:00:01","firmware_version":"v1"}));
}
sub healthz { my $res = $s->ua->get($s->url('/healthz'))->res; ($res, eval { decode_json($res->body) } // {}) }

my @workers = $s->nginx_worker_pids;
is scalar(@workers), 2, 'two workers at start';

is register()->res->code, 200, 'register works with the database up';

# ---- database down
$s->stop_pg('fast');
my $t0 = time;
my $tx = register();
my $took = time - $t0;
$s->check_error($tx, 503, 'SERVICE_UNAVAILABLE', $PATH, undef, 'database down: register -> 503');
cmp_ok $took, '<', 10, sprintf('503 came within 10 s (%.1f s)', $took);

my ($res, $h) = healthz();
is $res->code, 503, 'database down: /healthz -> 503';
ok exists $h->{database} && !$h->{database} && ref $h->{database}, 'healthz: database false'
    or diag $res->body;

# ---- database back
$s->start_pg;
my ($code, $deadline) = (0, time + 20);
while (time < $deadline) {
    $code = register()->res->code // 0;
    last if $code == 200;
    sleep 0.25;
}
is $code, 200, 'register works again within 20 s';
($res) = healthz();
is $res->code, 200, '/healthz -> 200 again';

# ---- a burst of requests while the database restarts: at least 200
# requests, paced so that they span the whole restart (bounded to 30 s)
# (the event loop may reap children itself — EV does — so the child reports
# through a file, not its exit status)
my $done_file = $s->dir . '/restart.done';
my $restarter = fork // die "fork: $!";
if (!$restarter) {
    sleep 0.3;
    eval { $s->restart_pg; 1 } or print STDERR "# restart failed: $@";
    open my $fh, '>', $done_file;
    print $fh $@ ? "failed\n" : "ok\n";
    close $fh;
    POSIX::_exit(0);
}
my (%codes, @bad);
my $ua = $s->ua;
my ($next, $restarted) = (0, 0);
my $TOTAL = 200;
my $burst_t0 = time;
my $watch = Mojo::IOLoop->recurring(0.05 => sub { $restarted ||= -s $done_file ? 1 : 0 });
my $one;
$one = sub {
    return Mojo::Promise->resolve if ($next >= $TOTAL && $restarted) || time - $burst_t0 > 30;
    my $i = $next++;
    my $chip = sprintf 'BU%06X', $i;
    my $body = qq({"chip_id":"$chip","mac_address":"24:6F:28:00:00:02","firmware_version":"v1"});
    return $ua->post_p($s->url($PATH) => { 'Content-Type' => 'application/json', 'x-signature' => $s->sign($body) }
        => $body)->then(sub {
        my $tx = shift;
        my $r = $tx->res;
        my $c = $r->code // 0;
        $codes{$c}++;
        my $j = eval { decode_json($r->body) };
        push @bad, "#$i: " . ($tx->error ? $tx->error->{message} : "status $c") . ' ' . substr($r->body // '', 0, 200)
            unless ($c == 200 || $c == 503) && ref $j eq 'HASH'
                && ($c == 200 || ($j->{errorCode} // '') eq 'SERVICE_UNAVAILABLE');
    })->then(sub { Mojo::Promise->timer(0.03) })->then($one);
};
Mojo::Promise->all(map { $one->() } 1 .. 4)->wait;
Mojo::IOLoop->remove($watch);
waitpid $restarter, 0;
is FleetStack::_slurp($done_file), "ok\n", 'the database restarted during the burst';
my $burst = time - $burst_t0;
my $answered = 0;
$answered += $codes{$_} for keys %codes;
ok !@bad, "all $answered burst responses are 200 or 503 JSON (" . join(', ', map {"$_: $codes{$_}"} sort keys %codes)
    . sprintf(', %.1f s)', $burst) or diag join "\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)];
cmp_ok $answered, '>=', $TOTAL, "at least $TOTAL requests answered";
diag 'no request saw the database down (restart was quicker than the pacing?)' unless $codes{503};

# afterwards the service is back
($code, $deadline) = (0, time + 20);
while (time < $deadline) {
    $code = register()->res->code // 0;
    last if $code == 200;
    sleep 0.25;
}
is $code, 200, 'register works after the burst';

# ---- a database that hangs (processes stopped, connections open): the
# query timeout (5 s) answers 503, the request does not hang
ok $s->freeze_pg, 'PostgreSQL frozen (SIGSTOP)';
my $t1 = time;
$tx = register();
$took = time - $t1;
$s->check_error($tx, 503, 'SERVICE_UNAVAILABLE', $PATH, undef, 'hung database: register -> 503');
cmp_ok $took, '<', 10, sprintf('hung database: 503 within 10 s (%.1f s)', $took);
$t1 = time;
($res, $h) = healthz();
is $res->code, 503, 'hung database: /healthz -> 503';
cmp_ok time - $t1, '<', 10, 'hung database: /healthz answers within 10 s';
$s->thaw_pg;
($code, $deadline) = (0, time + 20);
while (time < $deadline) {
    $code = register()->res->code // 0;
    last if $code == 200;
    sleep 0.25;
}
is $code, 200, 'after the database resumes, register works again within 20 s';

$s->assert_no_crash;
my @now = $s->nginx_worker_pids;
is scalar(@now), 2, 'nginx master still has 2 workers';
is "@now", "@workers", 'the same two workers (none died and respawned)';
done_testing;
