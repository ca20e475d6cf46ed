#!/usr/bin/env bash
# CI for the reposafe .deb (run as root on a Debian machine; called by .ci/run):
# builds the release binary (a no-op when up to date) and the .deb, lints it,
# installs it with dpkg, checks the installed files, user and unit
# (systemd-analyze verify), runs the packaged daemon with the packaged config as
# the reposafe user, upgrades in place, then removes and purges it and checks
# that the data directory survives the purge. Leaves the machine as it found it.
#
#   packaging/ci.sh [--binary PATH] [--no-daemon-test]
#
#   --binary PATH     package this executable instead of building the release binary
#                     (cargo's target dir: $CARGO_TARGET_DIR, default target/, then release/reposafe)
#   --no-daemon-test  skip running the daemon (only for binaries older than `--config`);
#                     the skip is reported, never silent
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

binary=""
daemon_test=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || { echo "ci.sh: --binary needs a path" >&2; exit 2; }; binary=$2; shift 2 ;;
    --no-daemon-test) daemon_test=0; shift ;;
    *) echo "ci.sh: unknown argument '$1' (expected --binary PATH or --no-daemon-test)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
step() { echo; echo "--- packaging: $* ($(( $(date +%s) - start )) s)"; }
fail() { echo "packaging/ci.sh: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs and purges the package)"

data=/var/lib/reposafe
unit=/usr/lib/systemd/system/reposafe.service
conffile=/etc/reposafe/reposafe.toml
ci_mark=.reposafe-packaging-ci   # marks a data dir this script created
daemon_pid=""

step "tools"
need=(lintian systemd dpkg-dev binutils adduser)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "machine state"
# Installed, half-installed or removed with its conffiles left: anything but absent.
pkg_present() {
  local st
  st=$(dpkg-query -W -f='${db:Status-Status}' reposafe 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != not-installed ]
}
leftover=0
if [ -e "$data" ]; then
  if [ -e "$data/$ci_mark" ]; then
    echo "removing $data left by an interrupted run of this script"
    rm -rf "$data"
    leftover=1
  else
    fail "$data exists and was not created by this script: it may hold real backups; run on a machine without reposafe data"
  fi
fi
if pkg_present; then
  echo "reposafe is installed (or not purged) already; purging it first"
  dpkg --purge reposafe </dev/null
fi
user_existed=0
if getent passwd reposafe >/dev/null; then user_existed=1; fi
# A user next to a leftover data dir was created by that interrupted run too.
if [ "$leftover" = 1 ]; then user_existed=0; fi

cleanup() {
  set +e
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -KILL "$daemon_pid"; wait "$daemon_pid" 2>/dev/null
  fi
  if pkg_present; then dpkg --purge reposafe </dev/null >/dev/null 2>&1; fi
  if [ -e "$data/$ci_mark" ]; then rm -rf "$data"; fi
  if [ "$user_existed" = 0 ] && getent passwd reposafe >/dev/null; then
    userdel reposafe
    if getent group reposafe >/dev/null; then groupdel reposafe; fi
  fi
}
trap cleanup EXIT

step "release binary"
if [ -z "$binary" ]; then
  cargo build --release --bin reposafe
  # Wherever cargo put it: CARGO_TARGET_DIR or build.target-dir if set, else target/.
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  binary=${target_dir:-target}/release/reposafe
  [ -x "$binary" ] || fail "cargo build --release did not produce $binary"
fi
cargo_version=$(sed -n '/^\[package\]/,/^\[/{s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p}' Cargo.toml | head -n 1)
echo "binary: $binary (Cargo.toml version $cargo_version)"

step "build the .deb"
deb=$(bash packaging/build-deb.sh --binary "$binary" --out "$repo/target/debian" | tail -n 1)
[ -f "$deb" ] || fail "build-deb.sh did not produce a package"
ls -l "$deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --contents "$deb"

step "lintian (fails on errors, shows warnings and info)"
lintian --fail-on error --display-info "$deb" || fail "lintian reported errors"
echo "lintian: no errors"

step "install (dpkg -i, fresh)"
dpkg -i "$deb" </dev/null
touch "$data/$ci_mark"

step "installed files, user, data directory"
[ "$(/usr/bin/reposafe --version)" = "reposafe $cargo_version" ] ||
  fail "/usr/bin/reposafe --version says '$(/usr/bin/reposafe --version)', expected 'reposafe $cargo_version'"
/usr/bin/reposafe --version
dpkg-query -W -f='${Conffiles}\n' reposafe | grep -q "^ $conffile " || fail "$conffile is not registered as a conffile"
[ -f "$conffile" ] || fail "$conffile missing"
grep -q '^data_dir = "/var/lib/reposafe"$' "$conffile" || fail "$conffile does not set data_dir"
[ -f "$unit" ] || fail "$unit missing"
[ -L /etc/systemd/system/multi-user.target.wants/reposafe.service ] ||
  fail "reposafe.service is not enabled (no multi-user.target.wants link)"
IFS=: read -r _ _ uid gid _ home shell < <(getent passwd reposafe) || fail "user reposafe missing"
[ "$uid" -lt 1000 ] || fail "reposafe is not a system user (uid $uid)"
[ "$home" = "$data" ] || fail "reposafe's home is $home, expected $data"
[ "$shell" = /usr/sbin/nologin ] || fail "reposafe's shell is $shell, expected /usr/sbin/nologin"
[ "$(getent group reposafe | cut -d: -f3)" = "$gid" ] || fail "reposafe's primary group is not reposafe"
[ "$(stat -c '%U:%G %a' "$data")" = "reposafe:reposafe 700" ] ||
  fail "$data is $(stat -c '%U:%G %a' "$data"), expected reposafe:reposafe 700"
for f in /usr/share/doc/reposafe/copyright /usr/share/doc/reposafe/changelog.Debian.gz \
  /usr/share/doc/reposafe/README.md /usr/share/man/man1/reposafe.1.gz; do
  [ -f "$f" ] || fail "$f missing"
done
echo "user: $(getent passwd reposafe)"
echo "data: $(stat -c '%U:%G %a %n' "$data")"

step "systemd-analyze verify (must print nothing)"
verify_out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify_out"
[ -z "$verify_out" ] || fail "systemd-analyze verify is not clean: $verify_out"
echo "systemd-analyze verify $unit: clean"
systemd-analyze security --offline=true "$unit" 2>&1 | tail -n 1 || true

step "packaged daemon, packaged config, as the reposafe user"
if [ "$daemon_test" = 1 ]; then
  /usr/bin/reposafe --config "$conffile" --version >/dev/null 2>&1 ||
    fail "the unit runs 'reposafe --config $conffile serve' but this binary refuses --config"
  listen=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$conffile")
  port=${listen##*:}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is already in use; the daemon test needs it free"
  fi
  # As the unit runs it: own user, umask 0077, clean environment, HOME = data dir.
  (cd "$data" && umask 0077 && exec setpriv --reuid=reposafe --regid=reposafe --init-groups \
    env -i PATH=/usr/bin:/bin HOME="$data" LANG=C.UTF-8 \
    /usr/bin/reposafe --config "$conffile" serve) >"$repo/target/debian/daemon.log" 2>&1 &
  daemon_pid=$!
  healthz() {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
    head -n 1 <&3 | tr -d '\r'
  }
  healthy=0
  for _ in $(seq 1 60); do
    kill -0 "$daemon_pid" 2>/dev/null || break
    if status=$(healthz 2>/dev/null) && [[ $status == "HTTP/1."?" 200"* ]]; then
      healthy=1; break
    fi
    sleep 0.5
  done
  [ "$healthy" = 1 ] || { cat "$repo/target/debian/daemon.log"; fail "daemon did not answer GET /healthz with 200 on $listen within 30 s"; }
  echo "GET http://$listen/healthz: $status"
  [ -f "$data/api-token" ] || fail "daemon did not create $data/api-token"
  [ "$(stat -c '%U %a' "$data/api-token")" = "reposafe 600" ] ||
    fail "$data/api-token is $(stat -c '%U %a' "$data/api-token"), expected reposafe 600"
  echo "api token: $(stat -c '%U:%G %a %n' "$data/api-token")"
  kill -TERM "$daemon_pid"
  rc=0
  for _ in $(seq 1 120); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$daemon_pid" 2>/dev/null && fail "daemon still running 60 s after SIGTERM"
  wait "$daemon_pid" || rc=$?
  daemon_pid=""
  [ "$rc" = 0 ] || { cat "$repo/target/debian/daemon.log"; fail "daemon exited with $rc after SIGTERM, expected 0"; }
  echo "SIGTERM: daemon exited 0"
  rm -f "$repo/target/debian/daemon.log"   # its first start may have printed the (test) token
  echo "data dir after the run: $(find "$data" -mindepth 1 -maxdepth 1 -printf '%P ')"
else
  echo "SKIPPED (--no-daemon-test): the packaged daemon was NOT started"
fi

step "upgrade in place keeps a modified conffile and the data"
echo "# changed by packaging/ci.sh" >> "$conffile"
echo "backup data" > "$data/ci-data"
chown reposafe:reposafe "$data/ci-data"
dpkg -i "$deb" </dev/null
grep -q '^# changed by packaging/ci.sh$' "$conffile" || fail "reinstall replaced the modified $conffile"
[ -f "$data/ci-data" ] || fail "reinstall removed $data/ci-data"
echo "conffile kept, data kept"

step "remove (dpkg -r)"
dpkg -r reposafe </dev/null
[ ! -e /usr/bin/reposafe ] || fail "/usr/bin/reposafe still present after dpkg -r"
[ -f "$conffile" ] || fail "dpkg -r removed the conffile (only purge should)"
[ -f "$data/ci-data" ] || fail "dpkg -r removed $data/ci-data"
echo "binary gone; conffile and data kept"

step "purge (dpkg --purge) keeps the backups"
purge_out=$(dpkg --purge reposafe </dev/null 2>&1) || fail "dpkg --purge: $purge_out"
echo "$purge_out"
[ ! -e "$conffile" ] || fail "$conffile still present after purge"
[ ! -e /etc/systemd/system/multi-user.target.wants/reposafe.service ] ||
  fail "enablement link left behind after purge"
[ "$(cat "$data/ci-data" 2>/dev/null)" = "backup data" ] || fail "purge deleted data in $data"
if [ "$daemon_test" = 1 ]; then
  [ -f "$data/api-token" ] || fail "purge deleted $data/api-token"
fi
grep -q "$data was NOT removed" <<<"$purge_out" || fail "purge did not tell the admin that $data was kept"
getent passwd reposafe >/dev/null || fail "purge removed the reposafe user (it may still own files)"
echo "purged; $data kept: $(find "$data" -mindepth 1 -maxdepth 1 -printf '%P ')"

step "packaging OK"
