"""Entry point of the ``tuneline`` command: one group whose subcommands are imported on use."""

from __future__ import annotations

import importlib

import click

# Command name -> "module:attribute". A command's module is imported only when that command runs
# (or the top-level help lists it), so `tuneline prepare` never pays for the HTTP client.
COMMANDS = {
    "chat": "service.cli.evaluate:chat",
    "eval": "service.cli.evaluate:eval_",
    "experiments": "service.cli.evaluate:experiments",
    "jobs": "service.cli.jobs:jobs",
    "keys": "service.cli.keys:keys",
    "migrate": "service.cli.migrate:migrate",
    "models": "service.cli.models:models",
    "prepare": "service.cli.prepare:prepare",
}


class LazyGroup(click.Group):
    """click's documented lazy-loading group: ``COMMANDS`` are imported by ``get_command``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="tuneline")
def main() -> None:
    """Tuneline: fine-tuning jobs as a service."""
