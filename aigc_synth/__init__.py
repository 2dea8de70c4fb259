"""aigc_synth: conditional synthetic driving-scene generation served on Ray."""

from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema, SchemaError

__version__ = "0.1.0"
__all__ = ["ConditionSchema", "DEFAULT_SCHEMA", "SchemaError", "__version__"]
