"""The benchmark and the stress run; imported by nothing else in the package."""
