"""The benchmark (``python -m benchmarks``), the stress run (``benchmarks.stress``), the cost of
``async def`` tasks (``benchmarks.asyncio_cost``) and of a put that p4p cannot make yet
(``benchmarks.reexec_put``).

A package of the repository, not of the distribution: the wheel holds no benchmark code. The client
side of the handshake it drives is the package's own :mod:`epics_bridge.client`.
"""
