"""The command line: `--enrol`, `run` and `--version`.

Exit codes: 0 ok, 1 usage or configuration error, 2 the server refused the enrolment,
3 the server could not be reached. Errors are one line on stderr; logs go to stderr too, where
journald (which adds its own timestamps) or the background-mode log file picks them up.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import List, NoReturn, Optional, Sequence

from balctl import __version__, validate
from balctl.config import KEY, load_config
from balctl.enrol import enrol
from balctl.errors import AgentError, ConfigError, EnrolError, TransportError
from balctl.heartbeat import HeartbeatLoop
from balctl.paths import ROOT_ENV, HostPaths
from balctl.transport import ControlPlaneClient

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3

LOG_LEVEL_ENV = "BALCTL_LOG_LEVEL"
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
        description="ServerCTL host agent: enrol this host, then send heartbeats.",
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
    # Later issues add --provision-haproxy (install and configure HAProxy) and --update (replace
    # this zipapp with the control plane's current one) here.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", help="send heartbeats until SIGTERM/SIGINT")
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
        if args.enrol and args.command:
            raise _UsageError("--enrol and run cannot be combined")
        if args.enrol:
            return _enrol(args)
        if args.command == "run":
            _refuse_stray_options(args)
            return _run(args)
        raise _UsageError("nothing to do: use --enrol, run or --version (see balctl --help)")
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


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"balctl: error: {message}\n")
    return code


def _need_root(what: str) -> None:
    if os.geteuid() != 0 and not os.environ.get(ROOT_ENV):
        raise ConfigError(
            f"balctl {what} must run as root (it uses /etc/balctl and /run); use sudo, or set "
            f"{ROOT_ENV}=<dir> to work under a private root"
        )


def _refuse_stray_options(args: argparse.Namespace) -> None:
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
        raise _UsageError(f"{', '.join(stray)} only go with --enrol; run reads agent.env")


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


def _run(args: argparse.Namespace) -> int:
    _need_root("run")
    # journald stamps every line itself; the background-mode log file needs our own stamps.
    _setup_logging(timestamps="JOURNAL_STREAM" not in os.environ)
    paths = HostPaths.from_env()
    cfg = load_config(paths)
    if args.run_source_ip:
        cfg = dataclasses.replace(cfg, source_ip=validate.ipv4(args.run_source_ip, "--source-ip"))
    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        logger.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ControlPlaneClient(
        cfg.server, cfg.key, ca_file=cfg.ca_file, source_ip=cfg.source_ip
    ) as client:
        loop = HeartbeatLoop(cfg, client, paths=paths)
        # The loop runs in a worker thread so that the signal handler, which runs in the main
        # thread, never interrupts a thread that holds the stop event's internal lock.
        worker = threading.Thread(target=loop.run, args=(stop,), name="heartbeat", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(1.0)
    return EXIT_OK


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
