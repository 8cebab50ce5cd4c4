#!/usr/bin/perl
# Runs the C unit tests of common/fleet_sig.c (they print TAP themselves).
use strict;
use warnings;
use FindBin;
my $build = $ENV{FLEET_BUILD} // "$FindBin::Bin/../build";
exec "$build/unit/test_sig" or die "cannot run $build/unit/test_sig: $!";
