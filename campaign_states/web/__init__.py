"""The operator console: the campaign screens in a browser, on any store.

An application on top of `campaign_states` (its public names only); nothing imports it.
Needs the ``web`` extra: ``pip install 'campaign-states[web]'``. Serve it with
``campaign-states serve``, or mount `create_app(registry)` in another ASGI app.
"""

from __future__ import annotations

from ._app import create_app
from ._users import Role, User, UserFileError, Users

__all__ = ["Role", "User", "UserFileError", "Users", "create_app"]
