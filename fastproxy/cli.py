"""Command line: `fastproxy run | check | version` (SPEC §1). Nothing else lives here."""

import argparse
import dataclasses
import logging
import platform
import sys
from typing import Optional

from fastproxy import BuildError, __version__, build_mode


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastproxy",
                                description="HTTP/1.1 edge proxy and API gateway for KrakenD configurations")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="validate the configuration and serve")
    run.add_argument("-c", "--config", required=True, help="configuration file (.json, .yaml, .toml)")
    run.add_argument("-p", "--port", type=int, help="listen port (overrides the file's 'port')")
    run.add_argument("-w", "--workers", type=int, help="worker processes (overrides extra_config.fastproxy.workers)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"])
    check = sub.add_parser("check", help="validate the configuration only")
    check.add_argument("-c", "--config", required=True)
    sub.add_parser("version", help="print the version, the Python and whether the hot modules run compiled")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"fastproxy {__version__}")
        print(f"python {platform.python_version()} ({platform.python_implementation()})")
        try:
            print(f"mode {build_mode()}")
        except BuildError as exc:
            print(f"mode broken: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "run":  # fail closed: never serve on a half-compiled or stale build
        try:
            build_mode()
        except BuildError as exc:
            print(f"fastproxy: {exc}", file=sys.stderr)
            return 1
    from fastproxy.config.compile import load
    from fastproxy.config.load import ConfigError

    try:
        snap = load(args.config)
    except ConfigError as exc:
        n, w = len(exc.problems), len(exc.warnings)
        print(f"fastproxy: configuration {args.config} is not valid ({n} error{'s' if n != 1 else ''}, "
              f"{w} warning{'s' if w != 1 else ''}):", file=sys.stderr)
        for warning in exc.warnings:  # shown too: a migrating user sees everything at once
            print(f"  warning: {warning}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  error: {problem}", file=sys.stderr)
        return 1
    if args.command == "check":
        for warning in snap.warnings:
            print(f"  warning: {warning}")
        n, w = len(snap.route_list), len(snap.warnings)
        print(f"Syntax OK: {args.config} ({n} endpoint{'s' if n != 1 else ''}, {w} warning{'s' if w != 1 else ''})")
        return 0
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(process)d] %(message)s")
    for warning in snap.warnings:
        logging.getLogger("fastproxy").warning("config: %s", warning)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            print(f"fastproxy: -p expects a port 0-65535, found {args.port}", file=sys.stderr)
            return 1
        snap = dataclasses.replace(snap, port=args.port)  # the snapshot is frozen: a copy, before it is shared
        if snap.admin_port and snap.admin_port == snap.port:
            print(f"fastproxy: -p {args.port} is the admin port (extra_config.fastproxy.admin.port): choose another",
                  file=sys.stderr)
            return 1
    if args.workers is not None:
        if args.workers < 1:
            print(f"fastproxy: -w expects at least 1 worker, found {args.workers}", file=sys.stderr)
            return 1
        snap = dataclasses.replace(snap, workers=args.workers)
    from fastproxy.server.listen import ListenError
    from fastproxy.server.master import run

    try:
        return run(snap, args.config)
    except ListenError as exc:  # the port or the admin port: the message names which
        print(f"fastproxy: {exc}", file=sys.stderr)
        return 1
