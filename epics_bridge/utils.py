"""epics-bridge 1.0.1's module of P4P value conversion, kept importable for the class API: the
conversion lives in :mod:`epics_bridge.values`."""

from .values import EnumValue, to_python, unwrap_p4p_structure

__all__ = ["EnumValue", "to_python", "unwrap_p4p_structure"]
