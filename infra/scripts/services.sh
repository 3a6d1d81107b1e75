#!/usr/bin/env bash
# Make this machine ready for quotaflow: RabbitMQ (with the stream plugin on 5552), Redis and
# PostgreSQL running and answering, and the project's database created. Idempotent: running it
# again on a ready machine changes nothing. On a plain Debian machine without the servers it
# installs them with apt.
set -euo pipefail

PG_DB="${QUOTAFLOW_PG_DATABASE:-quotaflow}"
say() { printf '\033[1m[services]\033[0m %s\n' "$*"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then say "$what did not come up within ${seconds}s"; return 1; fi
    sleep 1
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_missing() {
  local pkgs=()
  command -v rabbitmq-server >/dev/null || pkgs+=(rabbitmq-server)
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v pg_ctlcluster >/dev/null || pkgs+=(postgresql)
  if ((${#pkgs[@]})); then
    say "installing ${pkgs[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  say "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 60 PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
}

ensure_database() {
  local psql=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qtA)
  if ! "${psql[@]}" -c 'select 1' >/dev/null 2>&1; then
    # a fresh apt install has peer auth only: open loopback to trust, as on the dev machines
    local hba
    hba=$(su postgres -c "psql -qtAc 'show hba_file'")
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
      su postgres -c "psql -qtAc 'select pg_reload_conf()'" >/dev/null
    fi
  fi
  if [[ "$("${psql[@]}" -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]]; then
    say "creating database $PG_DB"
    "${psql[@]}" -c "create database \"$PG_DB\"" >/dev/null
  fi
}

start_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return; fi
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/quotaflow.log
  wait_for 30 Redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG'
}

start_rabbitmq() {
  if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_for 120 RabbitMQ rabbitmq-diagnostics -q ping
  fi
  if ! rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_stream; then
    say "enabling the rabbitmq_stream plugin"
    rabbitmq-plugins enable rabbitmq_stream >/dev/null
  fi
  # right after a (re)start 5552 can open before streams have recovered: callers retry too
  wait_for 60 "RabbitMQ stream port 5552" port_open 5552
}

install_missing
start_postgres
ensure_database
start_redis
start_rabbitmq
say "ready: PostgreSQL 5432 (db $PG_DB), Redis 6379, RabbitMQ 5672 + streams 5552"
