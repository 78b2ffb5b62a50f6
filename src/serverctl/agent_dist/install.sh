#!/usr/bin/env bash
# ServerCTL agent installer: download balctl, verify it, enrol this host, start the heartbeat.
#
#   curl -fsSL https://CP/agent/install.sh | sudo bash -s -- \
#       --server https://CP --key KEY --hostname edge-1 \
#       [--source-ip A] [--ca-file F] [--public-ip A]
#
# Safe to run again: it replaces the zipapp, enrols again (rewriting agent.env) and restarts the
# agent. Every host path is prefixed by $BALCTL_ROOT when it is set (tests run under a temp dir).
# The enrolment key is never echoed, and reaches balctl through its environment, not its argv,
# so it does not show in `ps`.
#
# The whole script is one function called on the last line: bash reads all of it before running
# any of it, so a download cut short in `curl | bash` cannot run half a script.
set -euo pipefail

UNIT_NAME="balctl-heartbeat.service"

say() { printf 'balctl install: %s\n' "$*"; }
die() {
	printf 'balctl install: error: %s\n' "$*" >&2
	exit 1
}
# Exit codes follow balctl's: 1 usage/config/local error, 2 enrolment refused, 3 server unreachable.
die_with() {
	local code="$1"
	shift
	printf 'balctl install: error: %s\n' "$*" >&2
	exit "$code"
}

usage() {
	cat <<'EOF'
usage: curl -fsSL https://CP/agent/install.sh | sudo bash -s -- \
         --server https://CP --key KEY --hostname NAME \
         [--source-ip A] [--ca-file F] [--public-ip A]

  --server URL     the control plane (https://...; plain http only to 127.0.0.0/8, ::1, localhost)
  --key KEY        the member's enrolment secret (shown once when the member was created)
  --hostname NAME  this member's hostname, as entered in ServerCTL
  --source-ip A    send agent traffic from this local IPv4 address (and report it)
  --ca-file F      trust only this CA certificate for the control plane's TLS
  --public-ip A    the IPv4 address DNS should point at (hosts behind NAT)
EOF
}

usage_error() {
	usage >&2
	die "$*"
}

# The host part of a URL's authority: [v6] or name-or-v4, without the port.
url_host() {
	local rest authority
	rest="${1#*://}"
	authority="${rest%%/*}"
	if [[ "$authority" == \[* ]]; then
		authority="${authority#\[}"
		printf '%s' "${authority%%\]*}"
	else
		printf '%s' "${authority%%:*}"
	fi
}

is_loopback() {
	local host
	host="$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')"
	local v4_loopback='^127[.][0-9]{1,3}[.][0-9]{1,3}[.][0-9]{1,3}$'
	[[ "$host" == "localhost" || "$host" == "::1" || "$host" =~ $v4_loopback ]]
}

need_tool() { # tool, package name on apt and dnf systems
	command -v "$1" >/dev/null 2>&1 ||
		die "$1 is not installed; install it first (apt-get install $2, or dnf install $2)"
}

parse_args() {
	SERVER="" KEY="" HOST="" SOURCE_IP="" CA_FILE="" PUBLIC_IP=""
	local name value
	while [ $# -gt 0 ]; do
		case "$1" in
		-h | --help)
			usage
			exit 0
			;;
		--server=* | --key=* | --hostname=* | --source-ip=* | --ca-file=* | --public-ip=*)
			name="${1%%=*}"
			value="${1#*=}"
			shift
			;;
		--server | --key | --hostname | --source-ip | --ca-file | --public-ip)
			[ $# -ge 2 ] || usage_error "$1 needs a value"
			name="$1"
			value="$2"
			shift 2
			;;
		-*) usage_error "unknown option ${1%%=*}" ;;
		# Not printed: a stray word here is often a key that lost its --key.
		*) usage_error "unexpected argument (not shown, in case it is the key)" ;;
		esac
		[ -n "$value" ] || usage_error "$name needs a non-empty value"
		case "$name" in
		--server) SERVER="$value" ;;
		--key) KEY="$value" ;;
		--hostname) HOST="$value" ;;
		--source-ip) SOURCE_IP="$value" ;;
		--ca-file) CA_FILE="$value" ;;
		--public-ip) PUBLIC_IP="$value" ;;
		esac
	done
}

