"""One writer per index on a shared root: a lease object created with a conditional put.

A local `.lock` (indexes/layout.py) keeps two jobs on one machine apart; two machines writing one
`s3://` index would both pass it and race on CURRENT. Before such a job builds, it creates
`<root>/<name>/LEASE` with `If-None-Match: *` (S3's conditional write: exactly one of two racing
creates succeeds) holding who took it and until when; it deletes the object when done. A lease
past its expiry (a job killed without releasing it) is taken over. `file://` roots take a file
lock next to the index instead; filesystems with neither refuse to run unless told that only one
job writes (`index.single_writer: true`), because nothing else would keep two writers apart.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlparse

from indexes.layout import IndexLockedError, validate_index_name

LEASE_FILE = "LEASE"


@contextmanager
def remote_lease(uri: str, name: str, ttl_s: float, single_writer: bool = False) -> Iterator[None]:
    """Hold the writer lease of index `name` under the URI root `uri` for the block."""
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        with _s3_lease(uri, name, ttl_s):
            yield
    elif scheme == "file":
        from filelock import FileLock, Timeout

        path = os.path.join(urlparse(uri).path, validate_index_name(name))
        os.makedirs(path, exist_ok=True)
        lock = FileLock(os.path.join(path, ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise IndexLockedError(f"index {name!r} at {uri} is being written by another job") from None
        try:
            yield
        finally:
            lock.release()
    elif single_writer:
        yield
    else:
        raise IndexLockedError(
            f"{scheme}:// roots offer no lease here, so two jobs could race on CURRENT: use an s3:// or shared "
            "directory root, or set index.single_writer: true if only one job ever writes this index"
        )


@contextmanager
def _s3_lease(uri: str, name: str, ttl_s: float) -> Iterator[None]:
    client, bucket, key = _s3_object(uri, f"{validate_index_name(name)}/{LEASE_FILE}")
    holder = {"holder": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}", "until": time.time() + ttl_s}
    if not _create(client, bucket, key, holder):
        current = _read(client, bucket, key)
        if current is not None and current.get("until", 0) > time.time():
            raise IndexLockedError(
                f"index {name!r} at {uri.split('?')[0]} is being written by {current.get('holder')} "
                f"(lease until {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(current['until']))} UTC)"
            )
        client.delete_object(Bucket=bucket, Key=key)  # expired: its job was killed without releasing it
        if not _create(client, bucket, key, holder):
            raise IndexLockedError(f"index {name!r} at {uri.split('?')[0]} was just leased by another job")
    try:
        yield
    finally:
        if (_read(client, bucket, key) or {}).get("holder") == holder["holder"]:
            client.delete_object(Bucket=bucket, Key=key)


def _create(client, bucket: str, key: str, holder: dict) -> bool:
    """Create the lease object only if it does not exist (If-None-Match: *); False when it does."""
    from botocore.exceptions import ClientError

    try:
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode(), IfNoneMatch="*")
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return False
        raise
    return True


def _read(client, bucket: str, key: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError:
        return None
    except ValueError:
        return {}


def _s3_object(uri: str, relative: str):
    """A boto3 client for the same endpoint pyarrow uses (its URI options), the bucket and the key."""
    import boto3

    parsed = urlparse(uri)
    options = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    endpoint = options.get("endpoint_override")
    if endpoint and "://" not in endpoint:
        endpoint = f"{options.get('scheme', 'https')}://{endpoint}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name=options.get("region"))
    prefix = parsed.path.strip("/")
    return client, parsed.netloc, f"{prefix}/{relative}" if prefix else relative
