"""Layout fidelity: do generated images show vehicles inside the boxes that were requested?

A frozen vehicle detector (:mod:`aigc_synth.models.detector`, trained on real renders only by
``scripts/train_vehicle_detector.py``) looks at the images; its detections are matched against the
requested boxes with COCO's own evaluation code (``pycocotools``), giving

* ``ap50``: average precision at IoU 0.5 (101-point interpolation, all box areas, 100 detections
  per image): high when the vehicles are where they were asked for and nowhere else;
* ``recall``: the share of requested boxes that some detection covers at IoU ≥ 0.5.

The detector is loaded with ``weights_only=True`` like every checkpoint. Its id
(``vehdet-v1-<sha256[:12]>``) belongs in every report that quotes these numbers, so figures
measured with different detectors are never compared by accident.

Ground-truth filter (COCO-style ignore regions)
    Many requested vehicles are a few pixels tall or mostly hidden behind a nearer one: no
    detector (and no viewer) can be held to them, yet a detection there is not wrong either. A box
    is therefore **ignored**, neither a hit nor a miss, when

    * its height, measured at the detector's 64-px input scale, is below :data:`MIN_BOX_HEIGHT`, or
    * its visible fraction (when known, e.g. :attr:`RenderedScene.visible`) is below :data:`MIN_VISIBLE`.

    Ignored boxes are passed to COCOeval as ``iscrowd`` regions: a detection that falls mostly
    inside one (intersection / detection area ≥ 0.5) is not counted as a false positive, and the
    box is not counted as a miss. They are never silently dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aigc_synth.errors import first_line
from aigc_synth.io.checkpoint import load_checkpoint_bytes, require_format
from aigc_synth.errors import CheckpointError
from aigc_synth.models.detector import DETECTOR_INPUT, VehicleCenterNet, decode

DETECTOR_FORMAT = "aigc_synth.vehicle_detector/v1"
DEFAULT_DETECTOR = Path(__file__).resolve().parents[1] / "assets" / "vehicle_detector.pt"
#: Boxes shorter than this (pixels of a 64-px image) are ignore regions: about 76 % of rendered
#: vehicles are, most of them two or three pixels of colour at the horizon.
MIN_BOX_HEIGHT = 4.0
#: Boxes less visible than this (share of the vehicle's face not hidden or outside the view) are ignore regions.
MIN_VISIBLE = 0.5
#: Detection parameters of :meth:`VehicleDetector.detect` (COCOeval then keeps the best 100 per image).
MAX_DETECTIONS, SCORE_THRESHOLD = 50, 0.05
#: IoU that makes a detection a hit.
IOU_THRESHOLD = 0.5
#: Images per network call, fixed (like the domain classifier's) so a detection never depends on
#: how the work was split: a short last chunk is padded.
DETECT_BATCH = 64

Detections = Sequence[tuple[np.ndarray, np.ndarray]]


class VehicleDetector:
    """A loaded vehicle detector; call :meth:`detect` on uint8 images."""

    def __init__(self, module: VehicleCenterNet, detector_id: str, meta: dict[str, Any] | None = None, path: str = "<module>"):
        self.module = module.eval()
        self._fast = module.fused()  # inference copy: BN folded, channels-last
        self.detector_id, self.meta, self.path = detector_id, dict(meta or {}), path

    @torch.no_grad()
    def detect(self, images: np.ndarray | torch.Tensor, max_dets: int = MAX_DETECTIONS,
               score_threshold: float = SCORE_THRESHOLD) -> list[tuple[np.ndarray, np.ndarray]]:
        """uint8 images, (n, H, W, 3) numpy or (n, 3, H, W) tensor → per image ``(boxes, scores)``.

        ``boxes`` float32 (k, 4) x0, y0, x1, y1 in the input's pixels, inside the image; ``scores``
        float32 (k,), descending. Images of another size than 64×64 are resized (bilinear,
        antialiased) for the network and the boxes scaled back. Runs in fixed chunks of
        :data:`DETECT_BATCH` on one thread, so the same image always gets the same boxes.
        """
        numpy_in = isinstance(images, np.ndarray)
        if images.ndim != 4 or images.shape[3 if numpy_in else 1] != 3:
            raise ValueError(f"expected (n, H, W, 3) numpy or (n, 3, H, W) tensor images, got shape {tuple(images.shape)}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2) if numpy_in else images
        if x.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {x.dtype}")
        height, width = int(x.shape[2]), int(x.shape[3])
        scale = np.array([width, height, width, height], np.float32) / DETECTOR_INPUT
        out: list[tuple[np.ndarray, np.ndarray]] = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for start in range(0, len(x), DETECT_BATCH):
                chunk = x[start:start + DETECT_BATCH]
                n = len(chunk)
                if n < DETECT_BATCH:  # pad so every call has the same shape
                    chunk = torch.cat([chunk, chunk[:1].expand(DETECT_BATCH - n, *chunk.shape[1:])])
                chunk = chunk.float() / 127.5 - 1.0
                if (height, width) != (DETECTOR_INPUT, DETECTOR_INPUT):
                    chunk = F.interpolate(chunk, size=(DETECTOR_INPUT, DETECTOR_INPUT), mode="bilinear",
                                          align_corners=False, antialias=True)
                raw = self._fast(chunk.contiguous(memory_format=torch.channels_last))
                for boxes, scores in decode(raw[:n], max_dets=max_dets, score_threshold=score_threshold):
                    out.append(((boxes * scale).astype(np.float32), scores))
        finally:
            torch.set_num_threads(threads)
        return out


def detector_id_for(data: bytes) -> str:
    return "vehdet-v1-" + hashlib.sha256(data).hexdigest()[:12]


def resolve_detector_path(path: str | os.PathLike | None) -> Path:
    """``None`` / ``'default'`` → the bundled detector; anything else is a path."""
    return DEFAULT_DETECTOR if path in (None, "default") else Path(path)


def load_vehicle_detector(path: str | os.PathLike | None = None) -> VehicleDetector:
    """Load the bundled detector (``path=None`` or ``'default'``) or a retrained one from ``path``."""
    path = resolve_detector_path(path)
    if not path.is_file():
        raise CheckpointError(f"vehicle detector not found: {path} (train one with scripts/train_vehicle_detector.py)")
    return load_vehicle_detector_from_bytes(path.read_bytes(), str(path))


def load_vehicle_detector_from_bytes(data: bytes, source: str = "<bytes>") -> VehicleDetector:
    """Rebuild a detector from checkpoint bytes (safe load); the id hashes exactly these bytes."""
    ckpt = require_format(load_checkpoint_bytes(data, label=source), source, DETECTOR_FORMAT, "vehicle detector")
    try:
        module = VehicleCenterNet(**ckpt["model_config"])
        module.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"vehicle detector {source} is malformed: {first_line(exc, 200)}") from None
    return VehicleDetector(module, detector_id_for(data), dict(ckpt.get("meta", {})), source)


# ---- ground-truth filter ------------------------------------------------------------------------------

def gt_ignore_mask(boxes: np.ndarray, visible: np.ndarray | None = None, image_height: int = DETECTOR_INPUT) -> np.ndarray:
    """bool (n,): which of ``boxes`` (n, 4 x0 y0 x1 y1, pixels of an ``image_height``-px image)
    are ignore regions under the module's filter (:data:`MIN_BOX_HEIGHT`, :data:`MIN_VISIBLE`)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    height = (boxes[:, 3] - boxes[:, 1]) * (DETECTOR_INPUT / float(image_height))  # at the detector's input scale
    ignore = height < MIN_BOX_HEIGHT
    if visible is not None:
        visible = np.asarray(visible, np.float64).reshape(-1)
        if len(visible) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(visible)} visible fractions")
        ignore |= visible < MIN_VISIBLE
    return ignore


