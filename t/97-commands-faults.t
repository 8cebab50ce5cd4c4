#!/usr/bin/perl
# Commands under faults (SPEC 6, issue 4): the bridge killed with SIGKILL in
# the middle of a bulk and restarted — ACKs sent meanwhile are kept by the
# broker for its persistent session, deadlines still hold, the bulk
# completes; nginx reloaded while a client watches the stream — the old
# worker ends it, the client resumes with Last-Event-ID and gets every event
# exactly once.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Mojo::JSON qw(decode_json);
use Time::HiRes qw(time sleep);
use FleetStack;
use FleetMQTT qw(sign_msg publish wait_for);

BEGIN { $ENV{FLEET_COMMAND_TIMEOUT_S} = 6 }

my $s = FleetStack->new(extra_http => 'fleet_sse_heartbeat 1s;');
my $dbh = $s->dbh;
my $admin = $s->admin_token;

sub register {
    my $chip = shift;
    return decode_json($s->signed_post('/api/v1/devices/need-register',
        qq({"chip_id":"$chip","mac_address":"24:6F:28:AB:3C:91","firmware_version":"v1"}))->res->body)
        ->{data}{device_id};
}
sub status_of { scalar $dbh->selectrow_array('SELECT status FROM commands WHERE id = ?', undef, $_[0]) }
sub ack {
    my ($dev, $cmd, $status, $error) = @_;
    my $m = qq({"command_id":"$cmd","device_id":"$dev","command":"APPLY_CONFIG","status":"$status")
        . (defined $error ? qq(,"error":"$error") : '') . '}';
    publish($s, "server/$dev/ack", sign_msg($s->device_secret, $m));
}
sub parse_sse {
    my @ev;
    for my $block (split /\n\n/, shift) {
        my %e;
        for (split /\n/, $block) { $e{$1} = $2 if /^(id|event|data): (.*)$/ }
        push @ev, \%e if $e{event};
    }
    return @ev;
}
sub watch {
    my ($setup, $file, %h) = @_;
    my $pid = fork // die;
    if (!$pid) {
        exec 'curl', '-sN', '-m', '30', '-H', "Authorization: Bearer $admin",
            (map { ('-H', "$_: $h{$_}") } keys %h), '-o', $file,
            $s->url("/api/v1/devices/bulk-events/$setup");
    }
    return $pid;
}

my @devs = map { register("FLT$_") } 1 .. 3;
my $tx = $s->ua->post($s->url('/api/v1/devices/apply-config') => { Authorization => "Bearer $admin" }
    => json => { device_ids => \@devs, configs => { wash_time => 300 } });
my $setup = decode_json($tx->res->body)->{data}{setup_id};
ok $setup, "bulk $setup created";
my %cmd = map { @$_ } @{ $dbh->selectall_arrayref(
    'SELECT device_id, id FROM commands WHERE setup_id = ?', undef, $setup) };

ok wait_for(10, sub { !grep { status_of($_) ne 'SENT' } values %cmd }), 'the bridge published all three (SENT)';

# a watcher that will see the reload
my $f1 = $s->dir . '/watch1.txt';
my $w1 = watch($setup, $f1);
sleep 0.5;

# ---- the bridge dies mid-bulk; device 1 answers while it is gone
$s->kill_bridge('KILL');
ack($devs[0], $cmd{ $devs[0] }, 'SUCCESS');
is status_of($cmd{ $devs[0] }), 'SENT', 'no bridge: the ACK waits at the broker';

# ---- nginx reloads while the watcher is connected
$s->reload_nginx;
waitpid $w1, 0;
my @first = parse_sse(FleetStack::_slurp($f1));
ok @first >= 1, 'the old worker ended the stream after ' . scalar(@first) . ' event(s)';
isnt $first[-1]{event}, 'results', 'before the bulk was over';

# ---- the bridge comes back: the queued ACK lands, device 2 answers,
# device 3 stays silent and times out
$s->start_bridge;
ok wait_for(15, sub { status_of($cmd{ $devs[0] }) eq 'SUCCESS' }), 'the ACK sent while the bridge was down counts';
ack($devs[1], $cmd{ $devs[1] }, 'FAILED', 'Invalid config format');
ok wait_for(15, sub { status_of($cmd{ $devs[1] }) eq 'FAILED' }), 'device 2 FAILED';
ok wait_for(20, sub { status_of($cmd{ $devs[2] }) eq 'TIMEOUT' }), 'device 3 TIMEOUT: its deadline held across the bridge restart';

# ---- the watcher resumes after the last event it saw
my $f2 = $s->dir . '/watch2.txt';
waitpid watch($setup, $f2, 'Last-Event-ID' => $first[-1]{id}), 0;
my @rest = parse_sse(FleetStack::_slurp($f2));
my @all = (@first, @rest);
my %seen;
ok !(grep { $seen{ $_->{id} }++ } @all), 'no event twice';
is $all[-1]{event}, 'results', 'the resumed stream ends with results';
my $f3 = $s->dir . '/watch3.txt';
waitpid watch($setup, $f3), 0;
my @full = parse_sse(FleetStack::_slurp($f3));
is_deeply [ map { $_->{id} } @all ], [ map { $_->{id} } @full ], 'first part + resumed part = the whole stream';
is_deeply [ sort map { $_->{event} } grep { $_->{event} =~ /^device-/ } @full ],
    [ qw(device-failed device-success device-timeout) ], 'one outcome per device';
is scalar(grep { $_->{event} eq 'complete' } @full), 1, 'exactly one complete';
is $dbh->selectrow_array('SELECT status FROM command_setups WHERE id = ?', undef, $setup), 'COMPLETED',
    'the bulk is COMPLETED';
is $dbh->selectrow_array(q{SELECT count(*) FROM commands WHERE status = 'PENDING'}), 0, 'nothing left PENDING';

# ---- firmware: each PROGRESS restarts the deadline (timeout_sec 4 here,
# so without the restarts it would time out before the SUCCESS at ~7 s)
my $fw_dev = register('FLT9');
$tx = $s->ua->post($s->url("/api/v1/devices/$fw_dev/commands") => { Authorization => "Bearer $admin" }
    => json => { command => 'UPDATE_FIRMWARE', payload => { url => 'https://example.com/fw.bin',
                 version => '1.2.3', sha256 => 'cd' x 32, timeout_sec => 4 } });
my $fw = decode_json($tx->res->body)->{data}{command_id};
ok wait_for(10, sub { status_of($fw) eq 'SENT' }), 'firmware command SENT';
sub fw_ack {
    my ($status, $extra) = @_;
    publish($s, "server/$fw_dev/ack", sign_msg($s->device_secret,
        qq({"command_id":"$fw","device_id":"$fw_dev","command":"UPDATE_FIRMWARE","status":"$status"$extra})));
}
for my $pct (30, 60) {
    sleep 2.5;
    fw_ack('PROGRESS', qq(,"progress":$pct));
    ok wait_for(5, sub { status_of($fw) eq 'PROGRESS' }), "PROGRESS $pct%";
}
sleep 2.5;
fw_ack('SUCCESS', ',"new_version":"car_wash_v1.2.0"');
ok wait_for(5, sub { status_of($fw) eq 'SUCCESS' }), 'SUCCESS after 7.5 s with a 4 s deadline: PROGRESS restarted it';
my @fw_events = map { $_->[0] } @{ $dbh->selectall_arrayref(
    'SELECT event FROM command_events WHERE scope = ? ORDER BY id', undef, $fw) };
is_deeply \@fw_events, [ qw(progress device-progress device-progress device-success progress complete results) ],
    'device-progress events, then the outcome';
like $dbh->selectrow_array(q{SELECT data::text FROM command_events WHERE scope = ? AND event = 'device-success'},
    undef, $fw), qr/"new_version": "car_wash_v1\.2\.0"/, 'new_version reported';

$s->assert_no_crash;
done_testing;
