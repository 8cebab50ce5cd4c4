package FleetMQTT;

# MQTT helpers for the fleetgate tests: sign like a device, publish with
# mosquitto_pub, ask the bridge for its counters, run an extra bridge.
#
#   use FleetMQTT qw(sign_msg publish publish_lines bridge_ping wait_for);
#   my $m = sign_msg($s->device_secret, '{"rssi":-60,"status":"ok"}');
#   publish($s, "server/$id/streaming", $m);
#   wait_for(10, sub { ... }) or fail(...);
#
# Messages are byte strings (encode UTF-8 text before signing).

use strict;
use warnings;

use Carp qw(croak);
use Digest::SHA qw(sha256_hex);
use Exporter qw(import);
use File::Temp ();
use IO::Socket::UNIX;
use IO::Select;
use Mojo::JSON qw(decode_json);
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(sign_msg sign_pretty publish publish_lines publish_file
    bridge_ping wait_for start_extra_bridge stop_extra_bridge clear_session
    notifies);

my %EXTRA;      # pid => 1, extra bridges to stop at END

# compact JSON text S -> S with ,"sha256":"<hex(SHA256(S . secret))>" before
# the final "}"
sub sign_msg {
    my ($secret, $s) = @_;
    croak 'sign_msg: not a JSON object text' unless $s =~ /\}\z/;
    my $sig = sha256_hex($s . $secret);
    (my $out = $s) =~ s/\}\z/,"sha256":"$sig"}/;
    return $out;
}

# a pretty-printed message signed over its compact form (seed 004):
# $pretty is the text without the sha256 member, $compact the same object
# compact; the member goes in before the closing brace of $pretty
sub sign_pretty {
    my ($secret, $pretty, $compact) = @_;
    my $sig = sha256_hex($compact . $secret);
    (my $out = $pretty) =~ s/\s*\}\s*\z/,\n  "sha256": "$sig"\n}\n/;
    return $out;
}

sub _pub_cmd {
    my ($s, $topic, %o) = @_;
    return ('mosquitto_pub', '-h', '127.0.0.1', '-p', $s->mqtt_port,
        '-q', $o{qos} // 1, '-t', $topic, ($o{retain} ? ('-r') : ()));
}

# runs a command with stdin from a file (or /dev/null); returns its output
sub _run {
    my ($in, @cmd) = @_;
    my $out = File::Temp->new;
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        open STDIN, '<', $in // '/dev/null' or POSIX::_exit(126);
        open STDOUT, '>', $out->filename or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        { no warnings qw(exec); exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $rc = $?;
    open my $fh, '<', $out->filename or croak "read: $!";
    local $/;
    my $text = <$fh> // '';
    $? = $rc;
    return $text;
}

# one message (QoS 1 by default); dies when mosquitto_pub fails
sub publish {
    my ($s, $topic, $msg, %o) = @_;
    my $f = File::Temp->new;
    binmode $f;
    print $f $msg;
    close $f;
    my $out = _run(undef, _pub_cmd($s, $topic, %o), '-f', $f->filename);
    croak "mosquitto_pub $topic failed: $out" if $?;
    return 1;
}

sub publish_file {
    my ($s, $topic, $file, %o) = @_;
    my $out = _run(undef, _pub_cmd($s, $topic, %o), '-f', $file);
    croak "mosquitto_pub $topic failed: $out" if $?;
    return 1;
}

# many messages on one topic, one connection: each element one message
# (no newlines inside); returns when mosquitto_pub has its PUBACKs
sub publish_lines {
    my ($s, $topic, $msgs, %o) = @_;
    my $f = File::Temp->new;
    binmode $f;
    print $f map { croak 'newline in a message' if /\n/; "$_\n" } @$msgs;
    close $f;
    my $out = _run($f->filename, _pub_cmd($s, $topic, %o), '-l');
    croak "mosquitto_pub -l $topic failed: $out" if $?;
    return 1;
}

# {"op":"ping"} on a bridge socket -> the pong as a hash (undef on failure)
sub bridge_ping {
    my ($path) = @_;
    my $sock = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM) or return undef;
    print $sock qq({"op":"ping","id":1}\n);
    $sock->flush;
    my $sel = IO::Select->new($sock);
    my ($buf, $deadline) = ('', time + 5);
    while ($buf !~ /\n/ && time < $deadline) {
        next unless $sel->can_read(0.2);
        my $n = sysread($sock, $buf, 65536, length $buf);
        last unless $n;
    }
    close $sock;
    my ($line) = $buf =~ /\A([^\n]*)\n/ or return undef;
    return eval { decode_json($line) };
}

# polls $cond every 0.1 s for at most $secs; true when it became true
sub wait_for {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        return 1 if $cond->();
        return 0 if time >= $deadline;
        sleep 0.1;
    }
}

