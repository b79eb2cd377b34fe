"""Running the daemon: logs, health, and (next) metrics, manhole, systemd and push,
each an observer of domain events or a reader of the domain's state."""
