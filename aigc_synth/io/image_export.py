"""Export a finished image job to WebDataset tar shards or a COCO detection dataset.

Both writers take the rows of :func:`aigc_synth.io.reader.iter_image_rows` (``sample_id``, ``seed``,
``conditions``, ``image`` = encoded bytes, ``width``, ``height``, ``model_id``, optional ``boxes``).
Image bytes are copied as they are, never re-encoded; the file extension (``png`` / ``jpg`` /
``webp``) comes from the bytes' magic number, not from the job's file names. A sample's key is its
zero-padded id, ``f"{sample_id:09d}"`` (the job's own PNG file stem).

WebDataset (:func:`export_webdataset`)::

    OUT/shard-000000.tar        samples 0 .. shard_size-1 (sorted by sample id), then shard-000001.tar ...
        000000000.json          {"sample_id", "seed", "conditions", "width", "height", "model_id"[, "boxes"][, "source_frame"]}
        000000000.png           the image bytes (.jpg / .webp for JPEG / WebP images)

    import webdataset as wds
    ds = wds.WebDataset(sorted(glob.glob("OUT/shard-*.tar")), shardshuffle=False).decode("rgb8")
    for sample in ds: sample["__key__"], sample["png"], sample["json"]

  The tars are deterministic (USTAR, members sorted, mtime 0, uid/gid 0, empty owner names, mode
  0644), so the same rows give byte-identical shards, which can be checksummed or deduplicated.

COCO (:func:`export_coco`)::

    OUT/images/000000000.png    the image bytes
    OUT/instances.json          {"info", "licenses", "images", "annotations", "categories"}

    from pycocotools.coco import COCO
    coco = COCO("OUT/instances.json")   # file_name is relative to OUT: "images/000000000.png"

  ``images[i]`` = ``{"id": sample_id, "file_name", "width", "height", "seed", "model_id",
  "conditions": {factor: value}}`` (+ ``"source_frame"``: a condition-transfer job's source frame); one annotation per box (``bbox`` = ``[x, y, w, h]`` in pixels,
  ``area`` = w * h, ``iscrowd`` 0, ids 1, 2, ... in sample order); categories ``car`` = 1,
  ``truck`` = 2, then any other box label in sorted order.

Both stage everything in a temporary directory beside ``OUT`` and move it in at the end (COCO:
``images/`` first, ``instances.json`` last), so a failed export leaves no partial file under a
final name, and no temporary files either.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from aigc_synth.io.atomic import staged_directory as _staged

#: Categories every COCO export lists, with fixed ids (so models trained on different exports agree).
BASE_CATEGORIES: dict[str, int] = {"car": 1, "truck": 2}
COCO_YEAR = 2026  # fixed, not "now": the same rows give the same instances.json
SHARD_PATTERN = "shard-{:06d}.tar"


def image_extension(data: bytes) -> str:
    """``png`` / ``jpg`` / ``webp`` from the encoded bytes' magic number; ValueError otherwise."""
    if data[:4] == b"\x89PNG":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise ValueError(f"unrecognised image encoding (first bytes {bytes(data[:12])!r}); expected PNG, JPEG or WebP")


def sample_key(sample_id: int) -> str:
    return f"{int(sample_id):09d}"


