"""The condition schema: which factors condition a generator and which values each factor takes.

The schema is declared once (:data:`DEFAULT_SCHEMA`), saved inside every exported checkpoint and
every job manifest, and is the only thing that turns human-readable conditions
(``{"weather": "fog", ...}``) into the integer codes the models consume. A model trained on a
different schema (other factors, other values) carries that schema in its checkpoint, so nothing in
the code needs to change to serve it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from aigc_synth.errors import SchemaError  # noqa: F401 (re-exported from its former home)


@dataclass(frozen=True)
class ConditionSchema:
    """An ordered set of categorical factors, e.g. weather × time_of_day × traffic.

    ``factors`` maps each factor name to its tuple of allowed values. Order matters: it fixes the
    integer codes (value index) and the column order of encoded conditions.
    """

    factors: tuple[tuple[str, tuple[str, ...]], ...]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, factors: Mapping[str, Sequence[str]]) -> "ConditionSchema":
        """Build a schema from ``{factor: [value, ...]}`` (insertion order is kept)."""
        if not isinstance(factors, Mapping) or not factors:
            raise SchemaError("a condition schema needs at least one factor: {factor: [values...]}")
        items = []
        for name, values in factors.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise SchemaError(f"factor name {name!r} must be an identifier-like string")
            if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
                raise SchemaError(f"factor {name!r} needs a non-empty list of values, got {values!r}")
            vals = tuple(str(v) for v in values)
            if len(set(vals)) != len(vals):
                raise SchemaError(f"factor {name!r} has duplicate values: {list(vals)}")
            items.append((name, vals))
        return cls(tuple(items))

    def to_dict(self) -> dict[str, list[str]]:
        """Plain JSON-able form ``{factor: [values]}``, as stored in checkpoints and manifests."""
        return {name: list(values) for name, values in self.factors}

    # -- introspection ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.factors]

    @property
    def cardinalities(self) -> list[int]:
        return [len(values) for _, values in self.factors]

    def values(self, factor: str) -> tuple[str, ...]:
        for name, vals in self.factors:
            if name == factor:
                return vals
        raise SchemaError(f"unknown factor {factor!r}; allowed factors: {self.names}")

    @property
    def num_combinations(self) -> int:
        return int(np.prod(self.cardinalities))

    def combinations(self) -> list[dict[str, str]]:
        """Every condition combination, in lexicographic order of the value indices."""
        return [dict(zip(self.names, combo)) for combo in itertools.product(*[v for _, v in self.factors])]

    # -- validation and encoding ---------------------------------------------------------------
    def validate(self, condition: Mapping[str, Any], *, partial: bool = False) -> dict[str, str]:
        """Check a ``{factor: value}`` mapping; return it normalised. ``partial`` allows missing factors."""
        if not isinstance(condition, Mapping):
            raise SchemaError(f"a condition must be a mapping {{factor: value}}, got {condition!r}")
        unknown = [k for k in condition if k not in self.names]
        if unknown:
            raise SchemaError(f"unknown factor {unknown[0]!r}; allowed factors: {self.names}")
        out = {}
        for name, vals in self.factors:
            if name not in condition:
                if partial:
                    continue
                raise SchemaError(f"condition {dict(condition)} is missing factor {name!r} (allowed values: {list(vals)})")
            value = str(condition[name])
            if value not in vals:
                raise SchemaError(f"unknown value {value!r} for factor {name!r}; allowed values: {list(vals)}")
            out[name] = value
        return out

    def encode(self, condition: Mapping[str, Any]) -> list[int]:
        """Condition → list of value indices, one per factor (the models' input)."""
        cond = self.validate(condition)
        return [vals.index(cond[name]) for name, vals in self.factors]

    def encode_many(self, conditions: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Conditions → int64 array of shape (n, num_factors)."""
        rows = [self.encode(c) for c in conditions]
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), len(self.factors))

    def decode(self, codes: Sequence[int]) -> dict[str, str]:
        """Value indices → condition mapping."""
        if len(codes) != len(self.factors):
            raise SchemaError(f"expected {len(self.factors)} codes, got {len(codes)}")
        out = {}
        for (name, vals), code in zip(self.factors, codes):
            code = int(code)
            if not 0 <= code < len(vals):
                raise SchemaError(f"code {code} out of range for factor {name!r} ({len(vals)} values)")
            out[name] = vals[code]
        return out

    def combination_index(self, codes: np.ndarray) -> np.ndarray:
        """(n, F) codes → (n,) index of the combination in :meth:`combinations` order."""
        codes = np.asarray(codes, dtype=np.int64)
        index = np.zeros(codes.shape[0], dtype=np.int64)
        for f, card in enumerate(self.cardinalities):
            index = index * card + codes[:, f]
        return index

    #: Separator of condition keys (``fog/night/heavy``): the one spelling of manifests and reports.
    KEY_SEP = "/"

    def condition_key(self, condition: Mapping[str, str]) -> str:
        """Stable human-readable key such as ``fog/night/heavy`` (used for counts in manifests)."""
        cond = self.validate(condition)
        return self.KEY_SEP.join(cond[n] for n in self.names)

    def keys_of(self, codes: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
        """(n, F) codes → condition keys, without re-validating every row."""
        return [self.KEY_SEP.join(vals[c] for c, (_, vals) in zip(row, self.factors)) for row in np.asarray(codes).tolist()]

    def keys(self) -> list[str]:
        """Every condition key, in :meth:`combinations` order."""
        return [self.KEY_SEP.join(c.values()) for c in self.combinations()]

    def check_compatible(self, other: "ConditionSchema", what: str = "checkpoint") -> None:
        """Raise if ``other`` differs from this schema (factor names, order or values)."""
        if self.to_dict() != other.to_dict():
            raise SchemaError(
                f"condition schema mismatch: job uses {self.to_dict()} but the {what} was trained on {other.to_dict()}"
            )


#: The driving-condition schema of the bundled procedural data and default model.
DEFAULT_SCHEMA = ConditionSchema.from_dict(
    {
        "weather": ["clear", "overcast", "rain", "fog", "snow"],
        "time_of_day": ["day", "dusk", "night"],
        "traffic": ["light", "moderate", "heavy"],
    }
)
