# shellcheck shell=bash disable=SC2034
# fleetgate: shell helpers shared by scripts/{deps,build,migrate,up,test}.
# Source it from bash:  . "$(dirname "$0")/lib/common.sh"
# t/lib/FleetStack.pm also calls fleet_pg_make_template from here.

FLEET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FLEET_NGINX_BIN=${FLEET_NGINX_BIN:-/usr/sbin/nginx}
FLEET_NGINX_SRC=${FLEET_NGINX_SRC:-/usr/share/nginx/src}
FLEET_CONF_TEMPLATE="$FLEET_ROOT/scripts/lib/nginx.conf.in"

fleet_log() { printf 'fleetgate: %s\n' "$*" >&2; }
fleet_die() { printf 'fleetgate: error: %s\n' "$*" >&2; exit 1; }

# fleet_run_logged LOGFILE CMD...: runs CMD with all output into LOGFILE;
# on failure prints the log's tail and fails (quiet on success, loud on error)
fleet_run_logged() {
    local logfile=$1; shift
    if ! "$@" >"$logfile" 2>&1; then
        printf 'fleetgate: error: command failed: %s\n' "$*" >&2
        printf -- '---- last lines of %s ----\n' "$logfile" >&2
        tail -n 60 "$logfile" >&2
        printf -- '----\n' >&2
        return 1
    fi
}

# prints a TCP port on 127.0.0.1 that nobody listens on right now
fleet_free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1",
            LocalPort => 0, Proto => "tcp") or die "no free port: $!\n";
        print $s->sockport, "\n";'
}

# true when something accepts connections on 127.0.0.1:PORT
fleet_port_open() {
    perl -MIO::Socket::INET -e '
        exit(IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0],
            Proto => "tcp", Timeout => 1) ? 0 : 1);' "$1"
}

# fleet_wait_for SECONDS DESCRIPTION CMD...: polls CMD every 0.1 s
fleet_wait_for() {
    local secs=$1 what=$2; shift 2
    local tries=$((secs * 10))
    while ((tries-- > 0)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fleet_log "timed out after ${secs}s waiting for $what"
    return 1
}

fleet_gen_secret() { openssl rand -hex "${1:-24}"; }

# true when PID is alive and its command name contains NAME
fleet_pid_alive() {
    local pid=$1 name=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ -z $name ]] && return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# fleet_pidfile_alive FILE NAME
fleet_pidfile_alive() {
    [[ -s $1 ]] && fleet_pid_alive "$(cat "$1")" "$2"
}

# fleet_stop_pid FILE NAME [SIGNAL]: signals the process and waits (max 10 s)
fleet_stop_pid() {
    local file=$1 name=$2 sig=${3:-TERM} pid i
    fleet_pidfile_alive "$file" "$name" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill -"$sig" "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        fleet_log "$name ($pid) did not stop, killing it"
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

# ---------------------------------------------------------------- PostgreSQL

fleet_pg_bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $d ]] || fleet_die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    printf '%s\n' "$d"
}

# runs a command as the postgres OS user (PostgreSQL refuses to run as root)
fleet_as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# lets the postgres user traverse DIR and all its parents (adds a+x where missing)
fleet_make_reachable() {
    local d
    d=$(readlink -f "$1")
    while [[ -n $d && $d != / ]]; do
        if [[ $(( 0$(stat -c %a "$d") & 0001 )) -eq 0 ]]; then
            chmod a+x "$d" 2>/dev/null || true
        fi
        d=$(dirname "$d")
    done
}

# fleet_pg_mkdir DIR: a directory owned by postgres
fleet_pg_mkdir() {
    mkdir -p "$1"
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$1"; fi
    chmod 0755 "$1"
}

# fleet_pg_initdb DATADIR
fleet_pg_initdb() {
    local data=$1 bin
    bin=$(fleet_pg_bindir)
    fleet_make_reachable "$(dirname "$data")"
    fleet_pg_mkdir "$data"
    chmod 0700 "$data"
    fleet_run_logged "$(dirname "$data")/initdb.log" fleet_as_postgres "$bin/initdb" \
        -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 --no-instructions \
        --auth-local=trust --auth-host=scram-sha-256 ${FLEET_PG_NOSYNC:+--no-sync}
}

# fleet_pg_configure DATADIR PORT SOCKDIR [test]: (re)writes fleet.conf,
# included from postgresql.conf.  "test" trades durability for speed.
fleet_pg_configure() {
    local data=$1 port=$2 sock=$3 mode=${4:-}
    fleet_pg_mkdir "$sock"
    {
        echo "# written by fleetgate scripts; rewritten on every start"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$sock'"
        echo "max_connections = 100"
        echo "logging_collector = off"
        if [[ $mode == test ]]; then
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
            echo "shared_buffers = 16MB"
        fi
    } >"$data/fleet.conf"
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$data/fleet.conf"; fi
    grep -q "^include_if_exists = 'fleet.conf'" "$data/postgresql.conf" ||
        echo "include_if_exists = 'fleet.conf'" >>"$data/postgresql.conf"
}

