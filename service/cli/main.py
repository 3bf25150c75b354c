"""Entry point of the ``tuneline`` command: one group, subcommands in sibling modules."""

from __future__ import annotations

import click

from service.cli.evaluate import chat, eval_, experiments
from service.cli.jobs import jobs
from service.cli.keys import keys
from service.cli.models import models
from service.cli.prepare import prepare


@click.group()
@click.version_option(package_name="tuneline")
def main() -> None:
    """Tuneline: fine-tuning jobs as a service."""


main.add_command(chat)
main.add_command(eval_)
main.add_command(experiments)
main.add_command(jobs)
main.add_command(keys)
main.add_command(models)
main.add_command(prepare)
