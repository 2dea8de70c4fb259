"""The Ray Serve application behind ``aigc-synth serve``.

Deployments::

    HTTP ──► Api (FastAPI ingress: token, body limit, request checks, request → the job it is a slice of)
                 │  DeploymentHandle per endpoint
                 ▼
             Generator × num_replicas   (POST /generate: the sampler of ``serve.sampler``, default images)
             SceneGenerator             (POST /scenes: the scene kind's sampler; serve.scenes=true)

Each replica holds the **same sampler a job actor builds** (``kind.build(job, checkpoint bytes)``,
:mod:`aigc_synth.sampling.base`), from a job resolved by the kind as a job's is
(:func:`aigc_synth.jobs.spec.serving_job`). A request ``{conditions, n, seed, start, num_samples}`` is
turned into that job with the request's seed, size and list plan, and the replica answers
``sampler.sample_slices([(job, ids), ...])``: rows ``[start, start + n)`` of the batch job, by
construction. ``@serve.batch`` merges concurrent requests up to ``max_batch_images`` rows per call;
an image sampler runs them through one network pass, which never changes bytes (fixed-size
micro-batches). The kind writes the response rows (``SamplerKind.respond``).

Resources: Serve's controller and HTTP proxy reserve 0 CPU; the ingress asks ``ingress_cpus`` (0)
and each generator replica ``num_cpus`` (0.5), so the app fits a 2-CPU Ray and leaves room for a
batch job next to it.
"""

# no `from __future__ import annotations` here: FastAPI must see the real `Request` annotation of the
# ingress methods (as strings, `request` turns into a required query parameter under @serve.ingress)
import asyncio
import json
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from aigc_synth.sampling.base import SamplerKind
from aigc_synth.sampling.layout import ROAD_FACTOR
from aigc_synth.schema import ConditionSchema
from aigc_synth.serve.protocol import LAYOUT_REQUEST_KEYS, REQUEST_KEYS, RequestError, check_bearer, parse_generate_request

app = FastAPI(title="aigc_synth", docs_url=None, redoc_url=None, openapi_url=None)


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404, 405 as {"error": ...}
    return _error(exc.status_code, str(exc.detail))


def _rows_in(items: list[Any]) -> int:
    """@serve.batch size function: a batch is measured in rows, not requests."""
    return sum(len(item[1]) for item in items)


@serve.deployment(name="Generator", max_constructor_retry_count=3)
class SamplerReplica:
    """Holds one sampler of ``kind``, built once from the checkpoint bytes and the resolved job; answers
    ``(job, sample ids, format)`` items with the kind's response rows."""

    def __init__(self, kind: SamplerKind, job: dict[str, Any], checkpoint_bytes: bytes, torch_threads: int,
                 max_batch_rows: int, batch_wait_timeout_s: float, use_gpu: bool):
        import torch

        torch.set_num_threads(max(1, int(torch_threads)))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        if use_gpu and device == "cpu":
            raise RuntimeError("replica was given a GPU by Ray but torch.cuda.is_available() is False")
        self.kind = kind
        self.sampler = kind.build(job, checkpoint_bytes, device)  # the job actor's sampler
        self.respond.set_max_batch_size(int(max_batch_rows))
        self.respond.set_batch_wait_timeout_s(float(batch_wait_timeout_s))

    def _respond_many(self, items: list[tuple]) -> list[dict[str, Any]]:
        """items: (job, sample ids, format) → per item the kind's part of the response."""
        batches = self.sampler.sample_slices([(job, np.asarray(ids, np.int64)) for job, ids, _ in items])
        return [self.kind.response(self.sampler, batch, job, fmt) for batch, (job, _, fmt) in zip(batches, items)]

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.01, batch_size_fn=_rows_in)
    async def respond(self, items: list[tuple]) -> list[dict[str, Any]]:
        # the model runs in a thread so the replica's event loop keeps queueing the next batch
        return await asyncio.to_thread(self._respond_many, items)


