"""Object stores behind one small interface: a local folder (the embedded default) or an
S3 prefix through boto3 (AWS, MinIO, Ceph, moto), with the standard credential chain and
`AWS_ENDPOINT_URL` or an explicit endpoint. Keys are always relative to the store's root."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Iterator, Protocol


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
    """A folder. ETags are weak (mtime+size, like rsync's quick check) so listing never reads data."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Like S3: every key that starts with `prefix` (a folder or any partial name)."""
        base = self.root / prefix if prefix else self.root
        if prefix and not base.is_dir():
            base = base.parent  # a partial name such as "parts/shard-00001-"
        if not base.exists():
            return
        for p in sorted(base.rglob("*")):
            if not p.is_file() or p.is_symlink() or p.name.endswith(".tmp"):
                continue
            key = p.relative_to(self.root).as_posix()
            if prefix and not key.startswith(prefix):
                continue
            st = p.stat()
            yield ObjectInfo(key=key, size=st.st_size,
                             etag=f"{st.st_mtime_ns:x}-{st.st_size:x}",
                             last_modified=datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def _path(self, key: str) -> Path:
        long = [p for p in check_key(key).split("/") if len(os.fsencode(p)) > NAME_MAX]
        if long:
            raise StoreError(f"key {key!r} has a path component longer than {NAME_MAX} bytes "
                             f"({len(os.fsencode(long[0]))}): it cannot be a local file name")
        # resolve() follows symlinks, so a symlinked folder inside the root that points
        # outside it is caught here too.
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise StoreError(f"key {key!r} escapes {self.root}")
        return path

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A short temporary name: a 255-byte file name must not fail for want of room for a suffix.
        tmp = path.with_name(f".nice-{uuid.uuid4().hex[:12]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see a partial file

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def uri_for(self, key: str) -> str:
        """The file's path; for a key that could not be a path here, a description (never
        opened) so that the key's row can still say where it came from."""
        try:
            return str(self._path(key))
        except StoreError:
            return f"{self.root}/{key}"


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
        # Retries: botocore's adaptive mode (backoff + client-side rate limiting on throttling)
        # unless AWS_RETRY_MODE / AWS_MAX_ATTEMPTS say otherwise.
        config = Config(retries={"mode": os.environ.get("AWS_RETRY_MODE", "adaptive"),
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
