"""Errors gpuctl reports to a user as one clear line (never a traceback)."""


class GpuctlError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits 2."""

    exit_code = 2


class InventoryError(GpuctlError):
    """An inventory that cannot be loaded or does not validate; carries one line per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


NO_SYSTEMD = (
    "does not run systemd as PID 1 (a container, or WSL without systemd): gpuctl runs engines as "
    "systemd services; use a host or VM with systemd (WSL: [boot] systemd=true in /etc/wsl.conf)"
)
"""Said by deploy and verify alike when /run/systemd/system is missing (the test sd_booted(3) makes)."""
