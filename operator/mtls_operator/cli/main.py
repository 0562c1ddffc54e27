"""`mtlsctl`: the user's command line for mtls-operator."""

from __future__ import annotations

import argparse
import sys

from mtls_operator import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mtlsctl", description="Work with mtls-operator certificates and PKI.")
    p.add_argument("--version", action="version", version=f"mtlsctl {__version__}")
    p.add_subparsers(dest="command", metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
