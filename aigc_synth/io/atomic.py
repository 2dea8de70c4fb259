"""Atomic file commits: write to a temporary name in the same directory, fsync, then rename.

A reader (or a resumed job) therefore sees either the complete file or no file at all; a crash
leaves at most a ``.tmp-*`` file, which the job cleans up on its next run.

Output locations (:func:`open_store`) are a local directory (:class:`LocalStore`, the above) or
any ``pyarrow.fs`` URI such as ``s3://bucket/prefix`` (:class:`ObjectStore`: temporary key, then
move onto the final key, since object stores have neither rename nor fsync).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

from aigc_synth.errors import StorageError, first_line

TMP_MARKER = ".tmp-"


def temp_path_for(path: Path) -> Path:
    """A unique temporary sibling of ``path`` (same directory, so rename is atomic)."""
    return path.with_name(f"{TMP_MARKER}{uuid.uuid4().hex[:12]}-{path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it is fsynced and renamed onto ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and commit the result atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# output locations: a local directory or a pyarrow.fs URI (s3://, gs://, ...)
# ------------------------------------------------------------------------------------------------
#: ``scheme://`` at the start of a string: a filesystem URI, not a local path.
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: ``Path("s3://b/p")`` folds the double slash into ``s3:/b/p``; callers that wrapped a URI in a
#: Path get it back (only for the schemes pyarrow knows, so a local folder named ``x:`` is safe).
_FOLDED = re.compile(r"^(s3|gs|gcs|hdfs|viewfs|abfs|abfss|file):/(?!/)")
#: Environment variables that tell pyarrow's filesystems where and who: forwarded from the driver
#: to the actors, whose processes may predate them (a Ray started earlier) or run on other nodes.
STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "AZURE_STORAGE_")


def is_uri(location: str | os.PathLike) -> bool:
    return bool(_URI.match(str(location)))


def redact(uri: str) -> str:
    """``uri`` without ``user:secret@`` credentials, for messages and logs."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/@?#]*@", r"\1***@", uri)


def storage_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The storage credential/endpoint variables set in ``environ`` (default: this process)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


def join_location(location: str, rel: str) -> str:
    """``rel`` under a local path or a URI, as text: ``s3://b/p?region=x`` + ``manifest.json`` →
    ``s3://b/p/manifest.json?region=x`` (``Path`` would fold the ``//`` and keep the query inside)."""
    text = os.fspath(location)
    if not is_uri(text):
        return str(Path(text) / rel)
    base, sep, query = text.partition("?")
    return f"{base.rstrip('/')}/{rel}{sep}{query}"


def _resolve_uri(uri: str):
    import pyarrow as pa
    import pyarrow.fs as pafs

    scheme = _URI.match(uri).group(1).lower()
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError) as exc:
        msg = first_line(exc)
        if "Unrecognized filesystem type" in msg:
            raise StorageError(f"output location {redact(uri)}: unknown scheme '{scheme}://' (use a local path, "
                               "file://, s3://, gs:// or another pyarrow.fs URI)") from None
        raise StorageError(f"output location {redact(uri)} is not a valid URI: {msg}") from None
    except (OSError, ImportError) as exc:  # e.g. resolving an S3 bucket's region without a network
        raise StorageError(f"output location {redact(uri)}: {first_line(exc)}") from None


def open_store(location: "str | os.PathLike | Store") -> "Store":
    """The :class:`Store` for a local path or a ``pyarrow.fs`` URI (``file://`` URIs are local paths)."""
    if isinstance(location, (LocalStore, ObjectStore)):
        return location
    text = os.fspath(location)
    if isinstance(location, PurePath) and _FOLDED.match(text):
        scheme, rest = text.split(":/", 1)
        text = f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"
    if not is_uri(text):
        return LocalStore(Path(text).expanduser())
    import pyarrow.fs as pafs

    fs, base = _resolve_uri(text)
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalStore(Path(base))
    base = base.rstrip("/")
    if isinstance(fs, (pafs.S3FileSystem, getattr(pafs, "GcsFileSystem", ()))) and not base:
        raise StorageError(f"output location {redact(text)} names no bucket (use e.g. s3://my-bucket/runs/name)")
    return ObjectStore(text, fs, base)


