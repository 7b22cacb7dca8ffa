"""The `gpuctl` command's entry point.

Commands that drive pyinfra over SSH (deploy, rollback, keys) run with gevent's monkey patching, as
pyinfra's own CLI always does: every host's SSH round trips then overlap while gpuctl prepares the hosts'
operations (each host in its own greenlet). It must happen before anything imports socket, ssl or
threading, so it is decided here from the command's name, before gpuctl.cli is imported.
"""

from __future__ import annotations

import sys

COOPERATIVE_COMMANDS = frozenset({"deploy", "rollback", "keys"})


def main() -> None:
    if COOPERATIVE_COMMANDS.intersection(sys.argv[1:2]):
        from gevent import monkey

        monkey.patch_all()
    from gpuctl.cli import main as cli

    cli()
