package FleetStack;

# fleetgate test harness: one whole stack (PostgreSQL, mosquitto, fleet-bridge,
# nginx with the fleet module) on free loopback ports in a temp dir of its own.
#
#   my $s = FleetStack->new(workers => 2, max_body => 65536);
#   my $tx = $s->signed_post('/api/v1/devices/need-register', $json);
#   $s->check_error($tx, 401, 'INVALID_SIGNATURE', '/api/v1/devices/need-register');
#
# Options: workers (2), max_body (65536), extra_http, extra_server,
# device_secret, jwt_secret, webhook_secret (fleet_payment_webhook_secret),
# biller_id and merchant_ref (fleet_promptpay_*), no_bridge, pool_size
# (fleet_pg_pool_size, 4),
# durable (PostgreSQL with fsync, for benchmarks), no_nginx (harness
# development only), worker_connections (4096; worker_rlimit_nofile follows).
# Environment: FLEET_BUILD (build dir, default <repo>/build), FLEET_PG_TEMPLATE
# (a cluster made by scripts/lib/common.sh fleet_pg_make_template; copied
# instead of running initdb), FLEET_NGINX_PRELOAD (LD_PRELOAD for nginx, e.g.
# libasan.so; ASAN_OPTIONS passes through), FLEET_KEEP (keep the temp dir),
# FLEET_TEST_TIMEOUT (seconds before a test file is aborted, default 100).
#
# Everything started here is stopped when the object goes away, at END, on
# SIGINT/SIGTERM, and by a watchdog process if the test process is killed.

use strict;
use warnings;

# Mojo's pure-Perl reactor: with EV, Perl signal handlers (the SIGALRM time
# limit, SIGINT) wait until the next event, and EV reaps every child process
BEGIN { $ENV{MOJO_REACTOR} //= 'Mojo::Reactor::Poll' }

use Carp qw(croak);
use Cwd qw(abs_path);
use DBI;
use Digest::SHA qw(sha256_hex hmac_sha256 hmac_sha256_hex);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64);
use Mojo::JSON qw(decode_json encode_json);
use Mojo::Message::Response;
use Mojo::UserAgent;
use POSIX qw(WNOHANG);
use Scalar::Util qw(weaken blessed);
use Time::HiRes qw(sleep time);

our $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/../..');
our $ADMIN_EMAIL    = 'admin@fleet.local';
our $ADMIN_PASSWORD = 'admin-pass-1234';

my %LIVE;           # every running stack, weakly held, for END and signals
my $SIGNALS_SET;

# ======================================================================
# construction

sub new {
    my ($class, %opt) = @_;
    my $self = bless {
        opt           => \%opt,
        workers       => $opt{workers} // 2,
        max_body      => $opt{max_body} // 65536,
        device_secret => $opt{device_secret} // _rand_hex(16),
        jwt_secret    => $opt{jwt_secret} // _rand_hex(32),
        webhook_secret => $opt{webhook_secret} // _rand_hex(16),
        biller_id     => $opt{biller_id} // '010556218135403',
        merchant_ref  => $opt{merchant_ref} // 'CATCARWASH',
        camera_key    => _rand_hex(16),
        build         => $ENV{FLEET_BUILD} // "$ROOT/build",
        children      => {},      # name => pid (direct children)
        owner         => $$,
    }, $class;

    $self->_install_signal_handlers;
    my $base = $ENV{FLEET_TMPDIR} // File::Spec->tmpdir;
    $self->{dir} = tempdir('fleetstack-XXXXXX', DIR => $base, CLEANUP => 0);
    chmod 0755, $self->{dir};
    _make_reachable($self->{dir});
    make_path(map { "$self->{dir}/$_" } qw(pids mqtt bridge nginx/tmp));
    $LIVE{"$self"} = $self;
    weaken($LIVE{"$self"});

    my $timeout = $ENV{FLEET_TEST_TIMEOUT} // 100;
    if ($timeout && !$SIG{ALRM}) {
        # exit, not die: an event loop callback would swallow the exception
        $SIG{ALRM} = sub {
            print STDERR "# FleetStack: test file exceeded ${timeout}s (FLEET_TEST_TIMEOUT), stopping\n";
            exit 124;
        };
        alarm $timeout;
    }

    eval {
        $self->_start_watchdog;
        $self->_start_pg;
        $self->_create_admin;
        $self->_start_broker;
        $self->_start_bridge unless $opt{no_bridge};
        $self->_start_nginx unless $opt{no_nginx};
        1;
    } or do {
        my $err = $@;
        $self->stop;
        die $err;
    };
    return $self;
}

# ======================================================================
# accessors