check_args() {
	local missing=() host
	[ -n "$SERVER" ] || missing+=(--server)
	[ -n "$KEY" ] || missing+=(--key)
	[ -n "$HOST" ] || missing+=(--hostname)
	[ ${#missing[@]} -eq 0 ] || usage_error "missing ${missing[*]}"

	SERVER="${SERVER%/}"
	local url_re='^https?://[^/?#@[:space:]]+(/[^?#[:space:]]*)?$'
	local host_re='^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?[.]?$'
	local ipv4_re='^[0-9]{1,3}([.][0-9]{1,3}){3}$'
	[[ "$SERVER" =~ $url_re ]] ||
		die "--server must look like https://serverctl.example.com (got ${SERVER:0:100})"
	host="$(url_host "$SERVER")"
	if [[ "$SERVER" == http://* ]] && ! is_loopback "$host"; then
		# The zipapp and the key would cross the network unprotected.
		die "--server uses plain http to $host; use https (with --ca-file for a private CA)"
	fi
	# A first check with a clear message; balctl --enrol checks both exactly (RFC 1123, IPv4).
	[[ "$HOST" =~ $host_re ]] ||
		die "--hostname must be letters, digits, dots and hyphens (e.g. edge-1)"
	[ -z "$SOURCE_IP" ] || [[ "$SOURCE_IP" =~ $ipv4_re ]] || die "--source-ip must be an IPv4 address"
	[ -z "$PUBLIC_IP" ] || [[ "$PUBLIC_IP" =~ $ipv4_re ]] || die "--public-ip must be an IPv4 address"
	if [ -n "$CA_FILE" ]; then
		if [ ! -f "$CA_FILE" ] || [ ! -r "$CA_FILE" ]; then
			die "--ca-file $CA_FILE is not a readable file"
		fi
		CA_FILE="$(cd "$(dirname "$CA_FILE")" && pwd)/$(basename "$CA_FILE")"
	fi
}

check_root() {
	# As balctl itself: a private BALCTL_ROOT (tests) is the one case a non-root user may install.
	[ "$(id -u)" -eq 0 ] || [ -n "${BALCTL_ROOT:-}" ] ||
		die "this installer must run as root: curl -fsSL .../agent/install.sh | sudo bash -s -- ..."
}

set_paths() {
	local root_re='^/[A-Za-z0-9._/-]+$'
	ROOT="${BALCTL_ROOT:-}"
	ROOT="${ROOT%/}"
	if [ -n "$ROOT" ]; then
		# It ends up in a systemd unit: keep it to characters that need no quoting there.
		[[ "$ROOT" =~ $root_re ]] ||
			die "BALCTL_ROOT must be an absolute path of letters, digits, '.', '_', '-' and '/'"
		export BALCTL_ROOT="$ROOT"
	else
		unset BALCTL_ROOT
	fi
	LIB_DIR="$ROOT/usr/local/lib/balctl"
	PYZ="$LIB_DIR/balctl.pyz"
	ENV_FILE="$ROOT/etc/balctl/agent.env"
	UNIT_DIR="$ROOT/etc/systemd/system"
	RUN_DIR="$ROOT/run/balctl"
	PIDFILE="$RUN_DIR/balctl.pid"
	LOG_DIR="$ROOT/var/log/balctl"
	LOG_FILE="$LOG_DIR/agent.log"
}

check_tools() {
	need_tool python3 python3
	need_tool curl curl
	need_tool sha256sum coreutils
	PYTHON="$(command -v python3)"
	"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' </dev/null ||
		die "balctl needs Python 3.9 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"
	# The interpreter itself rather than a wrapper (pyenv shims, /usr/bin/env tricks), so the
	# systemd unit and the background agent run the exact Python that was checked here.
	PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)' </dev/null)"
	[ -x "$PYTHON" ] || die "cannot find the python3 interpreter's own path"
}

download_and_verify() {
	local tmp="$1" expected actual
	local curl_args=(-fsS --retry 3 --connect-timeout 10 --max-time 300)
	[ -z "$CA_FILE" ] || curl_args+=(--cacert "$CA_FILE")
	say "downloading $SERVER/agent/balctl.pyz"
	curl "${curl_args[@]}" -o "$tmp/balctl.pyz" "$SERVER/agent/balctl.pyz" </dev/null ||
		die_with 3 "could not download $SERVER/agent/balctl.pyz (curl's reason is above)"
	curl "${curl_args[@]}" -o "$tmp/balctl.pyz.sha256" "$SERVER/agent/balctl.pyz.sha256" </dev/null ||
		die_with 3 "could not download $SERVER/agent/balctl.pyz.sha256 (curl's reason is above)"
	# The checksum file is "<hex>  balctl.pyz", as sha256sum writes it.
	expected="$(awk 'NR == 1 { print tolower($1) }' "$tmp/balctl.pyz.sha256")"
	[[ "$expected" =~ ^[0-9a-f]{64}$ ]] || die "balctl.pyz.sha256 does not hold a SHA-256 digest"
	actual="$(sha256sum "$tmp/balctl.pyz" | awk '{ print $1 }')"
	[ "$actual" = "$expected" ] ||
		die "balctl.pyz does not match its SHA-256 (expected $expected, got $actual); not installing it"
}

install_pyz() {
	local tmp="$1"
	mkdir -p "$LIB_DIR"
	chmod 0755 "$LIB_DIR"
	# Copy beside the target, then rename: a running agent never sees a half-written file.
	cp "$tmp/balctl.pyz" "$LIB_DIR/.balctl.pyz.$$"
	chmod 0644 "$LIB_DIR/.balctl.pyz.$$"
	mv -f "$LIB_DIR/.balctl.pyz.$$" "$PYZ"
	say "installed $PYZ"
}

enrol() {
	local args=(--enrol --server "$SERVER" --hostname "$HOST") rc=0
	[ -z "$SOURCE_IP" ] || args+=(--source-ip "$SOURCE_IP")
	[ -z "$CA_FILE" ] || args+=(--ca-file "$CA_FILE")
	[ -z "$PUBLIC_IP" ] || args+=(--public-ip "$PUBLIC_IP")
	BALCTL_KEY="$KEY" "$PYTHON" "$PYZ" "${args[@]}" </dev/null || rc=$?
	case "$rc" in
	0) ;;
	2) die_with 2 "the control plane refused the enrolment (reason above); check the key, hostname and allowed IPs" ;;
	3) die_with 3 "could not reach the control plane at $SERVER (reason above)" ;;
	*) die_with "$rc" "enrolment failed (exit $rc; reason above)" ;;
	esac
}