# fleet_pg_start DATADIR LOGFILE
fleet_pg_start() {
    local data=$1 log=$2 bin
    bin=$(fleet_pg_bindir)
    touch "$log"
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$log"; fi
    fleet_as_postgres "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null ||
        { tail -n 30 "$log" >&2; fleet_die "PostgreSQL did not start (log: $log)"; }
}

# fleet_pg_stop DATADIR [MODE]
fleet_pg_stop() {
    local data=$1 mode=${2:-fast} bin
    bin=$(fleet_pg_bindir)
    [[ -f $data/postmaster.pid ]] || return 0
    fleet_as_postgres "$bin/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
}

fleet_pg_running() {
    local bin
    bin=$(fleet_pg_bindir)
    [[ -f $1/postmaster.pid ]] && fleet_as_postgres "$bin/pg_ctl" -D "$1" status >/dev/null 2>&1
}

# fleet_pg_superuser_psql SOCKDIR PORT ARGS...: psql as the postgres superuser
fleet_pg_superuser_psql() {
    local sock=$1 port=$2; shift 2
    psql -h "$sock" -p "$port" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

# fleet_pg_bootstrap SOCKDIR PORT PASSWORD: role fleet + database fleet (idempotent)
fleet_pg_bootstrap() {
    local sock=$1 port=$2 pw=$3
    fleet_pg_superuser_psql "$sock" "$port" -v pw="$pw" <<'SQL' >/dev/null
SELECT format('CREATE ROLE fleet LOGIN PASSWORD %L', :'pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleet') \gexec
SELECT format('ALTER ROLE fleet LOGIN PASSWORD %L', :'pw') \gexec
SELECT 'CREATE DATABASE fleet OWNER fleet'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'fleet') \gexec
SQL
}

# URI form: no spaces, so it fits a KEY=value line unquoted
fleet_pg_dsn() { printf 'postgresql://fleet:%s@127.0.0.1:%s/fleet\n' "$2" "$1"; }
# keyword form for nginx.conf
fleet_pg_dsn_kw() { printf 'host=127.0.0.1 port=%s dbname=fleet user=fleet password=%s\n' "$1" "$2"; }

# fleet_pg_make_template DIR: a stopped, migrated cluster in DIR/data with
# role/db fleet; the password is in DIR/password.  Used by scripts/test once
# per run and by FleetStack.pm when FLEET_PG_TEMPLATE is not set.
fleet_pg_make_template() {
    local dir=$1 port pw
    mkdir -p "$dir"
    chmod 0755 "$dir"
    fleet_make_reachable "$dir"
    port=$(fleet_free_port)
    pw=fleet-test-$(fleet_gen_secret 8)
    FLEET_PG_NOSYNC=1 fleet_pg_initdb "$dir/data" || return 1
    fleet_pg_configure "$dir/data" "$port" "$dir/run" test
    fleet_pg_start "$dir/data" "$dir/template.log"
    if ! fleet_pg_bootstrap "$dir/run" "$port" "$pw" ||
       ! "$FLEET_ROOT/scripts/migrate" "$(fleet_pg_dsn "$port" "$pw")"; then
        fleet_pg_stop "$dir/data" immediate
        return 1
    fi
    fleet_pg_stop "$dir/data" fast
    printf '%s\n' "$pw" >"$dir/password"
}

# ------------------------------------------------------------------- nginx

# fleet_render_conf TEMPLATE OUT KEY=VALUE...: replaces @KEY@ placeholders;
# an unknown placeholder is an error
fleet_render_conf() {
    local tpl=$1 out=$2; shift 2
    perl -e '
        my ($tpl, $out, @kv) = @ARGV;
        my %v = map { /^([A-Z_]+)=(.*)\z/s ? ($1, $2) : die "bad pair $_\n" } @kv;
        open my $in, "<", $tpl or die "$tpl: $!\n";
        local $/; my $t = <$in>;
        $t =~ s/\@([A-Z_]+)\@/exists $v{$1} ? $v{$1} : die "no value for \@$1\@\n"/ge;
        open my $o, ">", "$out.tmp" or die "$out: $!\n";
        print $o $t; close $o or die "$out: $!\n";
        rename "$out.tmp", $out or die "$out: $!\n";' "$tpl" "$out" "$@"
}

# the directory holding ngx_fleet_module.so and fleet-bridge
fleet_build_dir() { printf '%s\n' "${FLEET_BUILD:-$FLEET_ROOT/build}"; }

# fleet_node_deps: the npm packages of scripts/node (real MQTT, WebSocket
# and Socket.IO clients), installed once from package-lock.json
fleet_node_deps() {
    local dir=$FLEET_ROOT/scripts/node
    if [[ ! -d $dir/node_modules || $dir/package-lock.json -nt $dir/node_modules ]]; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
            fleet_die "npm ci in scripts/node failed"
        touch "$dir/node_modules"
    fi
}
