"""Object stores behind one small interface: a local folder (the embedded default) or an
S3 prefix through boto3 (AWS, MinIO, Ceph, moto), with the standard credential chain and
`AWS_ENDPOINT_URL` or an explicit endpoint. Keys are always relative to the store's root."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Iterator, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime | None = None


class StoreError(RuntimeError):
    pass


log = logging.getLogger(__name__)


def _transient(exc: BaseException) -> bool:
    """Errors worth another try: bad reads, dropped connections, throttling, 5xx."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, StoreError):
        return True  # short read or checksum mismatch: the bytes were damaged on the way
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or err.get("Code") in ("SlowDown", "Throttling", "RequestTimeout", "InternalError")
    return isinstance(exc, (BotoCoreError, ConnectionError, TimeoutError)) or type(exc).__name__ in (
        "ProtocolError", "IncompleteRead", "ReadTimeoutError")


class Store(Protocol):
    uri: str

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def uri_for(self, key: str) -> str: ...


NAME_MAX = 255  # bytes in one local path component (ext4, XFS, APFS, NTFS in UTF-16 units)


def check_key(key: str) -> str:
    """Refuse keys that would escape the store root or alias another key once written as a
    path: absolute, `..` or `.` segments, empty segments (`a//b`, trailing `/`), backslashes
    (a separator on Windows), NUL. Segments are split on `/` literally: PurePosixPath would
    silently drop `.` and empty segments, so `a/./b` and `a//b` would both land on `a/b`."""
    parts = key.split("/")
    if (not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or "\\" in key or "\x00" in key):
        raise StoreError(f"unsafe object key {key!r}")
    return key


def class_of(key: str) -> str:
    """The class folder of a `class_name/file` key ("" for files at the root)."""
    parts = PurePosixPath(key).parts
    return parts[-2] if len(parts) >= 2 else ""


def label_of(key: str, class_names: list[str] | None) -> int | None:
    """The class index of a key whose class folder the model knows, else None."""
    cls = class_of(key)
    return class_names.index(cls) if class_names and cls in class_names else None


