"""`mtls-operator`: run the controller."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta

import kopf

from mtls_operator import __version__
from mtls_operator.controllers.runtime import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mtls-operator", description="Run the mtls-operator controller.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; globs such as 'team-*' allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("MTLS_WORKERS", "8")),
        help="reconciles running at once (default 8)",
    )
    p.add_argument(
        "--backoff-base",
        type=float,
        default=float(os.environ.get("MTLS_BACKOFF_BASE", "30")),
        help="seconds before the first retry of a failed issuance; doubles up to --backoff-cap",
    )
    p.add_argument(
        "--backoff-cap",
        type=float,
        default=float(os.environ.get("MTLS_BACKOFF_CAP", "3600")),
        help="the longest wait between issuance attempts, in seconds (default 3600)",
    )
    p.add_argument("--log-level", default=os.environ.get("MTLS_LOG_LEVEL", "INFO"))
    p.add_argument("--version", action="version", version=f"mtls-operator {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handled event at INFO: at 10k objects that drowns what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import mtls_operator.controllers.handlers  # noqa: F401  (registers the kopf handlers)

    settings = Settings(
        workers=args.workers,
        backoff_base=timedelta(seconds=args.backoff_base),
        backoff_cap=timedelta(seconds=args.backoff_cap),
    )
    namespaces = args.namespace or None
    kopf.run(
        standalone=True,
        clusterwide=namespaces is None,
        namespaces=namespaces or (),
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
