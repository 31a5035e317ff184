"""A repository in S3 or any S3-compatible store: ``s3://bucket/prefix``.

- Credentials and region come from boto3's usual chain (environment, profile, instance
  role); they never appear in the URL or in messages.
- ``endpoint_url`` points at another S3-compatible service (MinIO, Ceph, moto); path-style
  addressing is used then, which all of them accept.
- Server-side encryption (``sse``, default ``AES256``; ``aws:kms`` with ``sse_kms_key_id``)
  is requested on every write, on top of the client-side encryption.
- Objects up to one part are a single PUT; larger ones a multipart upload whose part
  buffer is the only thing held in memory (parts grow every 1000 parts, capped, so the
  10 000-part limit is far away). An unfinished multipart upload is aborted; a crash
  leaves it to :meth:`S3Store.cleanup`.
- Transient errors (throttling, 5xx, dropped connections) are retried by botocore's
  ``standard`` retry mode with exponential backoff; connection failures that outlast the
  retries become :class:`StoreUnreachable`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlencode, urlsplit

import boto3
import botocore.exceptions as bexc
from botocore.config import Config

from payapi.systems.objectstore.base import Store, StoreEntry, check_key
from payapi.systems.objectstore.errors import (
    AlreadyExists,
    NotFound,
    StoreError,
    StoreFull,
    StoreUnreachable,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

MIN_PART_SIZE = 5 << 20
DEFAULT_PART_SIZE = 8 << 20
MAX_PART_SIZE = 64 << 20
PARTS_PER_STEP = 1000

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_FULL = {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "507"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}
_CONNECTION = (
    bexc.EndpointConnectionError,
    bexc.ConnectionError,
    bexc.ConnectTimeoutError,
    bexc.ReadTimeoutError,
    bexc.ConnectionClosedError,
    bexc.ResponseStreamingError,
    bexc.IncompleteReadError,
)


class _Reader(io.RawIOBase):
    """A GET response body whose botocore errors become repository errors."""

    def __init__(self, store: S3Store, key: str, body: Any) -> None:
        super().__init__()
        self._store, self._key, self._body = store, key, body

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data: bytes = self._body.read(len(b))
        except Exception as exc:
            self._store.raise_error(exc, "read", self._key)
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()


class S3Store(Store):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        sse: str | None = "AES256",
        sse_kms_key_id: str | None = None,
        region: str | None = None,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        part_size: int = DEFAULT_PART_SIZE,
        client: S3Client | None = None,
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise StoreError(f"S3 part size must be {MIN_PART_SIZE}..{MAX_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.part_size = part_size
        self._extra: dict[str, Any] = {}
        if sse:
            self._extra["ServerSideEncryption"] = sse
            if sse_kms_key_id:
                self._extra["SSEKMSKeyId"] = sse_kms_key_id
        if client is None:
            config = Config(
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                s3={"addressing_style": "path"} if endpoint_url else {},
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        self.client: S3Client = client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3Store:
        parts = urlsplit(url)
        if not parts.netloc or "@" in parts.netloc:
            raise StoreError("invalid S3 repository URL: use s3://bucket/prefix")
        return cls(parts.netloc, parts.path, **options)

    # --- helpers ---------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def raise_error(self, exc: Exception, op: str, key: str) -> NoReturn:
        """Turn a botocore exception into one repository error (never with credentials)."""
        if isinstance(exc, StoreError):
            raise exc
        if isinstance(exc, bexc.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code == "NoSuchBucket":
                raise StoreUnreachable(
                    f"repository unreachable: bucket {self.bucket} does not exist ({self.url})"
                ) from None
            if code in _NOT_FOUND or status == "404":
                raise NotFound(f"{key} not found in {self.url}") from None
            if code in _PRECONDITION or status == "412":
                raise AlreadyExists(f"{key} already exists in {self.url}") from None
            if code in _FULL or status == "507":
                raise StoreFull(f"repository full: {code} while writing {key}") from None
            if code in _DENIED or status == "403":
                raise StoreError(f"access denied to {self.url} ({code or status})") from None
            raise StoreError(f"S3 {op} of {key} in {self.url} failed: {code or status}") from None
        if isinstance(exc, bexc.NoCredentialsError):
            raise StoreUnreachable(f"repository unreachable: no S3 credentials for {self.url}")
        if isinstance(exc, _CONNECTION):
            raise StoreUnreachable(
                f"repository unreachable: {self.url}: {type(exc).__name__}"
            ) from None
        if isinstance(exc, bexc.BotoCoreError):
            raise StoreError(
                f"S3 {op} of {key} in {self.url} failed: {type(exc).__name__}"
            ) from None
        raise exc

    # --- Store -----------------------------------------------------------------------

    def put(self, key: str, blocks: Iterable[bytes], *, exclusive: bool = False) -> None:
        full = self._key(key)
        cond: dict[str, Any] = {"IfNoneMatch": "*"} if exclusive else {}
        extra = dict(self._extra)
        tags = self.tags_for(key) if self.tags_for is not None else None
        if tags:
            extra["Tagging"] = urlencode(sorted(tags.items()))
        if exclusive and self.exists(key):  # for stores that ignore If-None-Match
            raise AlreadyExists(f"{key} already exists in {self.url}")
        buf = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for block in blocks:  # errors of the source propagate unchanged
                buf += block
                size = self._part_size(len(parts))
                while len(buf) >= size:
                    if upload_id is None:
                        upload_id = self._call(
                            "write",
                            key,
                            lambda: self.client.create_multipart_upload(
                                Bucket=self.bucket, Key=full, **extra
                            )["UploadId"],
                        )
                    self._upload_part(full, key, upload_id, parts, bytes(buf[:size]))
                    del buf[:size]
                    size = self._part_size(len(parts))
            if upload_id is None:
                body = bytes(buf)
                self._call(
                    "write",
                    key,
                    lambda: self.client.put_object(
                        Bucket=self.bucket, Key=full, Body=body, **extra, **cond
                    ),
                )
                return
            if buf:
                self._upload_part(full, key, upload_id, parts, bytes(buf))
                buf.clear()
            uid = upload_id
            upload: Any = {"Parts": parts}
            self._call(
                "write",
                key,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=uid,
                    MultipartUpload=upload,
                    **cond,
                ),
            )
            upload_id = None
        finally:
            if upload_id is not None:
                self._abort(full, upload_id)

    def _part_size(self, parts_done: int) -> int:
        return min(self.part_size << (parts_done // PARTS_PER_STEP), MAX_PART_SIZE)

    def _upload_part(
        self, full: str, key: str, upload_id: str, parts: list[dict[str, Any]], body: bytes
    ) -> None:
        number = len(parts) + 1
        resp = self._call(
            "write",
            key,
            lambda: self.client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            ),
        )
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    def _abort(self, full: str, upload_id: str) -> None:
        # Best effort: cleanup() aborts whatever is left later.
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

    def _call(self, op: str, key: str, fn: Any) -> Any:
        try:
            return fn()
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            self.raise_error(exc, op, key)

    def open(self, key: str) -> BinaryIO:
        full = self._key(key)
        resp = self._call("read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=full))
        return io.BufferedReader(_Reader(self, key, resp["Body"]), buffer_size=1 << 16)

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self._call("stat", key, lambda: self.client.head_object(Bucket=self.bucket, Key=full))
        except NotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[StoreEntry]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) :]
                    yield StoreEntry(key, obj["Size"], obj["LastModified"])
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            self.raise_error(exc, "list", prefix or "/")

    def delete(self, key: str) -> None:
        full = self._key(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: Sequence[str]) -> None:
        objects: Any = [{"Key": k} for k in batch]
        resp = self._call(
            "delete",
            batch[0],
            lambda: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            ),
        )
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(
                f"S3 delete of {first.get('Key', '?')} in {self.url} failed: {first.get('Code')}"
            )

    def cleanup(self, older_than: timedelta | None = None) -> int:
        cutoff = datetime.now(UTC) - (older_than or timedelta(0))
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        self._abort(upload["Key"], upload["UploadId"])
                        aborted += 1
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            self.raise_error(exc, "list", "uploads")
        return aborted

    def close(self) -> None:
        self.client.close()
