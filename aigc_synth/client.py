"""A small client for ``aigc-synth serve``, for simulator code (HTTP via the standard library).

    from aigc_synth.client import GenerationClient
    client = GenerationClient("http://127.0.0.1:8000", token=os.environ["AIGC_SYNTH_TOKEN"])
    for image, meta in client.generate({"weather": "fog", "time_of_day": "night", "traffic": "heavy"}, n=8, seed=3):
        ...   # image: uint8 (H, W, 3); meta: sample_index, condition, seed, sha256

Sample ``i`` of ``generate([c], n, seed)`` has the same bytes as sample id ``i`` of the batch job
``job.seed=seed`` with a ``list`` plan of the single condition ``c`` (see ``aigc_synth.serve.protocol``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from typing import Any, Mapping, Sequence


class GenerationError(RuntimeError):
    """The server answered with an error: ``status`` is the HTTP status, the message its ``error`` field."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def decode_image(data: bytes, fmt: str):
    """PNG or ``.npy`` bytes → uint8 (H, W, 3) numpy array."""
    import numpy as np

    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class GenerationClient:
    """``generate`` / ``conditions`` / ``health`` against a running ``aigc-synth serve``."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout_s: float = 120.0):
        self.url = url.rstrip("/")
        self.token = token if token is not None else (os.environ.get("AIGC_SYNTH_TOKEN") or None)
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error") or raw.decode("utf-8", "replace")
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", "replace")[:300]
            raise GenerationError(exc.code, message) from None

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def conditions(self) -> dict[str, Any]:
        """The schema ({factor: [values]}), model id, image size, formats and limits."""
        return self._request("GET", "/conditions")

    def generate_raw(self, conditions: Mapping[str, str] | Sequence[Mapping[str, str]], n: int = 1, seed: int = 0,
                     format: str = "png", start: int = 0, num_samples: int | None = None) -> dict[str, Any]:
        """The decoded JSON response (images still base64)."""
        body: dict[str, Any] = {"conditions": conditions if isinstance(conditions, Mapping) else list(conditions),
                                "n": n, "seed": seed, "format": format}
        if start:
            body["start"] = start
        if num_samples is not None:
            body["num_samples"] = num_samples
        return self._request("POST", "/generate", body)

    def generate(self, conditions: Mapping[str, str] | Sequence[Mapping[str, str]], n: int = 1, seed: int = 0,
                 format: str = "png", start: int = 0, num_samples: int | None = None) -> list[tuple[Any, dict[str, Any]]]:
        """``[(uint8 (H, W, 3) image, metadata)]``; metadata holds sample_index, condition, seed, sha256 and
        ``bytes`` (the PNG/npy bytes as served, checked against the sha256)."""
        resp = self.generate_raw(conditions, n, seed, format, start, num_samples)
        out = []
        for rec in resp["images"]:
            data = base64.b64decode(rec["data"])
            if hashlib.sha256(data).hexdigest() != rec["sha256"]:
                raise GenerationError(200, f"sha256 mismatch for sample {rec['sample_index']}")
            meta = {k: v for k, v in rec.items() if k != "data"}
            meta["bytes"] = data
            out.append((decode_image(data, resp["format"]), meta))
        return out
