"""The host service: the command line, and (with worker isolation) the supervisor and its workers."""