# another fleet-bridge on the stack's broker and database:
# start_extra_bridge($s, 'b2', '--client-id', 'x', ...) -> { pid, socket, log }
sub start_extra_bridge {
    my ($s, $name, @args) = @_;
    no warnings qw(once);
    my $bin = ($ENV{FLEET_BUILD} // "$FleetStack::ROOT/build") . '/bridge/fleet-bridge';
    my $dir = $s->dir . '/bridge';
    my $b = { socket => "$dir/$name.sock", log => "$dir/$name.log" };
    unlink $b->{socket};
    my $pid = fork // croak "fork: $!";
    if (!$pid) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $b->{log} or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        $ENV{ASAN_OPTIONS} = $ENV{FLEET_LEAK_ASAN_OPTIONS} if $ENV{FLEET_LEAK_ASAN_OPTIONS};
        my @cmd = ($bin, '--mqtt-host', '127.0.0.1', '--mqtt-port', $s->mqtt_port,
            '--pg-dsn', $s->pg_dsn, '--socket', $b->{socket},
            '--device-secret', $s->device_secret, '--camera-api-key', $s->camera_api_key, @args);
        { no warnings qw(exec); exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    $b->{pid} = $pid;
    $EXTRA{$pid} = 1;
    wait_for(10, sub { -S $b->{socket} || waitpid($pid, WNOHANG) == $pid })
        && -S $b->{socket} or croak "extra bridge $name did not start:\n" . _slurp($b->{log});
    return $b;
}

# SIGTERM (or $sig), bounded wait; returns the exit status or undef
sub stop_extra_bridge {
    my ($b, $sig) = @_;
    my $pid = $b->{pid} or return undef;
    kill $sig // 'TERM', $pid;
    my $status;
    wait_for(15, sub { my $w = waitpid($pid, WNOHANG); $status = $? if $w == $pid; $w != 0 });
    if (!defined $status) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        $status = $?;
    }
    delete $EXTRA{$pid};
    delete $b->{pid};
    return $status;
}

# drops the broker's persistent session of a client id (a clean-session
# connect with that id), so a retired bridge gets no share of the messages
sub clear_session {
    my ($s, $client_id) = @_;
    my $out = _run(undef, 'mosquitto_pub', '-h', '127.0.0.1', '-p', $s->mqtt_port,
        '-i', $client_id, '-t', 'fleet/test/clear-session', '-n');
    croak "clear_session: $out" if $?;
}

# the NOTIFY fleet_events payloads (decoded) that arrived on $dbh (which
# LISTENs) since the last call
sub notifies {
    my ($dbh) = @_;
    my @got;
    while (my $n = $dbh->pg_notifies) {
        my $p = eval { decode_json($n->[2]) } or next;
        push @got, $p;
    }
    return @got;
}

sub _slurp {
    open my $fh, '<', $_[0] or return '';
    local $/;
    return <$fh> // '';
}

END {
    for my $pid (keys %EXTRA) {
        kill 'TERM', $pid;
        my $deadline = time + 5;
        sleep 0.05 while waitpid($pid, WNOHANG) == 0 && time < $deadline;
        kill 'KILL', $pid if kill 0, $pid;
    }
}

1;