class LocalStore:
    """A local directory: temporary sibling + fsync + rename (the original behaviour)."""

    remote = False

    def __init__(self, root: Path):
        self.root = Path(root)
        self.uri = str(self.root)
        self.display = str(self.root)

    def path(self, rel: str = "") -> Path:
        return self.root / rel if rel else self.root

    def describe(self, rel: str) -> str:
        """A human-readable location of ``rel`` (for messages)."""
        return str(self.root.absolute() / rel)

    def exists(self, rel: str = "") -> bool:
        return self.path(rel).exists()

    def is_file(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def is_dir(self, rel: str = "") -> bool:
        return self.path(rel).is_dir()

    def is_empty(self) -> bool:
        return not (self.root.is_dir() and any(self.root.iterdir()))

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self.path(rel), data)

    def write_json(self, rel: str, obj: Any) -> None:
        atomic_write_json(self.path(rel), obj)

    def listdir(self, rel: str) -> list[str]:
        folder = self.path(rel)
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []

    def walk(self) -> list[str]:
        return [str(p.relative_to(self.root)) for p in self.root.rglob("*")] if self.root.is_dir() else []

    def delete(self, rel: str) -> None:
        import shutil

        target = self.path(rel)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    def makedirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def sha256(self, rel: str) -> str:
        return sha256_file(self.path(rel))

    def read_table(self, rel: str, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        return pq.read_table(self.path(rel), columns=columns)

    def read_metadata(self, rel: str):
        import pyarrow.parquet as pq

        return pq.read_metadata(self.path(rel))


class ObjectStore:
    """A prefix in a ``pyarrow.fs`` filesystem (S3, GCS, ...): no rename, no fsync.

    Every object is written under a temporary key in the same "folder"
    (``.tmp-<uuid>-<name>``) and then moved onto its final key (``FileSystem.move``: copy +
    delete on S3 and GCS), so a final key only ever holds complete bytes; a writer killed midway
    leaves only ``.tmp-*`` keys (or an unfinished multipart upload, which the store discards),
    which the job deletes on its next run. ``uri`` is the plain string to hand to other processes,
    which re-resolve it (credentials come from their environment or the URI).
    """

    remote = True

    def __init__(self, uri: str, fs, base: str):
        self.uri, self.fs, self.base = uri, fs, base
        self.display = redact(uri)

    def key(self, rel: str = "") -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def describe(self, rel: str) -> str:
        """``scheme://bucket/prefix/rel`` (no credentials, no query), for messages."""
        return f"{_URI.match(self.uri).group(1)}://{self.key(rel)}"

    def _info(self, rel: str = ""):
        return self.fs.get_file_info(self.key(rel))

    def exists(self, rel: str = "") -> bool:
        import pyarrow.fs as pafs

        return self._info(rel).type != pafs.FileType.NotFound

    def is_file(self, rel: str) -> bool:
        import pyarrow.fs as pafs

        return self._info(rel).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        import pyarrow.fs as pafs

        return self._info(rel).type == pafs.FileType.Directory

    def _list(self, rel: str, recursive: bool):
        import pyarrow.fs as pafs

        return self.fs.get_file_info(pafs.FileSelector(self.key(rel), allow_not_found=True, recursive=recursive))

    def is_empty(self) -> bool:
        return not self._list("", recursive=False)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.key(rel)) as fh:
            return fh.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self.key(rel)
        head, _, name = final.rpartition("/")
        tmp = f"{head}/{TMP_MARKER}{uuid.uuid4().hex[:12]}-{name}"
        try:
            with self.fs.open_output_stream(tmp) as fh:
                fh.write(data)
            self.fs.move(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.delete_file(tmp)
            raise

    def write_many(self, items: Mapping[str, bytes], threads: int = 16) -> None:
        """:meth:`write_bytes` for many small objects, overlapping the requests' latency."""
        from concurrent.futures import ThreadPoolExecutor

        if len(items) <= 1 or threads <= 1:
            for rel, data in items.items():
                self.write_bytes(rel, data)
            return
        with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="aigc-synth-put") as pool:
            for future in [pool.submit(self.write_bytes, rel, data) for rel, data in items.items()]:
                future.result()

    def read_many(self, rels: list[str], threads: int = 16) -> list[bytes]:
        from concurrent.futures import ThreadPoolExecutor

        if len(rels) <= 1:
            return [self.read_bytes(r) for r in rels]
        with ThreadPoolExecutor(max_workers=min(threads, len(rels)), thread_name_prefix="aigc-synth-get") as pool:
            return list(pool.map(self.read_bytes, rels))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def listdir(self, rel: str) -> list[str]:
        import pyarrow.fs as pafs

        return [i.base_name for i in self._list(rel, recursive=False) if i.type == pafs.FileType.File]

    def walk(self) -> list[str]:
        n = len(self.base) + 1
        return [i.path[n:] for i in self._list("", recursive=True)]

    def delete(self, rel: str) -> None:
        import pyarrow.fs as pafs

        info = self._info(rel)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.key(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.key(rel))

    def makedirs(self) -> None:
        """Nothing to do: object-store "folders" exist as soon as a key below them does."""

    def sha256(self, rel: str, chunk: int = 1 << 20) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.key(rel)) as fh:
            for block in iter(lambda: fh.read(chunk), b""):
                digest.update(block)
        return digest.hexdigest()

    def read_table(self, rel: str, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        return pq.read_table(self.key(rel), columns=columns, filesystem=self.fs)

    def read_metadata(self, rel: str):
        import pyarrow.parquet as pq

        with self.fs.open_input_file(self.key(rel)) as fh:
            return pq.read_metadata(fh)

    def check_reachable(self) -> None:
        """Fail with one line when the bucket is missing or the store cannot be reached (no writes)."""
        import pyarrow.fs as pafs

        bucket_level = isinstance(self.fs, (pafs.S3FileSystem, getattr(pafs, "GcsFileSystem", ())))
        probe = self.base.split("/")[0] if bucket_level else self.base
        try:
            if bucket_level:
                if self.fs.get_file_info(probe).type != pafs.FileType.Directory:
                    raise StorageError(f"output location {self.display}: bucket '{probe}' does not exist "
                                       "(or is not visible with these credentials); create it first")
            else:
                while probe and self.fs.get_file_info(probe).type == pafs.FileType.NotFound and "/" in probe.strip("/"):
                    probe = probe.rstrip("/").rpartition("/")[0]
                if self.fs.get_file_info(probe).type == pafs.FileType.File:
                    raise StorageError(f"output location {self.display}: {probe} is a file, not a directory")
            if self._info().type == pafs.FileType.File:
                raise StorageError(f"output location {self.display} exists and is not a directory")
        except OSError as exc:
            raise StorageError(f"cannot reach output location {self.display}: {first_line(exc)}") from None


Store = Union[LocalStore, ObjectStore]


def _nearest_existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


#: Kernel pseudo-filesystems: writable on paper (as root), never a place for a dataset.
PSEUDO_FILESYSTEMS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "securityfs", "tracefs",
                                "bpf", "configfs", "fusectl", "mqueue", "pstore", "hugetlbfs", "efivarfs", "binfmt_misc"})


