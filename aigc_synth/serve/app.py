"""The Ray Serve application behind ``aigc-synth serve``.

Two deployments::

    HTTP ──► Api (FastAPI ingress: token, body limit, request checks, plan → codes + seeds, base64)
                 │  DeploymentHandle
                 ▼
             Generator × num_replicas (model loaded once in __init__; @serve.batch merges concurrent
                                        requests up to max_batch_images images per model call)

Batching never changes bytes: :func:`~aigc_synth.sampling.sampler.generate_images` runs fixed-size
micro-batches, so an image depends only on its (condition, seed) and the model.

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

from aigc_synth.schema import ConditionSchema
from aigc_synth.serve.protocol import (FORMATS, REQUEST_KEYS, RequestError, check_bearer, encode_image, image_record,
                                       parse_generate_request, plan_request)

app = FastAPI(title="aigc_synth", docs_url=None, redoc_url=None, openapi_url=None)


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:  # 404, 405 as {"error": ...}
    return _error(exc.status_code, str(exc.detail))


def _images_in(items: list[Any]) -> int:
    """@serve.batch size function: a batch is measured in images, not requests."""
    return sum(len(item[1]) for item in items)


@serve.deployment(name="Generator", max_constructor_retry_count=3)
class Generator:
    """Holds one loaded generator; renders (codes, seeds) into encoded images. A layout-conditioned
    generator also holds the scene model (``layout_scenes``: its checkpoint path and id) and draws
    each image for the scene the equivalent job would sample (same scene, boxes and bytes)."""

    def __init__(self, checkpoint_bytes: bytes, source: str, model_id: str, torch_threads: int, compute_batch: int,
                 max_batch_images: int, batch_wait_timeout_s: float, use_gpu: bool,
                 layout_scenes: dict[str, Any] | None = None):
        import torch

        from aigc_synth.models.exported import load_generator_from_bytes

        torch.set_num_threads(max(1, int(torch_threads)))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        if use_gpu and self.device == "cpu":
            raise RuntimeError("replica was given a GPU by Ray but torch.cuda.is_available() is False")
        self.gen = load_generator_from_bytes(checkpoint_bytes, source=source, device=self.device)
        if self.gen.model_id != model_id:
            raise RuntimeError("checkpoint bytes shipped to the replica do not match the validated model id")
        self.compute_batch = int(compute_batch)
        self.scenes = None
        if layout_scenes is not None:
            from aigc_synth.sampling.layout import SceneSource

            self.scenes = SceneSource({"seed": 0, "compute_batch": 64, **layout_scenes})
        self.render.set_max_batch_size(int(max_batch_images))
        self.render.set_batch_wait_timeout_s(float(batch_wait_timeout_s))

    def _render_many(self, items: list[tuple]) -> list[list[tuple[bytes, dict[str, Any] | None]]]:
        """items: (codes, seeds, format, sample ids, job seed) → per item [(encoded image, labels)];
        labels are ``{scene_id, boxes}`` for layout models, else None."""
        from aigc_synth.sampling.sampler import generate_images

        codes = np.concatenate([np.asarray(c, dtype=np.int64) for c, *_ in items])
        seeds = np.concatenate([np.asarray(s, dtype=np.int64) for _, s, *_ in items])
        layouts, labels = None, [None] * len(codes)
        if self.scenes is not None:
            from aigc_synth.sampling.layout import layouts_and_labels

            parts, labels = [], []
            for c, _, _, ids, job_seed in items:  # each request is a slice of its own job (its seed)
                scenes, _ = self.scenes.scenes_for(np.asarray(ids, np.int64), np.asarray(c, np.int64), self.gen.schema, seed=job_seed)
                lay, scene_ids, boxes = layouts_and_labels(scenes, self.gen.resolution)
                parts.append(lay)
                labels += [{"scene_id": int(i), "boxes": b} for i, b in zip(scene_ids, boxes)]
            layouts = np.concatenate(parts)
        images = generate_images(self.gen, codes, seeds, self.device, self.compute_batch, layouts=layouts)
        out, pos = [], 0
        for _, s, fmt, *_ in items:
            out.append([(encode_image(img, fmt), lab) for img, lab in zip(images[pos:pos + len(s)], labels[pos:pos + len(s)])])
            pos += len(s)
        return out

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.01, batch_size_fn=_images_in)
    async def render(self, items: list[tuple]) -> list[list[tuple[bytes, dict[str, Any] | None]]]:
        # the model runs in a thread so the replica's event loop keeps queueing the next batch
        return await asyncio.to_thread(self._render_many, items)


@serve.deployment(name="SceneGenerator", max_constructor_retry_count=3)
class SceneGenerator:
    """Holds one loaded scene generator; turns (traffic, lanes, seeds, ids) into scene rows."""

    def __init__(self, checkpoint_bytes: bytes, source: str, model_id: str, torch_threads: int, compute_batch: int):
        import torch

        from aigc_synth.models.scene_families import load_scene_generator_from_bytes

        torch.set_num_threads(max(1, int(torch_threads)))
        self.gen = load_scene_generator_from_bytes(checkpoint_bytes, source=source)
        if self.gen.model_id != model_id:
            raise RuntimeError("checkpoint bytes shipped to the replica do not match the validated model id")
        self.compute_batch = int(compute_batch)

    def _rows(self, traffic: list[str], lanes: list[int], seeds: list[int], ids: list[int]) -> list[dict[str, Any]]:
        from aigc_synth.scenes.format import scenes_to_table

        return scenes_to_table(self.gen.sample(traffic, lanes, seeds, ids, compute_batch=self.compute_batch)).to_pylist()

    async def rows(self, traffic: list[str], lanes: list[int], seeds: list[int], ids: list[int]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._rows, traffic, lanes, seeds, ids)


@serve.deployment(name="Api")
@serve.ingress(app)
class Api:
    """The HTTP surface: ``GET /health``, ``GET /conditions``, ``POST /generate``, ``POST /scenes``."""

    def __init__(self, generator: Any, info: dict[str, Any], token_digest: bytes | None, max_n: int, max_body_bytes: int,
                 scene_generator: Any = None, scene_info: dict[str, Any] | None = None):
        self.generator = generator
        self.info = dict(info)
        self.schema = ConditionSchema.from_dict(info["schema"])
        self.scene_generator, self.scene_info = scene_generator, dict(scene_info or {})
        self.scene_schema = ConditionSchema.from_dict(scene_info["schema"]) if scene_info else None
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
        return {"schema": self.info["schema"], "combinations": self.schema.num_combinations,
                "model_id": self.info["model_id"], "family": self.info["family"],
                "width": self.info["resolution"], "height": self.info["resolution"], "formats": list(FORMATS),
                "max_n": self.max_n, "max_body_bytes": self.max_body_bytes, "request_fields": list(REQUEST_KEYS),
                "compute_batch": self.info["compute_batch"]}

    async def _json_body(self, request: Request) -> Any:
        raw = await self._read_body(request)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(422, f"the request body is not valid JSON: {exc}") from None

    @app.post("/scenes")
    async def scenes(self, request: Request):
        """``{conditions: [{traffic, num_lanes}, ...], n, seed, start, num_samples}`` → scene rows: the
        slice ``[start, start + n)`` of the scene job with that list plan and seed (same rows)."""
        if not self._authorized(request):
            return _error(401, "missing or invalid bearer token (Authorization: Bearer <token>)")
        if self.scene_generator is None:
            return _error(404, "this server has no scene model (serve.scenes=false)")
        try:
            body = await self._json_body(request)
            if isinstance(body, dict) and "format" in body:
                raise RequestError(422, "'format' does not apply to scenes (rows come as JSON)")
            if isinstance(body, dict):
                conds = body.get("conditions")
                for c in conds if isinstance(conds, list) else [conds] if isinstance(conds, dict) else []:
                    if isinstance(c, dict) and isinstance(c.get("num_lanes"), int) and not isinstance(c.get("num_lanes"), bool):
                        c["num_lanes"] = str(c["num_lanes"])  # the schema's values are strings; 3 and "3" both work
            req = parse_generate_request(body, self.scene_schema, self.max_n)
            ids, codes, seeds = plan_request(req, self.scene_schema)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        conds = [self.scene_schema.decode(c) for c in codes.tolist()]
        try:
            rows = await self.scene_generator.rows.remote([c["traffic"] for c in conds], [int(c["num_lanes"]) for c in conds],
                                                          seeds.tolist(), ids.tolist())
        except Exception as exc:  # replica failure: one line, no traceback to the client
            return _error(500, f"scene generation failed: {type(exc).__name__}")
        return {"model_id": self.scene_info["model_id"], "seed": req.seed, "start": req.start, "n": req.n,
                "num_samples": req.num_samples, "conditions": req.conditions, "scenes": rows}

    @app.post("/generate")
    async def generate(self, request: Request):
        if not self._authorized(request):
            return _error(401, "missing or invalid bearer token (Authorization: Bearer <token>)")
        try:
            body = await self._json_body(request)
            req = parse_generate_request(body, self.schema, self.max_n)
            ids, codes, seeds = plan_request(req, self.schema)
        except RequestError as exc:
            return _error(exc.status, str(exc))
        try:
            encoded = await self.generator.render.remote((codes, seeds, req.format, ids, req.seed))
        except Exception as exc:  # replica failure: one line, no traceback to the client
            return _error(500, f"generation failed: {type(exc).__name__}")
        images = [{**image_record(i, self.schema.decode(c), s, data), **(labels or {})}
                  for i, c, s, (data, labels) in zip(ids.tolist(), codes.tolist(), seeds.tolist(), encoded)]
        r = self.info["resolution"]
        return {"model_id": self.info["model_id"], "seed": req.seed, "start": req.start, "n": req.n,
                "num_samples": req.num_samples, "format": req.format, "width": r, "height": r,
                "conditions": req.conditions, "images": images}


def build_app(*, checkpoint_bytes: bytes, source: str, model_id: str, schema: dict[str, list[str]], family: str,
              resolution: int, token_digest: bytes | None, num_replicas: int = 1, num_cpus: float = 0.5,
              num_gpus: float = 0.0, ingress_cpus: float = 0.0, torch_threads: int = 1, compute_batch: int = 32,
              max_n: int = 64, max_body_bytes: int = 65536, max_batch_images: int = 256,
              batch_wait_timeout_s: float = 0.01, scenes: dict[str, Any] | None = None,
              layout_scenes: dict[str, Any] | None = None):
    """The bound application (ingress ``Api`` → ``Generator`` [+ ``SceneGenerator``]), ready for ``serve.run``.

    ``scenes``: ``{checkpoint_bytes, source, model_id, schema, num_cpus, torch_threads, compute_batch}``
    of the scene model behind ``POST /scenes`` (None: no scene endpoint). ``layout_scenes``:
    ``{scene_checkpoint, scene_model_id}`` of the scene model a layout-conditioned generator draws for."""
    max_batch_images = max(int(max_batch_images), int(max_n))  # one full request must always fit a batch
    generator = Generator.options(
        num_replicas=num_replicas, ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        max_ongoing_requests=max(8, 2 * max(1, max_batch_images // max(1, max_n))),
    ).bind(checkpoint_bytes, source, model_id, torch_threads, compute_batch, max_batch_images, batch_wait_timeout_s,
           num_gpus > 0, layout_scenes)
    info = {"schema": schema, "model_id": model_id, "family": family, "resolution": resolution,
            "compute_batch": compute_batch}
    scene_generator, scene_info = None, None
    if scenes is not None:
        scene_generator = SceneGenerator.options(num_replicas=1, ray_actor_options={"num_cpus": scenes["num_cpus"]}).bind(
            scenes["checkpoint_bytes"], scenes["source"], scenes["model_id"], scenes["torch_threads"], scenes["compute_batch"])
        scene_info = {"schema": scenes["schema"], "model_id": scenes["model_id"]}
    return Api.options(ray_actor_options={"num_cpus": ingress_cpus}).bind(generator, info, token_digest, max_n,
                                                                           max_body_bytes, scene_generator, scene_info)
