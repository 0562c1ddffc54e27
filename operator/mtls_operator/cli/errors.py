"""What an mtlsctl command returns and raises: its exit codes, and :class:`CommandError` for a command that
cannot run."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the thing checked is not fine: handshake refused, verification failed, unhealthy
EXIT_USAGE = 2  # argparse's own code for bad flags


class CommandError(Exception):
    """A command that cannot run; its message is printed as ``mtlsctl: <message>``."""