render_unit() {
	printf '%s\n' \
		"# Written by the ServerCTL agent installer; running it again rewrites this file." \
		"[Unit]" \
		"Description=ServerCTL agent heartbeat (balctl)" \
		"After=network-online.target" \
		"Wants=network-online.target" \
		"# Keep restarting however often it fails: the operator may fix the cause at any time." \
		"StartLimitIntervalSec=0" \
		"" \
		"[Service]" \
		"Type=simple" \
		"EnvironmentFile=$ENV_FILE"
	[ -z "$ROOT" ] || printf '%s\n' "Environment=BALCTL_ROOT=$ROOT"
	printf '%s\n' \
		"ExecStart=$PYTHON $PYZ run" \
		"Restart=always" \
		"RestartSec=2" \
		"" \
		"[Install]" \
		"WantedBy=multi-user.target"
}

start_with_systemd() {
	local unit="$UNIT_DIR/$UNIT_NAME" was_active=0
	mkdir -p "$UNIT_DIR"
	render_unit >"$unit.tmp.$$"
	chmod 0644 "$unit.tmp.$$"
	mv -f "$unit.tmp.$$" "$unit"
	say "wrote $unit"
	systemctl is-active --quiet "$UNIT_NAME" </dev/null && was_active=1
	systemctl daemon-reload </dev/null || die "systemctl daemon-reload failed"
	systemctl enable --now "$UNIT_NAME" </dev/null || die "could not enable and start $UNIT_NAME"
	if [ "$was_active" -eq 1 ]; then
		# It was already running the old zipapp: restart it onto the new one.
		systemctl restart "$UNIT_NAME" </dev/null || die "could not restart $UNIT_NAME"
	fi
	sleep 1
	systemctl is-active --quiet "$UNIT_NAME" </dev/null ||
		die "$UNIT_NAME is not running; see: journalctl -u $UNIT_NAME -n 50"
	HOW="under systemd as $UNIT_NAME (logs: journalctl -u $UNIT_NAME -f)"
}

