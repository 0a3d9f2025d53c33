"""Ids that are never reused.

SQLite gives a new row ``max(id) + 1``: delete run 7 while it is the newest, and the next run is run 7
again — a bookmarked ``?run=7``, a ``dataset:7`` in a saved spec or a log that names it would silently
mean something else. Runs and datasets therefore take their ids from a counter that only grows (the
same on PostgreSQL, whose sequences would not reuse them anyway, so there is one rule).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.registry.models import Base, IdCounter


def issue_id(session: Session, model: type[Base]) -> int:
    """The next id for ``model``'s table, above every id it ever had and every row it has now."""
    name = model.__tablename__
    counter = session.get(IdCounter, name, with_for_update=True)
    highest = session.scalar(select(func.max(model.id))) or 0
    new_id = max(counter.last_id if counter is not None else 0, highest) + 1
    if counter is None:
        session.add(IdCounter(name=name, last_id=new_id))
    else:
        counter.last_id = new_id
    session.flush()
    return new_id
