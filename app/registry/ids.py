"""Ids that are never reused, issued one at a time.

SQLite gives a new row ``max(id) + 1``: delete run 7 while it is the newest, and the next run is run 7
again — a bookmarked ``?run=7``, a ``dataset:7`` in a saved spec or a log that names it would silently
mean something else. Runs and datasets therefore take their ids from a counter that only grows (the
same on PostgreSQL, whose sequences would not reuse them anyway, so there is one rule).

Two registrations at once (two tabs, an event the page fires twice, the CLI beside the studio) must not
read the same counter: :func:`issue_id` first writes the counter's row, which on SQLite takes the
database's write lock and on PostgreSQL the row's lock, both held until the caller commits, so the
second caller waits and then reads the first one's id. (Reading first, as it used to, let both compute
the same id on SQLite, where ``SELECT ... FOR UPDATE`` locks nothing: "UNIQUE constraint failed:
datasets.id" on a demo picked in the browser.)
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.registry.models import Base, IdCounter

_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def issue_id(session: Session, model: type[Base]) -> int:
    """The next id for ``model``'s table, above every id it ever had and every row it has now; the
    counter stays locked until ``session`` commits or rolls back."""
    name = model.__tablename__
    insert = _INSERTS[session.get_bind().dialect.name]
    session.execute(insert(IdCounter).values(name=name, last_id=0).on_conflict_do_nothing(index_elements=["name"]))
    counter = session.scalars(
        select(IdCounter).where(IdCounter.name == name).with_for_update().execution_options(populate_existing=True)
    ).one()
    highest = session.scalar(select(func.max(model.id))) or 0
    counter.last_id = max(counter.last_id, highest) + 1
    session.flush()
    return counter.last_id
