"""Console users: a JSON file of names, roles and Argon2id password hashes.

argon2-cffi, not hashlib.scrypt: Argon2id is what OWASP recommends first for passwords,
and argon2-cffi encodes the parameters and salt in the hash and tells when a hash needs
rehashing, so the file stays readable if the parameters change. The file holds hashes
only; the CLI (`campaign-states users`) writes it with mode 0600.
"""

from __future__ import annotations

import enum
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Final

import attrs
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["Role", "User", "UserFileError", "Users", "hash_password"]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_HASHER: Final = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs what a wrong password
# does (no timing oracle for which names exist).
_DUMMY: Final = _HASHER.hash("not a password of anyone")


class Role(enum.Enum):
    """What a console user may do: viewers read, operators also change, admins too."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def can_change(self) -> bool:
        """Whether this role may change campaigns and segments."""
        return self is not Role.VIEWER


class UserFileError(ValueError):
    """The users file is unreadable or malformed, or a name or role is invalid."""


@attrs.frozen(kw_only=True, repr=False)
class User:
    """A console user (the hash never appears in a repr).

    Attributes:
        name: Login name, also the actor recorded in history.
        role: What they may do.
        password_hash: Argon2id hash of their password.
    """

    name: str
    role: Role
    password_hash: str

    def __repr__(self) -> str:
        return f"User(name={self.name!r}, role={self.role.value!r})"


def hash_password(password: str) -> str:
    """An Argon2id hash of ``password``."""
    if not password:
        raise UserFileError("A password must not be empty.")
    return _HASHER.hash(password)


def check_name(name: str) -> str:
    """``name`` if it is a valid login name, else `UserFileError`."""
    if not _NAME.fullmatch(name):
        raise UserFileError(
            "A user name is 1 to 64 letters, digits and . _ @ + - (starting with a letter "
            f"or digit), not {name!r:.70}."
        )
    return name


def parse_role(value: str) -> Role:
    """The `Role` named ``value``, else `UserFileError` listing the roles."""
    try:
        return Role(value)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise UserFileError(f"Unknown role {value!r:.40}: use one of {roles}.") from None


class Users:
    """The users file, re-read when it changes on disk (so removals take effect at once).

    Args:
        path: The JSON file: ``{"users": {name: {"role": ..., "hash": ...}}}``. A missing
            file means no users.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self._load()

    def __repr__(self) -> str:
        return f"Users({str(self.path)!r})"

    def _load(self) -> dict[str, User]:
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._users = None, {}
                return self._users
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._users = _read(self.path)
                self._stamp = stamp
            return self._users

    def all(self) -> list[User]:
        """Every user, by name."""
        return sorted(self._load().values(), key=lambda u: u.name)

    def __bool__(self) -> bool:
        return bool(self._load())

    def get(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        return self._load().get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (in the same time either way)."""
        user = self.get(name)
        try:
            _HASHER.verify(user.password_hash if user else _DUMMY, password)
        except (VerificationError, InvalidHashError):
            return None
        return user

    def put(self, name: str, role: Role, password: str) -> User:
        """Add or replace a user, writing the file atomically (mode 0600)."""
        user = User(name=check_name(name), role=role, password_hash=hash_password(password))
        users = dict(self._load())
        users[name] = user
        self._write(users)
        return user

    def remove(self, name: str) -> bool:
        """Remove a user; whether one was there."""
        users = dict(self._load())
        if users.pop(name, None) is None:
            return False
        self._write(users)
        return True

    def _write(self, users: dict[str, User]) -> None:
        data = {
            "users": {
                u.name: {"role": u.role.value, "hash": u.password_hash}
                for u in sorted(users.values(), key=lambda u: u.name)
            }
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target and renamed over it: a reader (a running console)
        # sees the old file or the new one, never half of one.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._load()


def _read(path: Path) -> dict[str, User]:
    try:
        raw: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserFileError(f"{path}: cannot read the users file ({e}).") from e
    entries = raw.get("users") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise UserFileError(f'{path}: expected {{"users": {{name: {{role, hash}}}}}}.')
    out: dict[str, User] = {}
    for name, entry in entries.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("role"), str)
            and isinstance(entry.get("hash"), str)
        ):
            raise UserFileError(f"{path}: user {name!r:.70} needs a role and a hash.")
        out[name] = User(
            name=check_name(name), role=parse_role(entry["role"]), password_hash=entry["hash"]
        )
    return out
