#!/usr/bin/perl
# fleetgate HTTP benchmark: signature-only location and signed need-register
# against plain nginx "return 200", same machine, same run, same nginx.
#
#   bench/http.pl [SECONDS] [CONNECTIONS] [ROUNDS]     (after scripts/build)
#
# Starts its own stack (FleetStack, 2 workers), runs wrk (2 threads) on
# each location in turn, ROUNDS times interleaved (so a noisy neighbour
# hits every location alike), and prints the median requests/s and its
# ratio to the plain baseline.  wrk and the server share the machine's
# cores, as in the issue's reference figures.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

BEGIN { $ENV{FLEET_TEST_TIMEOUT} = 0 }
use FleetStack;

my $secs   = shift // 10;
my $conns  = shift // 50;
my $rounds = shift // 3;
my $pool   = $ENV{FLEET_PG_POOL_SIZE} // 16;

my $s = FleetStack->new(
    durable       => 1,
    pool_size     => $pool,
    device_secret => 'modernchabackdoor',
    extra_server  => q{
        location = /plain { return 200 "ok\n"; }
        location = /signed-only { fleet_signature on; return 200 "ok\n"; }
    },
);

$ENV{FLEET_DEVICE_SECRET} = $s->device_secret;

sub wrk {
    my ($path, $script) = @_;
    my @cmd = ('wrk', '-t2', "-c$conns", "-d${secs}s",
               '-s', "$FindBin::Bin/$script", $s->url($path));
    my $out = qx{@cmd 2>&1};
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "wrk failed:\n$out" unless defined $rps;
    return ($rps, $non2xx // 0, $out);
}

my @rows = (
    [ 'plain nginx return 200 (200-byte POST)', '/plain',       'post200.lua' ],
    [ 'fleet_signature + return 200',           '/signed-only', 'signed.lua' ],
    [ 'need-register (signed, DB write)',
      '/api/v1/devices/need-register', 'register.lua' ],
);

# warm up the pool and the page cache
wrk('/plain', 'post200.lua');

my (%rps, %bad);
for my $round (1 .. $rounds) {
    for my $r (@rows) {
        my ($rps, $bad) = wrk($r->[1], $r->[2]);
        push @{ $rps{$r->[1]} }, $rps;
        $bad{$r->[1]} += $bad;
    }
}

sub median { my @v = sort { $a <=> $b } @_; $v[$#v / 2] }

my $base = median(@{ $rps{ $rows[0][1] } });
printf "%-42s %12s %8s %8s   %s\n", 'location', 'req/s', 'ratio', 'non-2xx',
       'all rounds';
for my $r (@rows) {
    my $m = median(@{ $rps{$r->[1]} });
    printf "%-42s %12.0f %8.2f %8d   %s\n", $r->[0], $m, $m / $base,
           $bad{$r->[1]}, join(' ', map { sprintf '%.0f', $_ } @{ $rps{$r->[1]} });
}

printf "\n%d s per run, %d rounds, %d connections, wrk -t2, nginx 2 workers, "
     . "fleet_pg_pool_size %d, PostgreSQL with fsync on\n", $secs, $rounds, $conns, $pool;
