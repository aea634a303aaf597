"""Chaos under load and soak runs (issue #9): ``python -m tests.chaos`` (``make chaos``) drives
steady traffic through two gateway replicas sharing a Redis while upstream, Redis, replica and
client faults are injected, and accounts for every request; ``python -m tests.chaos soak``
(``make soak``) watches memory, file descriptors, tasks and connections over a long run. The
pytest files here are the short versions CI runs. Everything listens on loopback only."""
