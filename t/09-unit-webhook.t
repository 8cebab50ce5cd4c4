#!/usr/bin/perl
# Runs the C unit tests of common/fleet_webhook.c (they print TAP themselves).
use strict;
use warnings;
use FindBin;
my $build = $ENV{FLEET_BUILD} // "$FindBin::Bin/../build";
# sanitized runs: pure functions must not leak either
$ENV{ASAN_OPTIONS} = $ENV{FLEET_LEAK_ASAN_OPTIONS} if $ENV{FLEET_LEAK_ASAN_OPTIONS};
exec "$build/unit/test_webhook" or die "cannot run $build/unit/test_webhook: $!";