def gt_filter_description() -> dict[str, Any]:
    """The filter's thresholds as plain data (stored in the detector's meta and in reports)."""
    return {"min_box_height_px_at_64": MIN_BOX_HEIGHT, "min_visible": MIN_VISIBLE, "mode": "coco_ignore_regions"}


# ---- COCO evaluation -----------------------------------------------------------------------------------

def _xywh(b: np.ndarray) -> list[float]:
    return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]


def layout_fidelity(detections: Detections, gt_boxes: Sequence[np.ndarray],
                    gt_ignore: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """AP at IoU 0.5 and recall at IoU 0.5 of ``detections`` against the requested ``gt_boxes``.

    ``detections``: per image ``(boxes (k, 4), scores (k,))``; ``gt_boxes``: per image (n, 4), both
    x0, y0, x1, y1 pixels; ``gt_ignore``: per image bool (n,), True for ignore regions (see the
    module docstring; ``None``: every box counts). Computed by ``pycocotools.cocoeval.COCOeval``
    (bbox, one category, IoU threshold 0.5, area range all, 100 detections per image).

    Returns ``{"ap50", "recall", "num_gt", "num_ignored", "num_images", "num_detections"}``;
    ``ap50`` and ``recall`` are NaN when no box counts (nothing to find).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(detections) != len(gt_boxes):
        raise ValueError(f"{len(detections)} detection lists but {len(gt_boxes)} ground-truth lists")
    if gt_ignore is not None and len(gt_ignore) != len(gt_boxes):
        raise ValueError(f"{len(gt_boxes)} ground-truth lists but {len(gt_ignore)} ignore masks")
    images = [{"id": i + 1} for i in range(len(gt_boxes))]
    categories = [{"id": 1, "name": "vehicle"}]
    gts, dts = [], []
    num_gt = num_ignored = 0
    for i, boxes in enumerate(gt_boxes):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ignore = np.zeros(len(boxes), bool) if gt_ignore is None else np.asarray(gt_ignore[i], bool).reshape(-1)
        if len(ignore) != len(boxes):
            raise ValueError(f"image {i}: {len(boxes)} boxes but {len(ignore)} ignore flags")
        for b, ig in zip(boxes, ignore):
            xywh = _xywh(b)
            # iscrowd is what COCOeval reads as "ignore" (it overwrites any 'ignore' key from it)
            gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": 1, "bbox": xywh,
                        "area": xywh[2] * xywh[3], "iscrowd": int(ig)})
        num_ignored += int(ignore.sum())
        num_gt += int((~ignore).sum())
    for i, (boxes, scores) in enumerate(detections):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"image {i}: {len(boxes)} detected boxes but {len(scores)} scores")
        for b, s in zip(boxes, scores):
            xywh = _xywh(b)
            dts.append({"id": len(dts) + 1, "image_id": i + 1, "category_id": 1, "bbox": xywh,
                        "area": xywh[2] * xywh[3], "score": float(s), "iscrowd": 0})
    out: dict[str, Any] = {"ap50": math.nan, "recall": math.nan, "num_gt": num_gt, "num_ignored": num_ignored,
                           "num_images": len(gt_boxes), "num_detections": len(dts)}
    if num_gt == 0:
        return out
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "categories": categories, "annotations": gts}
        coco_dt.dataset = {"images": images, "categories": categories, "annotations": dts}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = [im["id"] for im in images]
        ev.params.iouThrs = np.array([IOU_THRESHOLD])
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, 0, 0, -1]  # (recall thresholds,) at IoU .5, category, area all, 100 dets
    precision = precision[precision > -1]
    out["ap50"] = float(precision.mean()) if len(precision) else math.nan
    out["recall"] = float(ev.eval["recall"][0, 0, 0, -1])
    return out


def score_layout(detector: VehicleDetector, images: np.ndarray | torch.Tensor, gt_boxes: Sequence[np.ndarray],
                 gt_visible: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Detect vehicles in uint8 ``images``, filter the requested ``gt_boxes`` (optionally with their
    visible fractions) and score: ``{"ap50", "recall", "num_gt", "num_ignored", "num_images"}``."""
    if len(images) != len(gt_boxes):
        raise ValueError(f"{len(images)} images but {len(gt_boxes)} box lists")
    if gt_visible is not None and len(gt_visible) != len(gt_boxes):
        raise ValueError(f"{len(gt_boxes)} box lists but {len(gt_visible)} visibility lists")
    height = int(images.shape[1] if isinstance(images, np.ndarray) else images.shape[2])
    dets = detector.detect(images)
    ignore = [gt_ignore_mask(b, None if gt_visible is None else gt_visible[i], height) for i, b in enumerate(gt_boxes)]
    res = layout_fidelity(dets, gt_boxes, ignore)
    return {k: res[k] for k in ("ap50", "recall", "num_gt", "num_ignored", "num_images")}
