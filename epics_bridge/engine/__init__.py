"""Runs tasks in one process: each task's loop and heartbeat threads, and the runner around them."""
