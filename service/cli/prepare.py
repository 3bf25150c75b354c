"""``tuneline prepare`` (placeholder until the dataset engine lands)."""

import click


@click.command()
@click.argument("file")
def prepare(file: str) -> None:
    """Check and prepare a dataset file offline."""
    raise click.UsageError("not available yet")
