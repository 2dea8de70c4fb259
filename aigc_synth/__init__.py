"""aigc_synth: conditional synthetic driving-scene generation served on Ray."""

from pathlib import Path

from aigc_synth.schema import DEFAULT_SCHEMA, ConditionSchema, SchemaError

__version__ = "0.1.0"
#: The bundled configuration (Hydra's ``conf/``, the dataset mappings): here, below every layer that reads it.
CONF_DIR = Path(__file__).resolve().parent / "conf"
__all__ = ["ConditionSchema", "DEFAULT_SCHEMA", "SchemaError", "__version__", "CONF_DIR"]
