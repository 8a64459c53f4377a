"""What the hot paths share (`delivery/fast_trigger*.py`, `events/fast_ingest*.py`): the bearer
key lookup as a CTE of their statements, statements compiled once for the asyncpg driver, reading
the headers they need, buffering a bounded body and replaying it to the next layer when they hand
a request over, and leaving the key they resolved on the request as
:func:`clarion.api.auth.principal_for_request` would have cached it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Table, select
from starlette.types import Message, Receive, Scope

from clarion.api.auth import Principal
from clarion.keys.models import ProjectApiKey
from clarion.orgs.models import Project

KEYS: Table = ProjectApiKey.__table__  # type: ignore[assignment]
PROJECTS: Table = Project.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class KeyRow:
    """The bearer key as the look statement found it (``None`` there: unknown or revoked)."""

    id: int
    project_id: int
    organization_id: int
    scope: str
    role: str


def key_cte(digest: Any) -> Any:
    """The bearer key by its SHA-256 (``digest``: the statement's placeholder), revoked keys
    never matching: the lookup of :func:`clarion.api.auth.resolve_principal` as a CTE."""
    return (
        select(KEYS.c.id, KEYS.c.project_id, KEYS.c.scope, KEYS.c.role, PROJECTS.c.organization_id)
        .join(PROJECTS, PROJECTS.c.id == KEYS.c.project_id)
        .where(KEYS.c.key_hash == digest, KEYS.c.revoked_at.is_(None))
        .cte("key")
    )


@dataclass(frozen=True)
class Compiled:
    """A statement for asyncpg: its SQL, whose placeholders ``$1``… are the inputs ``names`` in
    that order."""

    sql: str
    names: list[str]

    @classmethod
    def of(cls, statement: Any, inputs: list[str]) -> Compiled:
        """``statement`` compiled once, its placeholders written as ``inputs`` (``$n::type``
        literal columns); every other value is a constant of the expression builders, rendered
        into the SQL."""
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        compiled = statement.compile(dialect=dialect(), compile_kwargs={"literal_binds": True})  # type: ignore[no-untyped-call]
        return cls(compiled.string, inputs)

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


@dataclass
class Head:
    authorization: str | None = None
    content_type: str | None = None
    idempotency_key: str | None = None

    @property
    def is_json(self) -> bool:
        return (
            self.content_type is not None and self.content_type.split(";", 1)[0].strip().lower() == "application/json"
        )


def read_head(scope: Scope) -> Head:
    head = Head()
    for name, value in scope["headers"]:
        if name == b"authorization":
            head.authorization = value.decode("latin-1")
        elif name == b"content-type":
            head.content_type = value.decode("latin-1")
        elif name == b"idempotency-key":
            head.idempotency_key = value.decode("latin-1")
    return head


@dataclass
class BufferedBody:
    """Up to ``limit`` bytes of the request body, read from ``receive``; ``replay`` hands the
    same body (and, if it was not read to its end, the rest) to the next layer."""

    receive: Receive
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False
    _replayed: Iterator[bytes] | None = None

    async def read(self, limit: int) -> bytes | None:
        """The whole body, or ``None`` if it is larger than ``limit`` or the client left."""
        size = 0
        more = True
        while more and size <= limit:
            message = await self.receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            self.chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        self.complete = not more
        return b"".join(self.chunks) if self.complete and size <= limit else None

    async def replay(self) -> Message:
        if self._replayed is None:
            self._replayed = iter(self.chunks)
        for chunk in self._replayed:
            return {"type": "http.request", "body": chunk, "more_body": True}
        if self.complete:
            return {"type": "http.request", "body": b"", "more_body": False}
        return await self.receive()


def leave_principal(state: dict[str, object], key: KeyRow | None, token: str) -> None:
    """Cache what a hot path's statement found for the bearer value, exactly as
    :func:`clarion.api.auth.resolve_principal` would decide it: the prefix must match the
    key's scope (``sk_`` secret, ``pk_`` public)."""
    expected = "secret" if token.startswith("sk_") else "public" if token.startswith("pk_") else None
    if key is None or key.scope != expected:
        state["principal"] = None
        return
    scope: Literal["secret", "public"] = "secret" if key.scope == "secret" else "public"
    state["principal"] = Principal("project", key.id, key.organization_id, key.project_id, scope, key.role)
