"""The HTTP protocol of ``aigc-synth serve``, without Ray or FastAPI: request checks, the job a
request is a slice of, decoding served images, token and bind checks.

A request ``{conditions: [c1, ..., ck], n, seed, start=0, num_samples=start+n}`` is *the slice*
``[start, start + n)`` of the batch job ``job.seed=seed job.num_samples=num_samples`` with the plan
``{kind: list, items: [{conditions: c1, weight: 1}, ..., {conditions: ck, weight: 1}]}``: codes and
seeds come from the same :class:`~aigc_synth.sampling.plan.ConditionPlan` the job uses (per-sample
seed ``derive_seeds(seed, sample_index)``) inside the same sampler a job actor holds
(:mod:`aigc_synth.serve.app`), so the rows are the job's rows.

Condition transfer (a layout model): ``{layouts: [BDD100K frames], conditions: [{weather, time_of_day}, ...],
seed, start, n}`` (optional ``layouts_lanes`` / ``layouts_drivable``: frames with lane / drivable-area
labels, or ``true`` for the frames of ``layouts``; ``layouts_size``: [width, height] of the frames'
images, default 1280 × 720; ``layouts_unknown_as_zero``) is the slice of the condition-transfer job
of those frames and conditions (:mod:`aigc_synth.sampling.transfer`): ``num_samples`` = frames ×
conditions, ``n`` by default all of them. The body-size limit bounds the frames.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from aigc_synth.sampling.plan import ConditionPlan
from aigc_synth.schema import ConditionSchema, SchemaError

FORMATS = ("png", "npy")  #: what an image endpoint serves (aigc_synth.sampling.image.SERVE_FORMATS)
REQUEST_KEYS = ("conditions", "n", "seed", "format", "start", "num_samples")
#: A condition-transfer request's extra fields (layout models only).
LAYOUT_REQUEST_KEYS = ("layouts", "layouts_lanes", "layouts_drivable", "layouts_size", "layouts_unknown_as_zero")
MAX_SEED = 2**63 - 1
MAX_NUM_SAMPLES = 100_000_000  # same typo guard as the batch job's job.max_samples
TOKEN_ENV = "AIGC_SYNTH_TOKEN"


class RequestError(ValueError):
    """A request the server refuses: ``status`` is the HTTP status, the message goes into ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class GenerateRequest:
    conditions: list[dict[str, str]]
    n: int
    seed: int
    start: int
    num_samples: int

    format: str | None = None
    layouts: dict[str, Any] | None = None  # condition transfer: the job's ``layouts`` entry
    transfer_plan: dict[str, Any] | None = None  # ... and its exact plan
    transfer_schema: dict[str, list[str]] | None = None  # ... over the model's own factors (no road: no scenes drawn)

    def plan_spec(self) -> dict[str, Any]:
        """The batch job's plan for this request: a ``list`` plan, one equal-weight item per condition
        (condition transfer: the job's exact plan)."""
        if self.transfer_plan is not None:
            return self.transfer_plan
        return {"kind": "list", "items": [{"conditions": c, "weight": 1.0} for c in self.conditions]}

    def job(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The resolved job this request is a slice of: the endpoint's ``base`` job with its seed, size and plan."""
        job = {**base, "seed": self.seed, "num_samples": self.num_samples, "plan": self.plan_spec()}
        if self.layouts is not None:
            job["layouts"] = self.layouts
            job["schema"] = self.transfer_schema
        return job

    def plan(self, schema: ConditionSchema) -> ConditionPlan:
        """The batch job's :class:`ConditionPlan` for this request."""
        return ConditionPlan(self.plan_spec(), schema, self.num_samples, self.seed)

    def sample_ids(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.n, dtype=np.int64)


def _int_field(body: Mapping[str, Any], key: str, default: int | None, lo: int, hi: int) -> int:
    value = body.get(key, default)
    if value is None:
        raise RequestError(422, f"{key!r} is required (an integer in [{lo}, {hi}])")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f"{key!r} must be an integer in [{lo}, {hi}], got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(422, f"{key!r} must lie in [{lo}, {hi}], got {value}")
    return value


def parse_generate_request(body: Any, schema: ConditionSchema, max_n: int, formats: tuple[str, ...] = FORMATS,
                           unit: str = "image", model_job: Mapping[str, Any] | None = None,
                           defaults: Mapping[str, str] | None = None) -> GenerateRequest:
    """Check a decoded JSON body; raise :class:`RequestError` (422) with one clear line. ``formats``: the
    ``format`` values the endpoint's kind serves (none: rows come as JSON and ``format`` is refused);
    ``unit``: what one row is, for messages; ``model_job``: the endpoint's resolved job (a layout
    model's takes condition-transfer requests); ``defaults``: values of factors a condition may leave
    out (a layout model's ``road``: straight, as before road kinds). Integer condition values
    (``num_lanes: 3``) count as their strings: schema values are strings."""
    if isinstance(body, Mapping) and "format" in body and not formats:
        raise RequestError(422, f"'format' does not apply to {unit}s (rows come as JSON)")
    if not isinstance(body, Mapping):
        raise RequestError(422, "the request body must be a JSON object {conditions, n, seed, format}")
    unknown = sorted(set(body) - set(REQUEST_KEYS) - set(LAYOUT_REQUEST_KEYS))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r}; allowed fields: {list(REQUEST_KEYS + LAYOUT_REQUEST_KEYS)}")
    if any(k in body for k in LAYOUT_REQUEST_KEYS):
        return _parse_transfer_request(body, schema, max_n, formats, model_job)
    conditions = body.get("conditions")
    if isinstance(conditions, Mapping):
        conditions = [conditions]
    if not isinstance(conditions, list) or not conditions:
        raise RequestError(422, "'conditions' must be a condition {factor: value} or a non-empty list of them; "
                                f"factors: {schema.to_dict()}")
    if len(conditions) > max_n:
        raise RequestError(422, f"'conditions' has {len(conditions)} entries; at most {max_n} (the per-request limit)")
    checked = []
    for i, cond in enumerate(conditions):
        if isinstance(cond, Mapping):
            cond = {**(defaults or {}), **{k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in cond.items()}}
        try:
            checked.append(schema.validate(cond))
        except SchemaError as exc:
            raise RequestError(422, f"conditions[{i}]: {exc}") from None
    n = _int_field(body, "n", 1, 1, max_n)
    seed = _int_field(body, "seed", 0, 0, MAX_SEED)
    start = _int_field(body, "start", 0, 0, MAX_NUM_SAMPLES - n)
    num_samples = _int_field(body, "num_samples", start + n, start + n, MAX_NUM_SAMPLES)
    fmt = body.get("format", formats[0]) if formats else None
    if formats and fmt not in formats:
        raise RequestError(422, f"'format' must be one of {list(formats)}, got {fmt!r}")
    return GenerateRequest(conditions=checked, n=n, seed=seed, format=fmt, start=start, num_samples=num_samples)


