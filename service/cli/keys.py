"""``tuneline keys``: create, list and revoke API keys (talks to Redis directly; an admin tool)."""

from __future__ import annotations

import click

from service.cli.client import ApiError, echo_json, table
from service.core import auth
from service.core.errors import TunelineError
from service.core.store import Store
from service.settings import Settings, SettingsError


def _store() -> Store:
    # The service's own settings, checked as the service checks them: an admin tool pointed at a
    # production Redis must not quietly run as development (which drops every production check).
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    store = Store.from_url(settings.redis_url)
    if not store.ping():
        raise click.ClickException(f"Redis is not reachable at {settings.redis_url} (TUNELINE_REDIS_URL)")
    return store


@click.group()
def keys() -> None:
    """Manage API keys (stored hashed; a key is shown once)."""


@keys.command("create")
@click.option("--tenant", required=True, help="Tenant the key belongs to.")
@click.option("--role", type=click.Choice(auth.ROLES), default="member", show_default=True)
@click.option("--name", default="", help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create(tenant: str, role: str, name: str, as_json: bool) -> None:
    """Create a key; the key itself is printed alone on the last line."""
    try:
        record, token = auth.create_key(_store(), tenant, role, name)
    except TunelineError as exc:  # a malformed --tenant: a usage error (exit 2)
        raise click.UsageError(exc.message) from None
    if as_json:
        echo_json({**record.public(), "key": token})
    else:
        click.echo(f"Created key {record.id} for tenant {record.tenant} (role {record.role}).", err=True)
        click.echo("Store it now: it cannot be shown again.", err=True)
    click.echo(token)


@keys.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(tenant: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""
    found = auth.list_keys(_store(), tenant)
    if as_json:
        echo_json([k.public() for k in found])
        return
    headers = ["KEY ID", "TENANT", "ROLE", "NAME", "CREATED", "REVOKED"]
    click.echo(table(headers, [[k.id, k.tenant, k.role, k.name, k.created_at, k.revoked_at] for k in found]))


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def revoke(key_id: str, as_json: bool) -> None:
    """Revoke a key: every API process refuses it within TUNELINE_AUTH_CACHE_S seconds."""
    try:
        record = auth.revoke_key(_store(), key_id)
    except TunelineError as exc:
        raise ApiError.from_domain(exc) from None
    if as_json:
        echo_json(record.public())
    else:
        click.echo(f"Revoked {record.id}.")