class LocalStore:
    """A folder. ETags are weak (mtime+size, like rsync's quick check) so listing never reads data.

    Every access walks the key's folders from a descriptor of the root with `O_NOFOLLOW`
    (`openat`), so there is no check-then-use window: a symlink swapped in for a folder at any
    moment is refused (ELOOP), and a symlink at the file's own name is replaced, never followed."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Like S3: every key that starts with `prefix` (a folder or any partial name), in key
        order (as S3 lists), without following links."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / folder if folder else self.root
        if not base.is_dir() or base.is_symlink():
            return
        for key, st in _walk_sorted(base, folder):
            if key.startswith(prefix):
                yield ObjectInfo(key=key, size=st.st_size, etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
                                 last_modified=datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def _parts(self, key: str) -> list[str]:
        parts = check_key(key).split("/")
        long = [p for p in parts if len(os.fsencode(p)) > NAME_MAX]
        if long:
            raise StoreError(f"key {key!r} has a path component longer than {NAME_MAX} bytes "
                             f"({len(os.fsencode(long[0]))}): it cannot be a local file name")
        return parts

    def _open_dir(self, key: str, folders: list[str], create: bool) -> int:
        """A descriptor of the key's folder, reached one component at a time without following links."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)  # the root itself is the user's to choose
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in folders:
                if create:
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise StoreError(f"key {key!r} escapes {self.root}: {part!r} is a symlink or "
                                         "not a folder") from exc
                    raise
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def get(self, key: str) -> bytes:
        *folders, name = self._parts(key)
        dfd = self._open_dir(key, folders, create=False)
        try:
            try:  # O_NONBLOCK: a FIFO planted under the key must not hang the read
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise StoreError(f"key {key!r} is a symlink in {self.root}") from exc
                raise
        finally:
            os.close(dfd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise StoreError(f"key {key!r} is not a regular file in {self.root}")
            return f.read()

    def _write_tmp(self, dfd: int, write: Callable[[BinaryIO], None]) -> str:
        # A short temporary name: a 255-byte file name must not fail for want of room for a suffix.
        tmp = f".nice-{uuid.uuid4().hex[:12]}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
        except BaseException:
            os.unlink(tmp, dir_fd=dfd)
            raise
        return tmp

    def _put_with(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        *folders, name = self._parts(key)
        dfd = self._open_dir(key, folders, create=True)
        try:
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise StoreError(f"key {key!r} is a symlink in {self.root}: not overwritten")
            tmp = self._write_tmp(dfd, write)
            # rename replaces whatever is at `name` now (a symlink swapped in after the check
            # above included), never following it: readers never see a partial file.
            try:
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except OSError as exc:
                os.unlink(tmp, dir_fd=dfd)
                raise StoreError(f"cannot write key {key!r} in {self.root}: {exc.strerror}") from exc
        finally:
            os.close(dfd)

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self._put_with(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._put_with(key, lambda f: shutil.copyfileobj(src, f, 1 << 20))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` only if nothing is there (the O_EXCL contract, whole content at once):
        a hard link of a complete temporary file, which fails when the name exists."""
        *folders, name = self._parts(key)
        dfd = self._open_dir(key, folders, create=True)
        try:
            tmp = self._write_tmp(dfd, lambda f: f.write(data))
            try:
                os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp, dir_fd=dfd)
        finally:
            os.close(dfd)

    def delete(self, key: str) -> None:
        *folders, name = self._parts(key)
        try:
            dfd = self._open_dir(key, folders, create=False)
        except FileNotFoundError:
            return
        try:
            os.unlink(name, dir_fd=dfd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dfd)

    def exists(self, key: str) -> bool:
        *folders, name = self._parts(key)
        try:
            dfd = self._open_dir(key, folders, create=False)
        except (FileNotFoundError, StoreError):
            return False
        try:
            return stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False
        finally:
            os.close(dfd)

    def uri_for(self, key: str) -> str:
        """Where the key lives (a description, never opened: also for a key that could not be a
        path here, so that its row can still say where it came from)."""
        return f"{self.root}/{key}"


def _walk_sorted(base: Path, folder: str) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under `base` as (key, stat) in key order, links and our temporary files
    left out. A folder sorts as its name + "/" (what its keys start with), so a depth-first walk
    yields keys in plain string order: `a-b` before `a/c`, as S3 lists them."""
    entries = []
    with os.scandir(base) as it:
        for e in it:
            if e.is_symlink():
                continue
            if e.is_dir(follow_symlinks=False):
                entries.append((e.name + "/", e))
            elif e.is_file(follow_symlinks=False) and not (e.name.startswith(".nice-") and e.name.endswith(".tmp")):
                entries.append((e.name, e))
    for name, e in sorted(entries, key=lambda t: t[0]):
        key = f"{folder}/{e.name}" if folder else e.name
        if name.endswith("/"):
            yield from _walk_sorted(Path(e.path), key)
        else:
            yield key, e.stat(follow_symlinks=False)


class S3Store:
    """`s3://bucket/prefix/`. Objects appear atomically on S3, so a put is never partial."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, client=None,
                 attempts: int = 4) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}"
        self.attempts = attempts  # our own tries per object, on top of botocore's per request
        self.retries = 0  # objects read again after a damaged or failed read (for run summaries)
        # boto3 resolves credentials (env, profile, IMDS, IRSA) and AWS_ENDPOINT_URL itself.
        # Retries: botocore's standard mode (exponential backoff with jitter) unless
        # AWS_RETRY_MODE / AWS_MAX_ATTEMPTS say otherwise. Adaptive mode adds client-side rate
        # limiting after any throttling answer, which on AWS smooths a SlowDown storm but against
        # MinIO / a local endpoint only slows every request (docs/operations.md, "S3 retries").
        config = Config(retries={"mode": os.environ.get("AWS_RETRY_MODE", "standard"),
                                 "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "8"))},
                        connect_timeout=10, read_timeout=60, max_pool_connections=32)
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None, config=config)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix):]
                if not key or key.endswith("/"):
                    continue
                yield ObjectInfo(key=key, size=int(obj["Size"]), etag=obj["ETag"].strip('"'),
                                 last_modified=obj.get("LastModified"))

    def get(self, key: str) -> bytes:
        """The object's bytes, verified (length, and MD5 where the ETag is one); damaged or
        failed reads are retried with backoff, `attempts` times in all."""
        for attempt in range(1, self.attempts + 1):
            try:
                return self._get_once(key)
            except FileNotFoundError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted by _transient
                if attempt == self.attempts or not _transient(exc):
                    raise
                self.retries += 1
                log.info("retrying %s after %s (attempt %d)", key, type(exc).__name__, attempt)
                time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _get_once(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(f"{self.uri}{key}") from exc  # same contract as LocalStore
            raise
        data = resp["Body"].read()
        if "ContentLength" in resp and len(data) != int(resp["ContentLength"]):
            raise StoreError(f"{key}: short read ({len(data)} of {resp['ContentLength']} bytes)")
        etag = resp.get("ETag", "").strip('"')
        if etag and "-" not in etag and hashlib.md5(data, usedforsecurity=False).hexdigest() != etag:
            raise StoreError(f"{key}: checksum mismatch (ETag {etag})")
        return data

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + check_key(key), Body=data,
                               Metadata=metadata or {})

    def put_file(self, key: str, path: Path) -> None:
        """A large local file (multipart above botocore's threshold), never held in memory."""
        self.client.upload_file(str(path), self.bucket, self.prefix + check_key(key))

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` only if it does not exist (`If-None-Match: *`; AWS S3, MinIO, moto).
        A retried request can answer 412 for an object its first try created, so a refusal
        is checked against the bytes we sent (callers put a unique token in them)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + check_key(key), Body=data,
                                   IfNoneMatch="*")
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
        try:
            return self._get_once(key) == data
        except FileNotFoundError:  # 409: a concurrent create that has not landed yet
            return False

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + check_key(key))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


def open_store(uri: str | Path, endpoint_url: str | None = None) -> Store:
    """`s3://bucket/prefix/` or a local folder path (optionally `file://`)."""
    text = str(uri)
    if text.startswith("s3://"):
        rest = text[5:]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {text!r}")
        return S3Store(bucket, prefix, endpoint_url)
    if text.startswith("file://"):
        text = text[7:]
    return LocalStore(text)