# True when $1 is a balctl agent (checked through /proc where there is one), so that a stale
# pidfile whose number now belongs to another process never gets that process killed.
is_agent_pid() {
	[ -r "/proc/$1/cmdline" ] || return 0
	tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'balctl\.pyz'
}

stop_previous_agent() {
	local old _
	[ -f "$PIDFILE" ] || return 0
	old="$(head -n 1 "$PIDFILE" | tr -dc '0-9')"
	[ -n "$old" ] && [ "$old" -gt 1 ] || return 0
	kill -0 "$old" 2>/dev/null && is_agent_pid "$old" || return 0
	say "stopping the previous agent (pid $old)"
	kill -TERM "$old" 2>/dev/null || true
	for _ in $(seq 1 150); do
		kill -0 "$old" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$old" 2>/dev/null || true
}

start_in_background() {
	local launcher=() pid
	say "systemd is not running here; starting the agent in the background" \
		"(pidfile $PIDFILE, log $LOG_FILE)"
	mkdir -p "$RUN_DIR" "$LOG_DIR"
	stop_previous_agent
	# setsid: its own session, so the end of this sudo/ssh session does not take it down.
	command -v setsid >/dev/null 2>&1 && launcher+=(setsid)
	launcher+=(nohup)
	# The agent inherits this environment (BALCTL_ROOT, BALCTL_HAPROXY_PIDFILE ...), but not the key.
	"${launcher[@]}" "$PYTHON" "$PYZ" run </dev/null >>"$LOG_FILE" 2>&1 &
	pid=$!
	printf '%s\n' "$pid" >"$PIDFILE.tmp.$$"
	mv -f "$PIDFILE.tmp.$$" "$PIDFILE"
	sleep 1
	if ! kill -0 "$pid" 2>/dev/null; then
		tail -n 20 "$LOG_FILE" >&2 || true
		die "the agent stopped right after starting; the end of $LOG_FILE is above"
	fi
	HOW="in the background as pid $pid (log: $LOG_FILE)"
}

main() {
	check_root
	parse_args "$@"
	check_args
	set_paths
	check_tools

	TMP_DIR="$(mktemp -d)"
	trap 'rm -rf "$TMP_DIR"' EXIT
	download_and_verify "$TMP_DIR"
	install_pyz "$TMP_DIR"
	enrol

	if [ -d "$ROOT/run/systemd/system" ] && command -v systemctl >/dev/null 2>&1; then
		start_with_systemd
	else
		start_in_background
	fi
	say "done: $("$PYTHON" "$PYZ" --version </dev/null) enrolled as $HOST with $SERVER, running $HOW"
}

main "$@"
