"""The embedded broker's training queue: declared by both sides first, a lost race retried.

kombu's SQLAlchemy transport reads, then inserts a queue's row; a worker starting while the studio sends
its first run could both insert it, and the worker stopped on the loser's IntegrityError (seen in CI: a
run stayed queued). The race is replayed here on a real SQLite broker file: the other side's insert lands
between this side's read and its own insert."""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import IntegrityError

from app.core.contract import TRAIN_QUEUE, declare_train_queue


def test_a_lost_race_to_create_the_training_queue_is_retried_and_finds_the_row(tmp_path, monkeypatch):
    from kombu.transport.sqlalchemy import Channel

    broker = tmp_path / "broker.sqlite"
    real = Channel._get_or_create
    calls: list[str] = []

    def other_side_inserts_first(self, queue):
        calls.append(queue)
        if len(calls) == 1:
            real(self, queue)  # the other process's insert
            raise IntegrityError("INSERT INTO kombu_queue (name) VALUES (?)", (queue,),
                                 Exception("UNIQUE constraint failed: kombu_queue.name"))
        return real(self, queue)

    monkeypatch.setattr(Channel, "_get_or_create", other_side_inserts_first)
    declare_train_queue(f"sqla+sqlite:///{broker}")

    assert set(calls) == {TRAIN_QUEUE} and len(calls) > 1  # lost once, then declared again
    with sqlite3.connect(broker) as db:
        assert db.execute("select name from kombu_queue").fetchall() == [(TRAIN_QUEUE,)]


def test_declaring_again_keeps_one_row_and_other_brokers_are_left_alone(tmp_path):
    broker = tmp_path / "broker.sqlite"
    for _ in range(2):
        declare_train_queue(f"sqla+sqlite:///{broker}")
    with sqlite3.connect(broker) as db:
        assert db.execute("select name from kombu_queue").fetchall() == [(TRAIN_QUEUE,)]
    declare_train_queue("redis://127.0.0.1:1/0")  # nothing to do: no connection is even tried