@serve.deployment(name="Api")
@serve.ingress(app)
class Api:
    """The HTTP surface: ``GET /health``, ``GET /conditions``, ``POST /generate``, ``POST /scenes``.

    ``endpoints``: ``{"generate": handle, "scenes": handle}`` (``scenes`` optional); ``infos``: per endpoint
    ``{job, kind_name, unit, formats, schema, model_id, family, resolution, compute_batch}``."""

    def __init__(self, endpoints: dict[str, Any], infos: dict[str, dict[str, Any]], token_digest: bytes | None, max_n: int,
                 max_body_bytes: int):
        self.endpoints, self.infos = dict(endpoints), {k: dict(v) for k, v in infos.items()}
        self.schemas = {k: ConditionSchema.from_dict(v["schema"]) for k, v in self.infos.items()}
        # an image request may leave out a layout job's road (its scenes' kind): the first kind, straight
        # where the scene model knows it, as before road kinds; a scene model's road is its own factor
        self.defaults = {k: {ROAD_FACTOR: s.values(ROAD_FACTOR)[0]} if k == "generate" and ROAD_FACTOR in s.names else {}
                         for k, s in self.schemas.items()}
        self.token_digest = token_digest
        self.max_n, self.max_body_bytes = int(max_n), int(max_body_bytes)

    def _authorized(self, request: Request) -> bool:
        return check_bearer(request.headers.get("authorization"), self.token_digest)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise RequestError(422, "invalid Content-Length header")
            if int(declared) > limit:
                raise RequestError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
        chunks, total = [], 0
        async for chunk in request.stream():  # also bounds bodies sent without Content-Length (chunked)
            total += len(chunk)
            if total > limit:
                raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/conditions")
    async def conditions(self, request: Request):
        if not self._authorized(request):
            return _error(401, "missing or invalid bearer token (Authorization: Bearer <token>)")
        info = self.infos["generate"]
        return {"schema": info["schema"], "combinations": self.schemas["generate"].num_combinations,
                "model_id": info["model_id"], "family": info["family"], "sampler": info["kind_name"],
                "width": info["resolution"], "height": info["resolution"], "formats": list(info["formats"]),
                "max_n": self.max_n, "max_body_bytes": self.max_body_bytes,
                "request_fields": list(REQUEST_KEYS) + (list(LAYOUT_REQUEST_KEYS) if info["job"].get("layout") else []),
                "compute_batch": info["compute_batch"]}

    async def _json_body(self, request: Request) -> Any:
        raw = await self._read_body(request)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(422, f"the request body is not valid JSON: {exc}") from None

    async def _answer(self, endpoint: str, request: Request):
        """Any endpoint: check the request, send the replica the job it is a slice of, wrap its rows."""
        if not self._authorized(request):
            return _error(401, "missing or invalid bearer token (Authorization: Bearer <token>)")
        if endpoint not in self.endpoints:
            return _error(404, f"this server has no {endpoint} model (serve.{endpoint}=false)")
        info, schema = self.infos[endpoint], self.schemas[endpoint]
        try:
            body = await self._json_body(request)
            req = parse_generate_request(body, schema, self.max_n, formats=info["formats"], unit=info["unit"],
                                         model_job=info["job"] if endpoint == "generate" else None,
                                         defaults=self.defaults[endpoint])
        except RequestError as exc:
            return _error(exc.status, str(exc))
        job = req.job(info["job"])
        try:
            rows = await self.endpoints[endpoint].respond.remote((job, req.sample_ids(), req.format))
        except Exception as exc:  # replica failure: one line, no traceback to the client
            return _error(500, f"{info['unit']} generation failed: {type(exc).__name__}")
        return {"model_id": info["model_id"], "seed": req.seed, "start": req.start, "n": req.n,
                "num_samples": req.num_samples, "conditions": req.conditions, **rows}

    @app.post("/scenes")
    async def scenes(self, request: Request):
        """``{conditions: [{traffic, num_lanes, road}, ...], n, seed, start, num_samples}`` → scene rows:
        the slice ``[start, start + n)`` of the scene job with that list plan and seed (same rows).
        ``road`` (a road kind) is a factor of models trained on more than straight roads only."""
        return await self._answer("scenes", request)

    @app.post("/generate")
    async def generate(self, request: Request):
        """``{conditions, n, seed, start, num_samples, format}`` → rows ``[start, start + n)`` of the job
        with that list plan and seed (images: the job's bytes, with boxes for layout models); with
        ``layouts`` (BDD100K frames), the condition-transfer job of those frames (``source_frame`` per row)."""
        return await self._answer("generate", request)


def build_app(*, endpoints: dict[str, dict[str, Any]], token_digest: bytes | None, ingress_cpus: float = 0.0,
              max_n: int = 64, max_body_bytes: int = 65536, batch_wait_timeout_s: float = 0.01):
    """The bound application (ingress ``Api`` → one sampler deployment per endpoint), ready for ``serve.run``.

    ``endpoints``: ``{"generate": spec, "scenes": spec}`` (``scenes`` optional), each spec
    ``{kind, job, checkpoint_bytes, num_replicas, num_cpus, num_gpus, torch_threads, max_batch_rows,
    deployment}`` (``job``: :func:`aigc_synth.jobs.spec.serving_job`)."""
    handles, infos = {}, {}
    for name, spec in endpoints.items():
        kind, job = spec["kind"], spec["job"]
        max_rows = max(int(spec["max_batch_rows"]), int(max_n))  # one full request must always fit a batch
        handles[name] = SamplerReplica.options(
            name=spec["deployment"], num_replicas=spec["num_replicas"],
            ray_actor_options={"num_cpus": spec["num_cpus"], "num_gpus": spec["num_gpus"]},
            max_ongoing_requests=max(8, 2 * max(1, max_rows // max(1, max_n))),
        ).bind(kind, job, spec["checkpoint_bytes"], spec["torch_threads"], max_rows, batch_wait_timeout_s, spec["num_gpus"] > 0)
        infos[name] = {"job": job, "kind_name": kind.name, "unit": kind.unit, "formats": kind.serve_formats,
                       "schema": job["schema"], "model_id": job["model_id"], "family": job["family"],
                       "resolution": job["resolution"], "compute_batch": job["compute_batch"]}
    return Api.options(ray_actor_options={"num_cpus": ingress_cpus}).bind(handles, infos, token_digest, max_n, max_body_bytes)
