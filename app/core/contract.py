"""What the queueing side and the worker agree on: the task's name and its queue.

The services send "train run N" by name (they never import the worker), so the name lives here,
once, beside the queue both sides use.
"""

TRAIN_TASK = "worker.tasks.train_run"
TRAIN_QUEUE = "training"


def declare_train_queue(broker_url: str, attempts: int = 5) -> None:
    """Make sure the training queue exists on an embedded (SQLAlchemy) broker before anyone uses it.

    kombu's SQLAlchemy transport creates a queue's row with a read, then an insert: a worker starting
    while the studio sends its first run can both insert it, and the loser's ``UNIQUE constraint
    failed: kombu_queue.name`` was an "unrecoverable error" that stopped the worker (a run stayed
    queued; seen once in CI). Both sides call this first; a lost race is retried and then finds the row.
    Redis and other brokers declare queues atomically: nothing to do.
    """
    if not broker_url.startswith("sqla+"):
        return
    import time

    from kombu import Connection, Exchange, Queue
    from sqlalchemy.exc import IntegrityError

    queue = Queue(TRAIN_QUEUE, Exchange(TRAIN_QUEUE, type="direct"), routing_key=TRAIN_QUEUE)
    for attempt in range(attempts):
        try:
            with Connection(broker_url) as connection:
                queue(connection.default_channel).declare()
            return
        except IntegrityError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
