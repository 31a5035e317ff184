"""Object stores: one interface (:mod:`.base`), one module per kind (:mod:`.file`,
:mod:`.s3`), and the factory that picks one by URL (this module).

The factory imports an implementation only when its scheme is used, so that ``wal push``
to a local repository never imports boto3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from payapi.core.redaction import redact_url
from payapi.systems.objectstore.base import Store
from payapi.systems.objectstore.errors import StoreError

__all__ = ["Store", "open_store"]


def open_store(url: str, **options: Any) -> Store:
    """The store for ``url``: ``file:///path`` (or a bare path) or ``s3://bucket/prefix``.

    ``options`` go to the implementation (for S3: ``endpoint_url``, ``sse``,
    ``max_attempts``, ...). SDKs are imported only when their scheme is used.
    """
    scheme = urlsplit(url).scheme.lower() if "://" in url else "file"
    if scheme == "file":
        from payapi.systems.objectstore.file import FileStore

        if "://" not in url:
            return FileStore(Path(url), **options)
        return FileStore.from_url(url, **options)
    if scheme == "s3":
        from payapi.systems.objectstore.s3 import S3Store

        return S3Store.from_url(url, **options)
    raise StoreError(
        f"unsupported repository URL {redact_url(url, keep_user=False)}: use file:///path or s3://bucket/prefix"
    )
