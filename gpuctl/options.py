"""Command-line options that several commands share (the same flag means the same thing everywhere)."""

from __future__ import annotations

import click

limit_option = click.option(
    "--limit", "-l", "limit", multiple=True, metavar="HOST", help="Only these hosts or groups (globs allowed)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
inventory_option = click.option(
    "--inventory", "-i", "inventory_ref", metavar="INVENTORY", help="Inventory holding TARGET."
)
api_key_env_option = click.option(
    "--api-key-env", metavar="VAR", help="URL targets: environment variable holding the API key."
)
force_option = click.option(
    "--force", is_flag=True, help="Go on although capacity planning says an engine cannot start (at your risk)."
)
inventory_argument = click.argument("inventory_ref", metavar="INVENTORY")