sub dir           { $_[0]{dir} }
sub pg_port       { $_[0]{pg_port} }
sub mqtt_port     { $_[0]{mqtt_port} }
sub http_port     { $_[0]{http_port} }
sub device_secret { $_[0]{device_secret} }
sub jwt_secret    { $_[0]{jwt_secret} }
sub camera_api_key { $_[0]{camera_key} }
sub payment_webhook_secret { $_[0]{webhook_secret} }
sub promptpay_biller_id { $_[0]{biller_id} }
sub promptpay_merchant_ref { $_[0]{merchant_ref} }
sub admin_email   { $ADMIN_EMAIL }
sub admin_password { $ADMIN_PASSWORD }
sub admin_id      { $_[0]{admin_id} }
sub max_body      { $_[0]{max_body} }
sub workers       { $_[0]{workers} }
sub pg_dsn        { my $s = shift; "postgresql://fleet:$s->{pg_password}\@127.0.0.1:$s->{pg_port}/fleet" }
sub nginx_master_pid { $_[0]{children}{nginx} }
sub bridge_pid    { $_[0]{children}{bridge} }

sub url {
    my ($self, $path) = @_;
    $path //= '/';
    return "http://127.0.0.1:$self->{http_port}$path";
}

sub ua {
    my $self = shift;
    return $self->{ua} //= do {
        my $ua = Mojo::UserAgent->new;
        $ua->connect_timeout(5);
        $ua->inactivity_timeout(20);
        $ua->request_timeout(30);
        $ua->max_redirects(0);
        $ua;
    };
}

# a user agent that opens a new connection for every request
sub fresh_ua {
    my $self = shift;
    my $ua = Mojo::UserAgent->new;
    $ua->connect_timeout(5);
    $ua->inactivity_timeout(20);
    $ua->request_timeout(30);
    $ua->max_connections(0);
    return $ua;
}

# ======================================================================
# device signatures, auth

sub sign {
    my ($self, $bytes) = @_;
    return sha256_hex($bytes . $self->{device_secret});
}

# signed_post($path, $body, %headers): JSON content type and the right
# x-signature unless given; a header given as undef is left out
sub signed_post {
    my ($self, $path, $body, %headers) = @_;
    $body //= '';
    my %h = ('Content-Type' => 'application/json', 'x-signature' => $self->sign($body), %headers);
    delete $h{$_} for grep { !defined $h{$_} } keys %h;
    return $self->ua->post($self->url($path) => \%h => $body);
}

sub signed_get {
    my ($self, $path_query, %headers) = @_;
    my %h = ('x-signature' => $self->sign($path_query), %headers);
    delete $h{$_} for grep { !defined $h{$_} } keys %h;
    return $self->ua->get($self->url($path_query) => \%h);
}

