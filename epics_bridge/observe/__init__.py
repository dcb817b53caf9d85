"""Cross-cutting concerns, each a Hooks subclass fed by the engine: logs, log PVs, metrics, systemd."""
