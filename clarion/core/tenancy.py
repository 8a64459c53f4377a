"""Project scoping, enforced in one place.

Every table that belongs to a project mixes in :class:`ProjectOwned`. A session opened for a
project (``Database.session(project_id=…)``) adds ``project_id = :pid`` to every ORM SELECT,
UPDATE and DELETE touching such a table, and stamps/validates ``project_id`` on every row it
flushes. A session opened without a project must say so (``unscoped``), which only
organisation-level code and background machinery do; anything else raises instead of leaking.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ForeignKey, event
from sqlalchemy.orm import Mapped, ORMExecuteState, Session, declared_attr, mapped_column, with_loader_criteria


class CrossProjectAccess(RuntimeError):
    """Raised when code tries to touch project-owned rows without a project scope."""


class ProjectOwned:
    """Mixin for project-owned tables: a non-null, indexed ``project_id``."""

    @declared_attr
    def project_id(cls) -> Mapped[int]:
        return mapped_column(BigInteger, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True)


class TenantSession(Session):
    """The session class every Clarion session uses; its events implement the scoping."""


def _project_mappers(state: ORMExecuteState) -> bool:
    return any(issubclass(m.class_, ProjectOwned) for m in state.all_mappers)


@event.listens_for(TenantSession, "do_orm_execute")
def _scope_to_project(state: ORMExecuteState) -> None:
    if not (state.is_select or state.is_update or state.is_delete):
        return
    if state.is_column_load or state.is_relationship_load:
        return
    project_id = state.session.info.get("project_id")
    if project_id is None:
        if state.session.info.get("unscoped") or not _project_mappers(state):
            return
        raise CrossProjectAccess("project-owned query outside a project scope")
    state.statement = state.statement.options(
        with_loader_criteria(ProjectOwned, lambda cls: cls.project_id == project_id, include_aliases=True)
    )


@event.listens_for(TenantSession, "before_flush")
def _stamp_project(session: Session, _context: Any, _instances: Any) -> None:
    project_id = session.info.get("project_id")
    if project_id is None:
        return
    for obj in list(session.new) + list(session.dirty):
        if isinstance(obj, ProjectOwned):
            current = obj.project_id
            if current is None:
                obj.project_id = project_id
            elif current != project_id:
                raise CrossProjectAccess(f"row for project {current} written in project {project_id}")