def _sorted_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows by sample id; a repeated id would make two samples share a key (and a file), so refuse it."""
    ordered = sorted(rows, key=lambda r: int(r["sample_id"]))
    for prev, cur in zip(ordered, ordered[1:]):
        if int(prev["sample_id"]) == int(cur["sample_id"]):
            raise ValueError(f"sample_id {cur['sample_id']} appears more than once")
    return ordered


def _boxes(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    # a job without boxes has no column; a row of a job with boxes may hold None (no agents visible)
    return [dict(b) for b in (row.get("boxes") or [])]


def _metadata(row: Mapping[str, Any]) -> dict[str, Any]:
    """The per-sample JSON of a WebDataset sample (plain types only: Parquet may hand numpy scalars)."""
    meta: dict[str, Any] = {"sample_id": int(row["sample_id"]), "seed": int(row["seed"]),
                            "conditions": dict(row["conditions"]), "width": int(row["width"]),
                            "height": int(row["height"]), "model_id": row["model_id"]}
    boxes = _boxes(row)
    if boxes:
        meta["boxes"] = boxes
    if row.get("source_frame") is not None:  # condition transfer: the annotated frame it redraws
        meta["source_frame"] = row["source_frame"]
    return meta


def _fsync_write(path: Path, data: bytes) -> None:
    # fsynced before the rename that publishes it: after a crash a final name never holds a torn file
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _plain(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars (what Parquet or a caller may hand) as Python numbers."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _write_tar(path: Path, members: Sequence[tuple[str, bytes]]) -> None:
    """A deterministic tar of ``(name, bytes)``: sorted names, no timestamps, owners or umask leaking in."""
    with open(path, "wb") as fh:
        # USTAR: no PAX headers (which could carry timestamps); every name here is short ASCII
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in sorted(members):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode, info.type = len(data), 0, 0o644, tarfile.REGTYPE
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
        fh.flush()
        os.fsync(fh.fileno())  # as in _fsync_write


def export_webdataset(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, shard_size: int = 1000) -> list[Path]:
    """Write ``rows`` as WebDataset tar shards ``out_dir/shard-NNNNNN.tar``; return their paths, in order.

    Samples are sorted by id and cut into shards of ``shard_size``; each sample is ``<key>.json`` +
    ``<key>.<png|jpg|webp>``. Same rows, same shard size → byte-identical tars.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = _sorted_rows(rows)
    out = Path(out_dir)
    # check every image's encoding before creating anything: a bad one fails the export with nothing written
    exts = [image_extension(row["image"]) for row in ordered]
    names = [SHARD_PATTERN.format(i) for i in range((len(ordered) + shard_size - 1) // shard_size)]
    with _staged(out) as tmp:
        for i, name in enumerate(names):
            members = []
            for row, ext in zip(ordered[i * shard_size:(i + 1) * shard_size], exts[i * shard_size:(i + 1) * shard_size]):
                key = sample_key(row["sample_id"])
                members.append((f"{key}.json", json.dumps(_metadata(row), separators=(",", ":"), default=_plain).encode()))
                members.append((f"{key}.{ext}", bytes(row["image"])))
            _write_tar(tmp / name, members)
    return [out / name for name in names]


def coco_categories(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{label: category id}``: car = 1, truck = 2 always, then other box labels in sorted order."""
    categories = dict(BASE_CATEGORIES)
    extra = sorted({str(b["label"]) for row in rows for b in _boxes(row)} - set(categories))
    for label in extra:
        categories[label] = len(categories) + 1
    return categories


def coco_instances(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The COCO ``instances.json`` document of ``rows`` (file names ``images/<key>.<ext>``)."""
    ordered = _sorted_rows(rows)
    categories = coco_categories(ordered)
    images, annotations = [], []
    for row in ordered:
        sample_id = int(row["sample_id"])
        images.append({"id": sample_id, "file_name": f"images/{sample_key(sample_id)}.{image_extension(row['image'])}",
                       "width": int(row["width"]), "height": int(row["height"]), "seed": int(row["seed"]),
                       "model_id": row["model_id"], "conditions": dict(row["conditions"]),
                       **({"source_frame": row["source_frame"]} if row.get("source_frame") is not None else {})})
        for box in _boxes(row):
            x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
            if x1 < x0 or y1 < y0:
                raise ValueError(f"sample {sample_id}: box {box} has x1 < x0 or y1 < y0")
            w, h = x1 - x0, y1 - y0
            ann = {"id": len(annotations) + 1, "image_id": sample_id, "category_id": categories[str(box["label"])],
                   "bbox": [x0, y0, w, h], "area": w * h, "iscrowd": 0}
            if box.get("agent") is not None:
                ann["agent"] = box["agent"]  # ties the box back to the scene agent it was drawn for
            annotations.append(ann)
    return {"info": {"description": "aigc_synth conditional synthetic driving images", "version": "1.0",
                     "year": COCO_YEAR},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": cid, "name": name, "supercategory": "vehicle"} for name, cid in categories.items()]}


def export_coco(rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``out_dir/images/<key>.<ext>`` and ``out_dir/instances.json``; return ``[instances.json]``."""
    out = Path(out_dir)
    document = coco_instances(rows)  # validates every image and box before anything is created
    data = {img["file_name"]: bytes(row["image"]) for img, row in zip(document["images"], _sorted_rows(rows))}
    with _staged(out, commit_order=("instances.json",)) as tmp:
        (tmp / "images").mkdir()
        for name, image in data.items():
            _fsync_write(tmp / name, image)
        _fsync_write(tmp / "instances.json", (json.dumps(document, indent=1, default=_plain) + "\n").encode())
    return [out / "instances.json"]