def _filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (longest mount point prefix in /proc/self/mounts; None off Linux)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, fs_type = "", None
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fs_type = point, parts[2]
    return fs_type


def check_writable_directory(out: Path, name: str) -> None:
    """Refuse, before anything is written, a local directory ``out`` that cannot hold output: a file in
    its place, no permission, a read-only or kernel pseudo-filesystem. ``name`` is how messages call it
    (``output_dir``, ``--out``). Creates nothing (a probe directory is made and removed at once)."""
    if out.exists() and not out.is_dir():
        raise StorageError(f"{name} {out} exists and is not a directory")
    parent = _nearest_existing_parent(out)
    if not parent.is_dir():
        raise StorageError(f"{name} {out} is not writable: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) or os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise StorageError(f"{name} {out} is not writable (no write permission on {parent}, or a read-only filesystem)")
    fs_type = _filesystem_type(parent)
    if fs_type in PSEUDO_FILESYSTEMS:
        raise StorageError(f"{name} {out} is on {fs_type}, a kernel pseudo-filesystem ({parent}); choose a directory on a disk")
    try:  # permissions say yes; only creating something proves it (/proc and FUSE mounts lie), and removing it keeps nothing
        os.rmdir(tempfile.mkdtemp(prefix=".aigc-synth-probe-", dir=parent))
    except OSError as exc:
        raise StorageError(f"{name} {out} is not writable: {exc.strerror} ({parent})") from None


@contextlib.contextmanager
def staged_directory(out_dir: str | os.PathLike, commit_order: Sequence[str] = ()) -> Iterator[Path]:
    """For exports: yield a temporary directory beside ``out_dir``; on success its entries move into
    ``out_dir`` (same filesystem: each entry, a whole folder included, atomically), the ones named in
    ``commit_order`` last and in that order (the file whose presence means "complete"). On failure
    nothing is left behind. ``out_dir`` must be absent or empty (FileExistsError): an export never
    mixes with other files."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_MARKER}{out.name}-", dir=out.parent))
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        names = sorted(p.name for p in tmp.iterdir())
        for name in [n for n in names if n not in commit_order] + [n for n in commit_order if n in names]:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

