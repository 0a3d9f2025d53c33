"""The shared domain: what the studio, the CLI and the worker all agree on.

The run spec and its validation, dataset references, the task-from-data-shape rule, the model
catalogue and model loading, settings, the errors a person reads, and the contract between the
process that queues a run and the worker that trains it. It imports nothing above it (no registry,
services, UI or worker); see docs/design.md for the direction every import takes.
"""
