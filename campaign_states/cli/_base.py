"""What every command shares: the store URL, the actor, and error-to-exit-code translation."""

from __future__ import annotations

import getpass
import json
from typing import Any, Final, NoReturn

import attrs
import click

from campaign_states import Registry, open_registry
from campaign_states import exceptions as exc

from ._diagrams import DiagramError

__all__ = [
    "DEFAULT_URL",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "CliGroup",
    "Env",
    "Failure",
    "UsageFailure",
    "default_actor",
    "fail",
    "pass_env",
]

DEFAULT_URL: Final = "sqlite:///campaigns.db"
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2

# Library errors that mean "the request itself is malformed": exit 2, like click's usage
# errors. Everything else the library raises (not found, refused transition, store trouble)
# is exit 1.
_USAGE_ERRORS: Final = (
    exc.InvalidIdError,
    exc.InvalidIdTypeError,
    exc.InvalidChannelError,
    exc.InvalidFieldError,
    exc.InvalidSettingsError,
    exc.InvalidTextError,
    exc.BulkLimitError,
    # A command that reads or changes campaigns named a path that holds no store: most
    # likely a typo in --store, which must not leave an empty store behind.
    exc.StoreNotFoundError,
)


class Failure(click.ClickException):
    """A one-line error on stderr and exit code 1 (refused, not found); never a traceback."""

    exit_code = EXIT_REFUSED


class UsageFailure(Failure):
    """A one-line error on stderr and exit code 2: the request itself is malformed."""

    exit_code = EXIT_USAGE


def fail(message: str, exit_code: int = EXIT_REFUSED) -> NoReturn:
    """Stop the command with a one-line message."""
    raise (UsageFailure if exit_code == EXIT_USAGE else Failure)(message)


def _gate_error_types() -> tuple[type[BaseException], ...]:
    # Imported lazily: the gate package is optional for most commands and may not exist in a
    # partial checkout.
    try:
        from delivery_gate import exceptions as gate_exc
    except ImportError:
        return ()
    base = getattr(gate_exc, "DeliveryGateError", None)
    return (base,) if isinstance(base, type) else ()


class CliGroup(click.Group):
    """A group that turns every library error into a one-line message and an exit code.

    Messages are printed with control characters escaped (a name or path holding
    ``ESC[31m`` is shown, not obeyed). With ``--json`` the error is also printed on stdout
    as ``{"error": {"type": ..., "message": ..., "exit_code": ...}}``, the exit code
    unchanged, so a script reading stdout always gets one JSON document.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Kept for `_json_mode`: the raw arguments, before parsing may stop at an error.
        ctx.meta[_ARGS_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except _USAGE_ERRORS as e:
                raise UsageFailure(_one_line(e)) from e
            except (exc.CampaignStateError, DiagramError) as e:
                raise Failure(_one_line(e)) from e
            except Exception as e:
                if isinstance(e, _gate_error_types()):
                    raise Failure(_one_line(e)) from e
                raise
        except click.ClickException as e:
            # click prints its own messages (a bad option value echoes the user's input).
            e.message = _safe(e.message)  # type: ignore[misc]  # click's own field
            if not getattr(e, "reported", False) and _json_mode(ctx):
                _print_json_error(e)
            e.reported = True  # type: ignore[attr-defined]  # an enclosing group: once
            raise


_ARGS_KEY: Final = "campaign_states.cli.args"


def _json_mode(ctx: click.Context) -> bool:
    # `--json` among the command line's arguments (before a `--`). Read from the arguments,
    # not the parsed option: a usage error can stop parsing before --json is reached.
    args: list[str] = ctx.meta.get(_ARGS_KEY, [])
    if "--" in args:
        args = args[: args.index("--")]
    return "--json" in args


def _print_json_error(e: click.ClickException) -> None:
    cause = e.__cause__
    if isinstance(cause, Exception) and not isinstance(cause, click.ClickException):
        kind = type(cause).__name__
    elif isinstance(e, click.UsageError | UsageFailure):
        kind = "UsageError"
    else:
        kind = "CommandError"
    body = {
        "type": kind,
        "message": " ".join(str(e.format_message()).split()),
        "exit_code": e.exit_code,
    }
    click.echo(json.dumps({"error": body}, indent=2))


def _safe(message: str) -> str:
    from ._render import safe  # rich is imported only when a command prints

    return safe(message)


def _one_line(error: BaseException) -> str:
    # Driver messages (psycopg's especially) span lines; an operator's terminal and a
    # script's log want one.
    return _safe(" ".join(str(error).split()) or type(error).__name__)


def default_actor() -> str:
    """Who the history records as the actor: the login name, else ``cli``."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "cli"


@attrs.define
class Env:
    """Per-invocation settings and the registry, opened on first use and closed on exit."""

    ctx: click.Context
    url: str
    actor: str
    _registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """The registry on ``--store`` (opened once per command); refuses a path that
        holds no store (`StoreNotFoundError`, exit 2) rather than creating one."""
        return self.open_registry(create=False)

    def open_registry(self, *, create: bool) -> Registry:
        """The registry on ``--store``; ``create=True`` only for commands that create."""
        if self._registry is None:
            reg = open_registry(self.url, create=create)
            self.ctx.call_on_close(reg.close)
            self._registry = reg
        return self._registry


pass_env = click.make_pass_decorator(Env)
