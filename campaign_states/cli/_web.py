"""`campaign-states serve` (the operator console) and `campaign-states users` (its logins).

The console's dependencies (the ``web`` extra) are imported only when these commands run.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any, Final

import click

from ._app import cli, json_option
from ._base import EXIT_USAGE, Env, fail, pass_env

if TYPE_CHECKING:
    from campaign_states.web import Users

__all__: list[str] = []

DEFAULT_USERS: Final = "console-users.json"
_ROLES: Final = click.Choice(["viewer", "operator", "admin"])
_TOKEN_IN_PATH: Final = re.compile(r"([?&]token=)[^&\s]*")

users_option = click.option(
    "--users",
    "users_file",
    envvar="CAMPAIGN_STATES_WEB_USERS",
    default=DEFAULT_USERS,
    show_default=True,
    metavar="FILE",
    help="The console's users file (env CAMPAIGN_STATES_WEB_USERS).",
)


def _web() -> Any:
    try:
        from campaign_states import web
    except ImportError as e:
        fail(
            f"The console needs the web extra ({e.name} is missing): "
            "pip install 'campaign-states[web]'",
            EXIT_USAGE,
        )
    return web


def _users(path: str) -> Users:
    web = _web()
    try:
        users: Users = web.Users(path)
    except web.UserFileError as e:
        fail(str(e), EXIT_USAGE)
    return users


class _RedactToken(logging.Filter):
    """Keeps the login token out of uvicorn's access log (it logs each request's path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_PATH.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@users_option
@click.option(
    "--token",
    envvar="CAMPAIGN_STATES_WEB_TOKEN",
    default=None,
    help="Admin login token (env CAMPAIGN_STATES_WEB_TOKEN; default: a new one when no "
    "users are configured).",
)
@click.option(
    "--secret-key",
    envvar="CAMPAIGN_STATES_WEB_SECRET",
    default=None,
    help="Signs session cookies (env CAMPAIGN_STATES_WEB_SECRET; default: random, so "
    "restarting logs everyone out).",
)
@pass_env
def serve(
    env: Env, *, host: str, port: int, users_file: str, token: str | None, secret_key: str | None
) -> None:
    """Serve the operator console (loopback only unless users are configured).

    Every page needs a login. With no users, a one-time admin token is printed in the
    login URL (as Jupyter does).
    """
    web = _web()
    from campaign_states.web._security import is_loopback

    users = _users(users_file)
    loopback = is_loopback(host)
    if not loopback and not users:
        fail(
            f"Refusing to listen on {host} without users: anyone who can reach it could log "
            f"in. Add one (campaign-states users add NAME --role admin --users {users_file}) "
            "or listen on 127.0.0.1.",
            EXIT_USAGE,
        )
    if token is None and not users:
        import secrets

        token = secrets.token_urlsafe(24)
    import uvicorn

    # On loopback, only loopback Host headers: a web page that rebinds its own DNS name
    # to 127.0.0.1 cannot then reach the console.
    hosts = ["127.0.0.1", "localhost"] if loopback and ":" not in host else None
    try:
        app = web.create_app(
            env.registry,
            users=users if users else None,
            token=token,
            secret_key=secret_key,
            allowed_hosts=hosts,
        )
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/"
    click.echo(f"campaign-states console on {env.url.split('@')[-1]}", err=True)
    if token is not None:
        click.echo(f"Log in at: {base}?token={token}", err=True)
    if users:
        click.echo(f"Users from {users_file}: log in at {base}login", err=True)
    logging.getLogger("uvicorn.access").addFilter(_RedactToken())
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)


@cli.group()
def users() -> None:
    """Manage the console's users (a file of Argon2id password hashes)."""


@users.command(name="add")
@click.argument("name")
@click.option("--role", type=_ROLES, required=True, help="viewer reads; operator and admin change.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@users_option
def users_add(name: str, role: str, password_stdin: bool, users_file: str) -> None:
    """Add a user, or replace their role and password."""
    web = _web()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        _users(users_file).put(name, web.Role(role), password)
    except web.UserFileError as e:
        fail(str(e), EXIT_USAGE)
    click.echo(f"{name} ({role}) saved in {users_file}.")


@users.command(name="remove")
@click.argument("name")
@users_option
def users_remove(name: str, users_file: str) -> None:
    """Remove a user (a running console logs them out at their next request)."""
    if not _users(users_file).remove(name):
        fail(f"No user {name!r} in {users_file}.")
    click.echo(f"{name} removed from {users_file}.")


@users.command(name="list")
@users_option
@json_option
def users_list(users_file: str, as_json: bool) -> None:
    """List users and their roles (never their hashes)."""
    found = _users(users_file).all()
    if as_json:
        import json

        click.echo(json.dumps([{"name": u.name, "role": u.role.value} for u in found]))
        return
    if not found:
        click.echo(f"No users in {users_file}.")
    for u in found:
        click.echo(f"{u.name}\t{u.role.value}")
