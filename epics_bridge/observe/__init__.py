"""Cross-cutting concerns, each a Hooks subclass fed by the engine: logs, log PVs, metrics (and the
folder where the workers' metrics meet), systemd."""
