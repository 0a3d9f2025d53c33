"""What the queueing side and the worker agree on: the task's name and its queue.

The services send "train run N" by name (they never import the worker), so the name lives here,
once, beside the queue both sides use.
"""

TRAIN_TASK = "worker.tasks.train_run"
TRAIN_QUEUE = "training"