# x-webhook-signature for a payment webhook body (SPEC 8)
sub webhook_sign {
    my ($self, $bytes, $secret) = @_;
    return 'sha256=' . hmac_sha256_hex($bytes, $secret // $self->{webhook_secret});
}

# webhook_post($body, %headers): the gateway's call, signed unless an
# x-webhook-signature is given (undef: left out)
sub webhook_post {
    my ($self, $body, %headers) = @_;
    my %h = ('Content-Type' => 'application/json',
             'x-webhook-signature' => $self->webhook_sign($body), %headers);
    delete $h{$_} for grep { !defined $h{$_} } keys %h;
    return $self->ua->post($self->url('/api/v1/payment-gateway/webhook') => \%h => $body);
}

sub post_json {
    my ($self, $path, $data, %headers) = @_;
    return $self->ua->post($self->url($path) => {%headers} => json => $data);
}

sub get_auth {
    my ($self, $path, $token) = @_;
    return $self->ua->get($self->url($path) => { Authorization => "Bearer $token" });
}

sub login {
    my ($self, $email, $pw) = @_;
    my $tx = $self->ua->post($self->url('/api/v1/auth/login') =>
        json => { email => $email, password => $pw });
    my $res = $tx->res;
    return undef unless ($res->code // 0) == 200;
    my $j = eval { decode_json($res->body) } or return undef;
    return $j->{data}{token};
}

sub admin_token {
    my $self = shift;
    return $self->{admin_token} //= $self->login($ADMIN_EMAIL, $ADMIN_PASSWORD)
        // croak "admin login failed";
}

# HS256 JWT signed with this stack's secret (or override header/secret)
sub make_jwt {
    my ($self, $claims, %o) = @_;
    my $header = $o{header} // { alg => 'HS256', typ => 'JWT' };
    my $h = _b64url(ref $header ? encode_json($header) : $header);
    my $p = _b64url(ref $claims ? encode_json($claims) : $claims);
    my $secret = $o{secret} // $self->{jwt_secret};
    my $sig = _b64url(hmac_sha256("$h.$p", $secret));
    return "$h.$p.$sig";
}

sub _b64url {
    my $s = encode_base64($_[0], '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+\z//;
    return $s;
}

# ======================================================================
# database

sub dbh {
    my $self = shift;
    my $dbh = $self->{dbh};
    return $dbh if $dbh && eval { $dbh->ping };
    $self->{dbh} = DBI->connect(
        "dbi:Pg:host=127.0.0.1;port=$self->{pg_port};dbname=fleet", 'fleet', $self->{pg_password},
        { RaiseError => 1, PrintError => 0, AutoCommit => 1, AutoInactiveDestroy => 1 })
        or croak "cannot connect to PostgreSQL: $DBI::errstr";
    return $self->{dbh};
}

# runs SQL through psql as role fleet; returns stdout (unaligned, tuples only)
sub psql {
    my ($self, $sql) = @_;
    local $ENV{PGCONNECT_TIMEOUT} = 5;
    my $out = $self->_capture('psql', $self->pg_dsn, '-X', '-q', '-tA', '-v', 'ON_ERROR_STOP=1', '-c', $sql);
    croak "psql failed: $out" if $?;
    return $out;
}

sub count_rows {
    my ($self, $table, $where) = @_;
    croak "bad table name" unless $table =~ /^\w+$/;
    my ($n) = $self->dbh->selectrow_array("SELECT count(*) FROM $table" . ($where ? " WHERE $where" : ''));
    return $n;
}

sub hash_password {
    my ($self, $pw, $iterations) = @_;
    $iterations //= 1000;
    my $bin = "$self->{build}/bridge/fleet-bridge";
    if (-x $bin) {
        my $h = $self->_capture_in($pw . "\n", $bin, 'hash-password', '--iterations', $iterations);
        chomp $h;
        return $h if !$? && $h =~ /^pbkdf2_sha256\$/;
        croak "fleet-bridge hash-password failed: $h";
    }
    # same encoding as common/fleet_password.c (Django's pbkdf2_sha256)
    my @c = ('a' .. 'z', 'A' .. 'Z', '0' .. '9');
    my $salt = join '', map { $c[rand @c] } 1 .. 22;
    my $u = hmac_sha256($salt . pack('N', 1), $pw);
    my $t = $u;
    for (2 .. $iterations) { $u = hmac_sha256($u, $pw); $t ^= $u }
    return "pbkdf2_sha256\$$iterations\$$salt\$" . encode_base64($t, '');
}

sub create_user {
    my ($self, $email, $pw, $role) = @_;
    my $hash = $self->hash_password($pw);
    my ($id) = $self->dbh->selectrow_array('SELECT fleet_upsert_user(?, ?, ?, ?)', undef,
        $email, "Test \u$role", $role, $hash);
    return $id;
}

sub _create_admin {
    my $self = shift;
    my ($exists) = $self->dbh->selectrow_array(
        q{SELECT to_regprocedure('fleet_upsert_user(text,text,text,text)') IS NOT NULL});
    unless ($exists) {
        warn "FleetStack: fleet_upsert_user() missing from the schema; no admin user created\n";
        return;
    }
    $self->{admin_id} = $self->create_user($ADMIN_EMAIL, $ADMIN_PASSWORD, 'admin');
    $self->dbh->do(q{SELECT 1});
}

# ======================================================================
# PostgreSQL

sub _start_pg {
    my $self = shift;
    my $dir = $self->{dir};
    my $pgdir = "$dir/pg";
    _pg_mkdir($pgdir);
    my $tmpl = $ENV{FLEET_PG_TEMPLATE};
    if (!$tmpl) {
        # no template from scripts/test: make one here (initdb + migrations)
        $tmpl = "$dir/pg-template";
        my $out = $self->_capture('bash', '-c', '. "$1" && fleet_pg_make_template "$2"', '_',
            "$ROOT/scripts/lib/common.sh", $tmpl);
        die "FleetStack: cannot create a PostgreSQL cluster:\n$out" if $?;
        $self->{own_template} = $tmpl;
    }
    -d "$tmpl/data" && -f "$tmpl/password" or die "FleetStack: $tmpl is not a fleet_pg_make_template cluster\n";
    $self->{pg_password} = _slurp("$tmpl/password");
    chomp $self->{pg_password};
    if ($self->{own_template}) {
        rename "$tmpl/data", "$pgdir/data" or die "rename: $!";
    } else {
        my $out = $self->_capture('cp', '-a', "$tmpl/data", "$pgdir/data");
        die "FleetStack: cannot copy the template cluster: $out" if $?;
    }
    unlink "$pgdir/data/postmaster.pid";
    _pg_mkdir("$pgdir/run");
    $self->{pg_data} = "$pgdir/data";
    $self->{pg_log}  = "$pgdir/postgresql.log";
    _spit($self->{pg_log}, '');
    _chown_pg($self->{pg_log});

    for my $attempt (1 .. 3) {
        $self->{pg_port} = free_port();
        # tests trade durability for speed; benchmarks ask for a durable
        # server (durable => 1), as production runs
        my @speed = $self->{opt}{durable}
            ? ('shared_buffers = 128MB')
            : ('fsync = off', 'synchronous_commit = off', 'full_page_writes = off',
               'shared_buffers = 16MB');
        _spit("$pgdir/data/fleet.conf", join "\n",
            "listen_addresses = '127.0.0.1'", "port = $self->{pg_port}",
            "unix_socket_directories = '$pgdir/run'", @speed, 'max_connections = 100', '');
        _chown_pg("$pgdir/data/fleet.conf");
        last if $self->start_pg(no_die => $attempt < 3);
    }
    _spit("$dir/pids/pg", "$self->{pg_data}\n");
}

sub start_pg {
    my ($self, %o) = @_;
    my $out = $self->_capture(_as_postgres(_pg_bin('pg_ctl'), '-D', $self->{pg_data},
        '-l', $self->{pg_log}, '-w', '-t', '30', 'start'));
    if ($?) {
        return 0 if $o{no_die} && _slurp($self->{pg_log}) =~ /already in use|could not bind/i;
        die "FleetStack: PostgreSQL did not start: $out\n" . _tail($self->{pg_log}, 30);
    }
    return 1;
}

sub stop_pg {
    my ($self, $mode) = @_;
    return unless $self->{pg_data} && -f "$self->{pg_data}/postmaster.pid";
    delete $self->{dbh};
    $self->_capture(_as_postgres(_pg_bin('pg_ctl'), '-D', $self->{pg_data}, '-m', $mode // 'fast',
        '-w', '-t', '30', 'stop'));
}

# freeze_pg: SIGSTOP the postmaster and every backend, so queries hang
# (not refused) and the module's query timeout has to act; thaw_pg resumes
sub pg_pids {
    my $self = shift;
    my ($pm) = _slurp("$self->{pg_data}/postmaster.pid") =~ /\A(\d+)/ or return;
    my @pids = ($pm);
    for my $stat (glob '/proc/[0-9]*/stat') {
        my $line = _slurp($stat);
        push @pids, $1 if $line =~ /^(\d+) \(.*\) \S (\d+)/s && $2 == $pm;
    }
    return @pids;
}

sub freeze_pg {
    my $self = shift;
    my @pids = $self->pg_pids or croak 'PostgreSQL is not running';
    $self->{pg_frozen} = \@pids;
    kill 'STOP', @pids;
    return scalar @pids;
}

sub thaw_pg {
    my $self = shift;
    my $pids = delete $self->{pg_frozen} or return;
    kill 'CONT', @$pids;
}

sub restart_pg {
    my $self = shift;
    $self->stop_pg('fast');
    $self->start_pg;
}

# ======================================================================
# mosquitto

sub _start_broker {
    my $self = shift;
    $self->{mqtt_port} = free_port();
    $self->start_broker;
}

sub start_broker {
    my $self = shift;
    my $d = "$self->{dir}/mqtt";
    for my $attempt (1 .. 3) {
        _spit("$d/mosquitto.conf", join "\n",
            "listener $self->{mqtt_port} 127.0.0.1", 'allow_anonymous true', 'persistence false',
            # as scripts/up: a lagging bridge gets its QoS-1 messages later,
            # they are not dropped past mosquitto's default of 1000
            'max_queued_messages 1000000',
            'log_dest stderr', 'log_type error', 'log_type warning', 'log_type notice',
            ($> == 0 ? ('user root') : ()), '');
        my $pid = $self->_spawn('mosquitto', "$d/mosquitto.log", {}, '/usr/sbin/mosquitto', '-c', "$d/mosquitto.conf");
        my $ok = _wait_until(10, sub { !_alive($pid) || port_open($self->{mqtt_port}) });
        return 1 if $ok && _alive($pid);
        my $log = _tail("$d/mosquitto.log", 20);
        $self->_stop_child('mosquitto');
        if ($attempt < 3 && $log =~ /in use/i) {
            $self->{mqtt_port} = free_port();
            next;
        }
        die "FleetStack: mosquitto did not start:\n$log";
    }
}

sub stop_broker {
    my $self = shift;
    $self->_stop_child('mosquitto', 'TERM');
}

# ======================================================================
# bridge

sub bridge_socket { "$_[0]{dir}/bridge/bridge.sock" }
sub bridge_log    { _slurp("$_[0]{dir}/bridge/bridge.log") }

sub _start_bridge { $_[0]->start_bridge }

sub start_bridge {
    my $self = shift;
    my $bin = "$self->{build}/bridge/fleet-bridge";
    -x $bin or die "FleetStack: $bin is missing: run scripts/build\n";
    my $sock = $self->bridge_socket;
    unlink $sock;
    my %env = (
        FLEET_COMMAND_TIMEOUT_S => $ENV{FLEET_COMMAND_TIMEOUT_S} // 30,
        FLEET_OFFLINE_AFTER_S   => $ENV{FLEET_OFFLINE_AFTER_S} // 180,
    );
    # sanitized runs check the bridge for leaks too (nginx's master does
    # not free its cycle at exit, so it runs without leak detection)
    $env{ASAN_OPTIONS} = $ENV{FLEET_LEAK_ASAN_OPTIONS} if $ENV{FLEET_LEAK_ASAN_OPTIONS};
    my $pid = $self->_spawn('bridge', "$self->{dir}/bridge/bridge.log", \%env,
        $bin, '--mqtt-host', '127.0.0.1', '--mqtt-port', $self->{mqtt_port},
        '--pg-dsn', $self->pg_dsn, '--socket', $sock,
        '--device-secret', $self->{device_secret}, '--camera-api-key', $self->{camera_key});
    _wait_until(10, sub { !_alive($pid) || -S $sock });
    unless (_alive($pid) && -S $sock) {
        my $log = _tail("$self->{dir}/bridge/bridge.log", 30);
        die "FleetStack: the bridge did not start (no socket $sock):\n$log";
    }
    return 1;
}

sub kill_bridge {
    my ($self, $sig) = @_;
    $self->_stop_child('bridge', $sig // 'TERM');
}

# ======================================================================
# nginx

sub nginx_conf_path { "$_[0]{dir}/nginx/nginx.conf" }

sub _render_nginx_conf {
    my $self = shift;
    my $d = "$self->{dir}/nginx";
    my %v = (
        USER_LINE     => ($> == 0 ? 'user root;' : ''),
        MODULE_SO     => "$self->{build}/nginx/objs/ngx_fleet_module.so",
        WORKERS       => $self->{workers},
        ERROR_LOG     => "$d/error.log",
        ACCESS_LOG    => "$d/access.log",
        PID_FILE      => "$d/nginx.pid",
        TMP_DIR       => "$d/tmp",
        PG_DSN        => "host=127.0.0.1 port=$self->{pg_port} dbname=fleet user=fleet password=$self->{pg_password}",
        BRIDGE_SOCKET => $self->bridge_socket,
        JWT_SECRET    => $self->{jwt_secret},
        DEVICE_SECRET => $self->{device_secret},
        MAX_BODY      => $self->{max_body},
        POOL_SIZE     => $self->{opt}{pool_size} // 4,
        COMMAND_TIMEOUT => $ENV{FLEET_COMMAND_TIMEOUT_S} // 30,
        PROMPTPAY_BILLER_ID => $self->{biller_id},
        PROMPTPAY_MERCHANT_REF => $self->{merchant_ref},
        PAYMENT_WEBHOOK_SECRET => $self->{webhook_secret},
        PORT          => $self->{http_port},
        EXTRA_SERVER  => $self->{opt}{extra_server} // '',
        EXTRA_HTTP    => $self->{opt}{extra_http} // '',
        ROOT          => $ROOT,
        WORKER_CONNECTIONS => $self->{opt}{worker_connections} // 4096,
        RLIMIT_NOFILE => 2 * ($self->{opt}{worker_connections} // 4096) + 64,
    );
    my $t = _slurp("$ROOT/scripts/lib/nginx.conf.in");
    $t =~ s/\@([A-Z_]+)\@/exists $v{$1} ? $v{$1} : die "nginx.conf.in: no value for \@$1\@\n"/ge;
    _spit($self->nginx_conf_path, $t);
}

sub _start_nginx {
    my $self = shift;
    my $so = "$self->{build}/nginx/objs/ngx_fleet_module.so";
    -f $so or die "FleetStack: $so is missing: run scripts/build\n";
    for my $attempt (1 .. 3) {
        $self->{http_port} = free_port();
        $self->_render_nginx_conf;
        return 1 if $self->start_nginx(retry_on_bind => $attempt < 3);
    }
}

sub start_nginx {
    my ($self, %o) = @_;
    my $d = "$self->{dir}/nginx";
    my %env;
    $env{LD_PRELOAD} = $ENV{FLEET_NGINX_PRELOAD} if $ENV{FLEET_NGINX_PRELOAD};
    my $pid = $self->_spawn('nginx', "$d/stderr.log", \%env, '/usr/sbin/nginx',
        '-p', "$d/", '-c', $self->nginx_conf_path, '-e', "$d/error.log", '-g', 'daemon off;');
    my $want_ok = !$self->{opt}{no_bridge};
    my ($code, $body) = (0, '');
    my $ua = Mojo::UserAgent->new(connect_timeout => 1, request_timeout => 2, inactivity_timeout => 2);
    _wait_until(20, sub {
        return 1 unless _alive($pid);
        my $res = eval { $ua->get($self->url('/healthz'))->res };
        ($code, $body) = $res ? ($res->code // 0, $res->body) : (0, '');
        return $want_ok ? $code == 200 : $code > 0;
    });
    return 1 if _alive($pid) && ($want_ok ? $code == 200 : $code > 0);
    my $log = _tail("$d/error.log", 40) . _tail("$d/stderr.log", 20);
    $self->_stop_child('nginx');
    return 0 if $o{retry_on_bind} && $log =~ /Address already in use/;
    die "FleetStack: nginx did not become healthy (GET /healthz: " . ($code || 'no answer')
        . " $body)\n$log";
}

sub reload_nginx {
    my $self = shift;
    my $pid = $self->{children}{nginx} or croak "nginx is not running";
    my %old = map { $_ => 1 } $self->nginx_worker_pids;
    kill 'HUP', $pid;
    # new workers appear, the old ones leave (bounded)
    _wait_until(15, sub {
        my @w = $self->nginx_worker_pids;
        @w == $self->{workers} && !grep { $old{$_} } @w;
    }) or croak "nginx reload did not replace the workers:\n" . _tail("$self->{dir}/nginx/error.log", 20);
}

sub nginx_worker_pids {
    my $self = shift;
    my $master = $self->{children}{nginx} or return;
    my @pids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        # pid (comm) state ppid ...
        next unless $line =~ /^(\d+) \((.*)\) (\S) (\d+)/s;
        my ($pid, $state, $ppid) = ($1, $3, $4);
        next unless $ppid == $master && $state ne 'Z';
        my $cmd = _slurp("/proc/$pid/cmdline");
        push @pids, $pid if $cmd =~ /worker process/ && $cmd !~ /shutting down/;
    }
    @pids = sort { $a <=> $b } @pids;
    return wantarray ? @pids : scalar @pids;
}

sub error_log {
    my $self = shift;
    my $d = "$self->{dir}/nginx";
    return join '', map { -f $_ ? _slurp($_) : '' } "$d/error.log", "$d/stderr.log";
}

# Test::More ok(): no crash or sanitizer report in nginx's logs or the bridge's
sub assert_no_crash {
    my ($self, $name) = @_;
    my $pat = qr/signal 11|exited on signal|segfault|AddressSanitizer|runtime error|LeakSanitizer/;
    my @bad;
    for my $f ("$self->{dir}/nginx/error.log", "$self->{dir}/nginx/stderr.log", "$self->{dir}/bridge/bridge.log") {
        next unless -f $f;
        push @bad, map { "$f: $_" } grep { /$pat/ } split /\n/, _slurp($f);
    }
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $ok = Test::More::ok(!@bad, $name // 'no crash or sanitizer report in the logs');
    Test::More::diag(join "\n", @bad[0 .. ($#bad < 19 ? $#bad : 19)]) if @bad;
    return $ok;
}

# ======================================================================
# response checks (Test::More)

sub json_of {
    my ($tx_or_res) = @_;
    my $res = $tx_or_res->can('res') ? $tx_or_res->res : $tx_or_res;
    return eval { decode_json($res->body) };
}

# check_error($tx, $status, $errorCode, $path, [$message|qr//], [$name])
# $errorCode undef: any string
sub check_error {
    my ($self, $tx, $status, $code, $path, $message, $name) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $res = blessed($tx) && $tx->can('res') ? $tx->res : $tx;
    my $t = $name // ("$status " . ($code // '*') . ' envelope');
    my $got_code = $res->code // 0;
    my $j = json_of($res);
    my @why;
    push @why, "status $got_code, want $status" if $got_code != $status;
    push @why, 'Content-Type ' . ($res->headers->content_type // 'none') . ', want application/json'
        unless ($res->headers->content_type // '') =~ m{^application/json\b}i;
    if (ref $j ne 'HASH') {
        push @why, 'body is not a JSON object';
    } else {
        push @why, 'success is not false' unless exists $j->{success} && _is_false($j->{success});
        push @why, "errorCode " . ($j->{errorCode} // 'undef') . ", want $code"
            if defined $code ? (($j->{errorCode} // '') ne $code) : !(defined $j->{errorCode} && !ref $j->{errorCode} && length $j->{errorCode});
        push @why, 'message missing' unless defined $j->{message} && !ref $j->{message} && length $j->{message};
        if (defined $message) {
            push @why, "message '" . ($j->{message} // '') . "', want '$message'"
                if ref $message ? ($j->{message} // '') !~ $message : ($j->{message} // '') ne $message;
        }
        push @why, 'statusCode ' . ($j->{statusCode} // 'undef') . ", want $status"
            unless defined $j->{statusCode} && !ref $j->{statusCode} && $j->{statusCode} =~ /^\d+$/ && $j->{statusCode} == $status;
        push @why, "timestamp '" . ($j->{timestamp} // '') . "' is not ISO-8601 with ms and Z"
            unless ($j->{timestamp} // '') =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\z/;
        push @why, "path '" . ($j->{path} // '') . "', want '$path'"
            if defined $path && ($j->{path} // '') ne $path;
    }
    my $ok = Test::More::ok(!@why, $t);
    unless ($ok) {
        my $err = blessed($tx) && $tx->can('error') && $tx->error ? "transport: " . $tx->error->{message} . "\n" : '';
        Test::More::diag(join("\n", @why) . "\n${err}body: " . substr($res->body // '', 0, 500));
    }
    return $ok;
}

sub _is_false {
    my $v = shift;
    return 0 unless defined $v;
    return ref $v ? !$v : $v eq '0' || $v eq '';
}

# raw_http($request_bytes, %o) -> { status, headers => {lc name => value}, body, raw }
# sends exactly the bytes given (use "Connection: close"), reads until close
sub raw_http {
    my ($self, $req, %o) = @_;
    my $timeout = $o{timeout} // 15;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{http_port},
        Proto => 'tcp', Timeout => 5) or return { status => 0, error => "connect: $!" };
    local $SIG{PIPE} = 'IGNORE';
    my @chunks = ref $req eq 'ARRAY' ? @$req : ($req);
    for my $c (@chunks) {
        my $off = 0;
        while ($off < length $c) {
            my $n = syswrite($sock, $c, length($c) - $off, $off);
            last unless $n;     # the server may answer and close early (413)
            $off += $n;
        }
    }
    my ($raw, $deadline) = ('', time + $timeout);
    my $sel = '';
    vec($sel, fileno($sock), 1) = 1;
    while (time < $deadline) {
        my $r = $sel;
        my $n = select($r, undef, undef, 0.2);
        next unless $n;
        my $got = sysread($sock, my $buf, 65536);
        last unless $got;       # EOF or reset
        $raw .= $buf;
    }
    close $sock;
    my %res = (raw => $raw, status => 0, headers => {}, body => '');
    if ($raw =~ /\AHTTP\/1\.[01] (\d{3})[^\r\n]*\r\n(.*?)\r\n\r\n(.*)\z/s) {
        $res{status} = $1;
        my $hdr = $2;
        $res{body} = $3;
        for (split /\r\n/, $hdr) {
            $res{headers}{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
        }
        if (($res{headers}{'transfer-encoding'} // '') =~ /chunked/i) {
            my ($b, $body) = ($res{body}, '');
            while ($b =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
                my $len = hex $1;
                last unless $len;
                $body .= substr($b, 0, $len, '');
                $b =~ s/\A\r\n//;
            }
            $res{body} = $body;
        }
    }
    $res{json} = eval { decode_json($res{body}) };
    $res{res}  = Mojo::Message::Response->new->parse($raw);   # for check_error
    return \%res;
}

# ======================================================================
# processes

sub _spawn {
    my ($self, $name, $log, $env, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        $ENV{$_} = $env->{$_} for keys %$env;
        { no warnings qw(exec); exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $self->{children}{$name} = $pid;
    _spit("$self->{dir}/pids/$name", "$pid\n");
    return $pid;
}

# stops one direct child: SIG (default TERM; nginx QUIT) then TERM, then KILL
# to its whole process group
sub _stop_child {
    my ($self, $name, $sig) = @_;
    my $pid = delete $self->{children}{$name} or return;
    unlink "$self->{dir}/pids/$name";
    $sig //= $name eq 'nginx' ? 'QUIT' : 'TERM';
    kill $sig, $pid;
    if ($sig eq 'KILL' || $sig eq '9') {
        kill 'KILL', -$pid;
        _wait_until(5, sub { !_alive($pid) });
        return;
    }
    return if _wait_until($name eq 'nginx' ? 8 : 5, sub { !_alive($pid) });
    kill 'TERM', $pid;
    return if _wait_until(3, sub { !_alive($pid) });
    kill 'KILL', -$pid;
    kill 'KILL', $pid;
    _wait_until(5, sub { !_alive($pid) });
}

sub _start_watchdog {
    my $self = shift;
    my $parent = $$;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgrp(0, 0);
        open STDIN, '<', '/dev/null';
        no warnings qw(exec);
        exec $^X, '-I' . dirname(abs_path(__FILE__)), '-MFleetStack', '-e',
            'FleetStack::_watchdog(@ARGV)', $parent, $self->{dir}, ($ENV{FLEET_KEEP} ? 1 : 0);
        POSIX::_exit(127);
    }
    $self->{watchdog} = $pid;
}

# runs in its own process: when the test process disappears, stops the stack
sub _watchdog {
    my ($parent, $dir, $keep) = @_;
    $SIG{ALRM} = 'DEFAULT';
    alarm 0;
    my $stop = 0;
    $SIG{TERM} = sub { $stop = 1 };
    while (!$stop) {
        sleep 0.5;
        last if getppid() != $parent || !kill(0, $parent);
    }
    exit 0 if $stop;
    reap_dir($dir);
    remove_tree($dir) unless $keep;
    exit 0;
}

# stops whatever the pid files in DIR/pids name (used by the watchdog)
sub reap_dir {
    my $dir = shift;
    for my $name (qw(nginx bridge mosquitto)) {
        my $f = "$dir/pids/$name";
        next unless -f $f;
        my ($pid) = _slurp($f) =~ /(\d+)/ or next;
        my $cmd = _slurp("/proc/$pid/cmdline");
        next unless $cmd =~ /nginx|fleet-bridge|mosquitto/;
        kill 'TERM', $pid;
        _wait_until(5, sub { !_alive($pid) }) or kill 'KILL', -$pid, $pid;
        unlink $f;
    }
    my $data = "$dir/pg/data";
    if (-f "$data/postmaster.pid") {
        my ($pid) = _slurp("$data/postmaster.pid") =~ /\A(\d+)/;
        if ($pid && _slurp("/proc/$pid/cmdline") =~ /postgres/) {
            kill 'CONT', $pid;     # in case the test froze it
            kill 'QUIT', $pid;     # immediate shutdown
            _wait_until(10, sub { !_alive($pid) }) or kill 'KILL', $pid;
        }
    }
}

sub stop {
    my $self = shift;
    return if $self->{stopped}++;
    return if $$ != $self->{owner};        # a forked child must not stop the stack
    delete $self->{ua};
    if (my $dbh = delete $self->{dbh}) { eval { $dbh->disconnect } }
    $self->_stop_child('nginx');
    $self->_stop_child('bridge');
    $self->_stop_child('mosquitto');
    $self->thaw_pg;
    $self->stop_pg('immediate');
    $self->_collect_sanitizer_reports;
    if (my $w = delete $self->{watchdog}) {
        kill 'TERM', $w;
        _wait_until(3, sub { !_alive($w) }) or do { kill 'KILL', $w; waitpid $w, 0 };
    }
    if ($ENV{FLEET_KEEP}) {
        print STDERR "# FleetStack: kept $self->{dir}\n";
    } elsif ($self->{dir} && -d $self->{dir}) {
        remove_tree($self->{dir});
    }
    delete $LIVE{"$self"};
}

# Reports written while processes exit (leaks, a worker's last words) come
# after the test's own assertions: they are copied to FLEET_SANITIZER_DIR,
# which scripts/test checks once every test has run.
sub _collect_sanitizer_reports {
    my $self = shift;
    my $out = $ENV{FLEET_SANITIZER_DIR} or return;
    my $pat = qr/AddressSanitizer|LeakSanitizer|runtime error:|signal 11|exited on signal/;
    for my $f ("$self->{dir}/nginx/error.log", "$self->{dir}/nginx/stderr.log",
               "$self->{dir}/bridge/bridge.log") {
        next unless -f $f;
        my $text = _slurp($f);
        next unless $text =~ $pat;
        (my $name = "$0-$f") =~ s{[^\w.-]+}{_}g;
        _spit("$out/$name", "# $0: $f\n$text");
    }
}

sub DESTROY {
    my $self = shift;
    local ($@, $!, $?);
    $self->stop;
}

END {
    local $?;
    for my $s (values %LIVE) { $s->stop if $s }
}

sub _install_signal_handlers {
    return if $SIGNALS_SET++;
    for my $sig (qw(INT TERM HUP)) {
        next if $SIG{$sig} && $SIG{$sig} ne 'DEFAULT';
        $SIG{$sig} = sub { print STDERR "# FleetStack: caught SIG$sig, stopping\n"; exit 130 };
    }
}

# ======================================================================
# small helpers

# A test that needs a real client (node, the npm packages, Chromium) skips
# without it when run by hand; under scripts/test (FLEET_REQUIRE_CLIENTS=1)
# a missing client is a failure: CI must run those tests, not skip them.
sub skip_or_fail {
    my ($why) = @_;
    if ($ENV{FLEET_REQUIRE_CLIENTS}) {
        Test::More::plan(tests => 1);
        Test::More::fail("a required client is missing: $why");
        exit 1;
    }
    Test::More::plan(skip_all => $why);
}

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub port_open {
    my $port = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1);
    return $s ? 1 : 0;
}

# true when the process exists and is not a zombie (reaps our own children)
sub _alive {
    my $pid = shift;
    return 0 unless $pid;
    my $w = waitpid($pid, WNOHANG);
    return 0 if $w == $pid;
    return 0 unless kill 0, $pid;
    my $stat = _slurp("/proc/$pid/stat");
    return 0 if $stat =~ /^\d+ \(.*\) Z /s;
    return 1;
}

sub _wait_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        return 1 if $cond->();
        return 0 if time >= $deadline;
        sleep 0.05;
    }
}

sub _capture {
    my ($self, @cmd) = @_;
    return $self->_capture_in(undef, @cmd);
}

# runs a command, stdin from $in (or /dev/null); returns stdout+stderr, sets $?
sub _capture_in {
    my ($self, $in, @cmd) = @_;
    my $tmp = File::Temp->new(DIR => $self->{dir});
    my $inf;
    if (defined $in) {
        $inf = File::Temp->new(DIR => $self->{dir});
        print $inf $in;
        close $inf;
    }
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', defined $in ? $inf->filename : '/dev/null';
        open STDOUT, '>', $tmp->filename;
        open STDERR, '>&', \*STDOUT;
        { no warnings qw(exec); exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $status = $?;
    my $out = _slurp($tmp->filename);
    $? = $status;
    return $out;
}

sub _as_postgres {
    my @cmd = @_;
    return $> == 0 ? ('runuser', '-u', 'postgres', '--', @cmd) : @cmd;
}

sub _pg_bin {
    my $name = shift;
    my ($bin) = sort { _ver($b) <=> _ver($a) } glob '/usr/lib/postgresql/*/bin';
    return $bin ? "$bin/$name" : $name;
}
sub _ver { $_[0] =~ m{postgresql/(\d+)} ? $1 : 0 }

sub _pg_mkdir {
    my $d = shift;
    make_path($d);
    chmod 0755, $d;
    _chown_pg($d);
}

sub _chown_pg {
    return unless $> == 0;
    my (undef, undef, $uid, $gid) = getpwnam('postgres') or return;
    chown $uid, $gid, @_;
}

sub _make_reachable {
    my $d = abs_path(shift);
    while ($d ne '/' && length $d) {
        my $mode = (stat $d)[2] & 07777;
        chmod $mode | 0111, $d unless $mode & 0001;
        $d = dirname($d);
    }
}

sub _slurp {
    my $f = shift;
    open my $fh, '<', $f or return '';
    local $/;
    my $c = <$fh>;
    return $c // '';
}

sub _spit {
    my ($f, $c) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $c;
    close $fh or die "$f: $!";
}

sub _tail {
    my ($f, $n) = @_;
    my @l = split /\n/, _slurp($f);
    @l = @l[-$n .. -1] if @l > $n;
    return "---- $f (last " . scalar(@l) . " lines) ----\n" . join("\n", @l) . "\n";
}

sub _rand_hex {
    my $n = shift;
    if (open my $fh, '<', '/dev/urandom') {
        my $b = q{};
        read $fh, $b, $n;
        return unpack 'H*', $b;
    }
    return join '', map { sprintf '%02x', int rand 256 } 1 .. $n;
}

1;
