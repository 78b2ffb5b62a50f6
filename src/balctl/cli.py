"""The command line: `--enrol`, `run`, `--provision-haproxy`, `--update` and `--version`.

Exit codes: 0 ok, 1 usage or configuration error, 2 the server refused the enrolment,
3 the server could not be reached. Errors are one line on stderr; logs go to stderr too, where
journald (which adds its own timestamps) or the background-mode log file picks them up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable, Dict, List, NoReturn, Optional, Sequence

from balctl import __version__, validate
from balctl.config import KEY, AgentConfig, load_config
from balctl.deferred_jobs import DeferredJobRunner
from balctl.enrich import Enricher, stats_interval
from balctl.errors import AgentError, ConfigError, EnrolError, TransportError
from balctl.heartbeat import HeartbeatLoop
from balctl.jobs.update import note_running, update_from_server
from balctl.paths import ROOT_ENV, HostPaths
from balctl.proc import Deadline
from balctl.restart import restart_running_agent, restart_self, running_pyz
from balctl.transport import ControlPlaneClient

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3

LOG_LEVEL_ENV = "BALCTL_LOG_LEVEL"
# On SIGTERM, how long a running job may take to finish before the agent exits anyway.
JOB_STOP_GRACE_S = 10.0
logger = logging.getLogger("balctl")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse exits 2 on a usage error, but 2 means "server refused" here.
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="balctl",
        description="ServerCTL host agent: enrol this host, then send heartbeats and run jobs.",
        epilog="Exit codes: 0 ok, 1 usage/config error, 2 enrolment refused, 3 server unreachable.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--enrol", action="store_true", help="enrol this host and write agent.env")
    parser.add_argument("--server", metavar="URL", help="control plane URL (https://...)")
    parser.add_argument(
        "--key", metavar="KEY", help=f"enrolment secret (or set {KEY} to keep it out of ps)"
    )
    parser.add_argument("--hostname", metavar="H", help="this member's hostname, as enrolled")
    parser.add_argument("--source-ip", metavar="A", help="send from this local IPv4 address")
    parser.add_argument("--ca-file", metavar="F", help="trust only this CA for the server's TLS")
    parser.add_argument("--public-ip", metavar="A", help="IPv4 address to report (NAT'd hosts)")
    parser.add_argument(
        "--provision-haproxy",
        action="store_true",
        help="install HAProxy with apt-get or dnf unless it is installed",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace this zipapp with the control plane's current one, restart the agent",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="send heartbeats and run jobs until SIGTERM/SIGINT")
    run.add_argument(
        "--source-ip", dest="run_source_ip", metavar="A", help="send from this local IPv4 address"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return _fail(f"{exc} (see balctl --help)", EXIT_CONFIG)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.version:
        sys.stdout.write(f"balctl {__version__}\n")
        return EXIT_OK
    try:
        return _dispatch(args)
    except _UsageError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except EnrolError as exc:
        return _fail(str(exc), EXIT_REFUSED)
    except TransportError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except AgentError as exc:
        return _fail(str(exc), EXIT_CONFIG)


def _dispatch(args: argparse.Namespace) -> int:
    actions: Dict[str, Callable[[argparse.Namespace], int]] = {
        "--enrol": _enrol,
        "--provision-haproxy": _provision,
        "--update": _update,
        "run": _run,
    }
    chosen = [
        name
        for name, wanted in (
            ("--enrol", args.enrol),
            ("--provision-haproxy", args.provision_haproxy),
            ("--update", args.update),
            ("run", args.command == "run"),
        )
        if wanted
    ]
    if len(chosen) > 1:
        raise _UsageError(f"{' and '.join(chosen)} cannot be combined")
    if not chosen:
        raise _UsageError(
            "nothing to do: use --enrol, run, --provision-haproxy, --update or --version "
            "(see balctl --help)"
        )
    if chosen[0] != "--enrol":
        _refuse_stray_options(args, chosen[0])
    return actions[chosen[0]](args)


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"balctl: error: {message}\n")
    return code


def _need_root(what: str) -> None:
    if os.geteuid() != 0 and not os.environ.get(ROOT_ENV):
        raise ConfigError(
            f"balctl {what} must run as root (it uses /etc/balctl and /run); use sudo, or set "
            f"{ROOT_ENV}=<dir> to work under a private root"
        )


def _refuse_stray_options(args: argparse.Namespace, action: str) -> None:
    stray = [
        flag
        for flag, value in (
            ("--server", args.server),
            ("--key", args.key),
            ("--hostname", args.hostname),
            ("--ca-file", args.ca_file),
            ("--public-ip", args.public_ip),
            ("--source-ip (before run)", args.source_ip),
        )
        if value
    ]
    if stray:
        raise _UsageError(f"{', '.join(stray)} only go with --enrol, not with {action}")


def _enrol(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(KEY, "")
    missing = [
        flag
        for flag, value in (
            ("--server", args.server),
            ("--key", key),
            ("--hostname", args.hostname),
        )
        if not value
    ]
    if missing:
        raise _UsageError(f"--enrol needs {', '.join(missing)}")
    _need_root("--enrol")
    _setup_logging(timestamps=False)
    from balctl.enrol import enrol  # here: `run` never needs it (see deferred_jobs.py on memory)

    result = enrol(
        args.server,
        key,
        args.hostname,
        source_ip=args.source_ip,
        ca_file=args.ca_file,
        public_ip=args.public_ip,
    )
    sys.stdout.write(
        f"balctl: enrolled {result.hostname} as member {result.member_id} of pool "
        f"{result.pool_name!r} (pool {result.pool_id}); settings in {result.agent_env}\n"
    )
    return EXIT_OK


def _provision(args: argparse.Namespace) -> int:
    # Here, not at the top: `run` never needs it (see deferred_jobs.py on memory).
    from balctl.jobs.install import INSTALL_TIMEOUT_S, provision

    _need_root("--provision-haproxy")
    _setup_logging(timestamps=False)
    outcome = provision(Deadline(INSTALL_TIMEOUT_S))
    if outcome.output.strip():
        sys.stdout.write(outcome.output.rstrip("\n") + "\n")
    if not outcome.ok:
        return _fail(outcome.summary, EXIT_CONFIG)
    sys.stdout.write(f"balctl: {outcome.summary}\n")
    return EXIT_OK


def _update(args: argparse.Namespace) -> int:
    _need_root("--update")
    _setup_logging(timestamps=False)
    paths = HostPaths.from_env()
    cfg = load_config(paths)
    target = running_pyz(paths)
    version = update_from_server(cfg, target)
    if version is None:
        sys.stdout.write(f"balctl: {target} is already the control plane's agent\n")
        return EXIT_OK
    sys.stdout.write(f"balctl: installed {version} as {target}\n")
    sys.stdout.write(f"balctl: {restart_running_agent(paths)}\n")
    return EXIT_OK


def _client(cfg: AgentConfig) -> ControlPlaneClient:
    return ControlPlaneClient(cfg.server, cfg.key, ca_file=cfg.ca_file, source_ip=cfg.source_ip)


def _run(args: argparse.Namespace) -> int:
    _need_root("run")
    # journald stamps every line itself; the background-mode log file needs our own stamps.
    _setup_logging(timestamps="JOURNAL_STREAM" not in os.environ)
    paths = HostPaths.from_env()
    cfg = load_config(paths)
    if cfg.log_file:
        from balctl import logfile  # logging.handlers is half a megabyte: only when asked for

        logfile.attach(logger, cfg.log_file)
    run_args = ["run"]
    if args.run_source_ip:
        cfg = cfg._replace(source_ip=validate.ipv4(args.run_source_ip, "--source-ip"))
        run_args += ["--source-ip", cfg.source_ip or ""]
    pyz = running_pyz(paths)
    note_running(pyz)
    _recover_restores(paths, cfg)
    stop = threading.Event()
    restart = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            # `balctl --update` asks for this; the restart waits for a running job to end.
            logger.info("received %s; restarting once no job is running", name)
            restart.set()
        else:
            logger.info("received %s; stopping", name)
            stop.set()

    def on_restart() -> None:
        restart.set()
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    # The job runner starts with the first job, on its own connection (deferred_jobs.py).
    runner = DeferredJobRunner(cfg, paths, lambda: _client(cfg), stop, on_restart=on_restart)
    with _client(cfg) as client:
        enricher = Enricher(paths, stats_interval())
        loop = HeartbeatLoop(cfg, client, paths=paths, jobs=runner, enricher=enricher)
        # Both loops run in worker threads so that the signal handler, which runs in the main
        # thread, never interrupts a thread that holds the stop event's internal lock.
        beats = threading.Thread(target=loop.run, args=(stop,), name="heartbeat", daemon=True)
        beats.start()
        while beats.is_alive():
            beats.join(1.0)
            if restart.is_set() and not runner.running():
                stop.set()
        if not runner.close(JOB_STOP_GRACE_S):
            logger.warning("stopping while job %s is still running", runner.running())
    if restart.is_set():
        return restart_self(pyz, run_args)
    return EXIT_OK


def _recover_restores(paths: HostPaths, cfg: AgentConfig) -> None:
    """A restore interrupted by a crash or a kill is undone (or cleaned up) before anything
    else. The recovery code is loaded only when a restore left a work folder (rarely)."""
    try:
        if not any(entry.is_dir() for entry in paths.restore_dir.iterdir()):
            return
    except OSError:
        return  # no restore folder: no restore ever ran, or the last one cleaned up
    try:
        from balctl.restore_swap import recover

        recover(paths, cfg)
    except Exception:  # the heartbeat matters more: report it and go on
        logger.exception("cannot recover interrupted restores")


class _Formatter(logging.Formatter):
    def __init__(self, timestamps: bool) -> None:
        prefix = "%(asctime)s " if timestamps else ""
        super().__init__(f"{prefix}balctl[%(levelname)s] %(message)s")


def _setup_logging(timestamps: bool) -> None:
    name = os.environ.get(LOG_LEVEL_ENV, "INFO").strip().upper() or "INFO"
    level = logging.getLevelName(name)
    bad_level = not isinstance(level, int)
    # Replace our handler on every call: it must write to the current sys.stderr.
    handlers: List[logging.Handler] = [h for h in logger.handlers if getattr(h, "_balctl", False)]
    for handler in handlers:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(timestamps))
    handler._balctl = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if bad_level else level)
    if bad_level:
        logger.warning("%s=%r is not a log level; using INFO", LOG_LEVEL_ENV, name)