def _parse_transfer_request(body: Mapping[str, Any], schema: ConditionSchema, max_n: int, formats: tuple[str, ...],
                            model_job: Mapping[str, Any] | None) -> GenerateRequest:
    """A condition-transfer request (see the module docstring)."""
    from aigc_synth.sampling.transfer import inline_layouts

    if model_job is None or not model_job.get("layout"):
        raise RequestError(422, "'layouts' needs a layout-conditioned model (layout_gan, layout_diffusion) behind /generate")
    if "layouts" not in body:
        raise RequestError(422, "'layouts_*' fields need 'layouts' (a list of BDD100K frames)")
    from aigc_synth.sampling.layout import ROAD_FACTOR

    # The frames are the layouts: no scene is drawn, so the plan is over the model's own factors (as a
    # batch transfer job's is), whatever road factor the endpoint's scene-drawing plan carries.
    schema = ConditionSchema.from_dict({k: v for k, v in schema.to_dict().items() if k != ROAD_FACTOR})
    as_zero = body.get("layouts_unknown_as_zero", False)
    if not isinstance(as_zero, bool):
        raise RequestError(422, f"'layouts_unknown_as_zero' must be true or false, got {as_zero!r}")
    try:
        layouts, plan, total = inline_layouts(body["layouts"], body.get("layouts_lanes"), body.get("layouts_drivable"),
                                              body.get("layouts_size"), body.get("conditions"), schema,
                                              bool(model_job["model_config"].get("layout_unknown_flags")), as_zero)
    except ValueError as exc:  # UsageError, SchemaError, PlanError included
        raise RequestError(422, f"layouts: {exc}") from None
    start = _int_field(body, "start", 0, 0, total - 1)
    n = _int_field(body, "n", min(total - start, max_n), 1, min(max_n, total - start))
    num_samples = _int_field(body, "num_samples", total, total, total)
    fmt = body.get("format", formats[0]) if formats else None
    if formats and fmt not in formats:
        raise RequestError(422, f"'format' must be one of {list(formats)}, got {fmt!r}")
    return GenerateRequest(conditions=layouts["conditions"], n=n, seed=_int_field(body, "seed", 0, 0, MAX_SEED), format=fmt,
                           start=start, num_samples=num_samples, layouts=layouts, transfer_plan=plan,
                           transfer_schema=schema.to_dict())


def decode_image(data: bytes, fmt: str) -> np.ndarray:
    """A served image's bytes (``format`` png or npy) → uint8 (H, W, 3)."""
    if fmt == "png":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    return np.load(io.BytesIO(data), allow_pickle=False)


# -- tokens and binding ---------------------------------------------------------------------------
def token_digest(token: str) -> bytes:
    """What the ingress keeps: the sha256 of the token, so the secret itself never enters Ray's state."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def check_bearer(authorization: str | None, digest: bytes | None) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header; ``digest=None`` = auth disabled."""
    if digest is None:
        return True
    if not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return False
    return hmac.compare_digest(token_digest(presented.strip()), digest)


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def check_bind(host: str, token: str | None) -> str | None:
    """Refuse (ValueError) a non-loopback bind without a token; return a warning for loopback without one."""
    if token:
        return None
    if not is_loopback(host):
        raise ValueError(f"refusing to listen on non-loopback host {host!r} without a token: set ${TOKEN_ENV} "
                         "(or serve.token), or use serve.host=127.0.0.1")
    return (f"warning: no token (${TOKEN_ENV} unset): any local process can call this endpoint on {host}; "
            f"set ${TOKEN_ENV} to require 'Authorization: Bearer <token>'")
