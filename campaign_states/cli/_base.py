"""What every command shares: the store URL, the actor, and error-to-exit-code translation."""

from __future__ import annotations

import getpass
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
    """A group that turns every library error into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
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


def _one_line(error: BaseException) -> str:
    # Driver messages (psycopg's especially) span lines; an operator's terminal and a
    # script's log want one.
    return " ".join(str(error).split()) or type(error).__name__


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
