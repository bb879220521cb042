"""The production drop box: an S3 bucket and prefix, through boto3.

Claims use S3 conditional writes (2024): `PutObject(IfNoneMatch='*')` creates a ledger entry only if none
exists (412 PreconditionFailed for every other writer), `PutObject(IfMatch=etag)` replaces it only if nobody
changed it since it was read, and `DeleteObject(IfMatch=etag)` removes an incoming object only if it still
holds the claimed bytes. The endpoint comes from AWS_ENDPOINT_URL (boto3 reads it), so the same code runs
against AWS, MinIO, or moto's server in tests; credentials come from the usual AWS chain.
"""

from __future__ import annotations

import json
from pathlib import Path

from sluice.dropbox.base import DropBox, DropObject, dumps


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _precondition_failed(exc: Exception) -> bool:
    # 412 when the condition fails; 409 ConditionalRequestConflict when a concurrent conditional write won
    return _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _status(exc) in (409, 412)


def _missing(exc: Exception) -> bool:
    return _code(exc) in ("NoSuchKey", "404", "NotFound") or _status(exc) == 404


class S3DropBox(DropBox):
    def __init__(self, bucket: str, prefix: str = "", client=None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.s3 = client or boto3.client("s3")

    def _k(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list(self, prefix: str) -> list[DropObject]:
        full = self._k(prefix)
        cut = len(self.prefix) + 1 if self.prefix else 0
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for o in page.get("Contents", []):
                out.append(DropObject(o["Key"][cut:], o["ETag"].strip('"'), int(o["Size"])))
        return sorted(out, key=lambda o: o.key)

    def exists(self, key: str, etag: str | None = None) -> bool:
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return etag is None or head["ETag"].strip('"') == etag

    def upload(self, local: Path, key: str) -> None:
        self.s3.upload_file(str(local), self.bucket, self._k(key))

    def download(self, key: str, local: Path) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self.s3.download_file(self.bucket, self._k(key), str(local))

    def copy(self, src: str, dst: str, etag: str | None = None) -> None:
        from botocore.exceptions import ClientError

        extra = {"CopySourceIfMatch": f'"{etag}"'} if etag else {}
        try:
            self.s3.copy_object(Bucket=self.bucket, Key=self._k(dst),
                                CopySource={"Bucket": self.bucket, "Key": self._k(src)}, **extra)
        except ClientError as exc:
            if _missing(exc) or _precondition_failed(exc):
                raise FileNotFoundError(f"{src}: gone or no longer the claimed bytes") from exc
            raise
        # Not every S3-compatible store honours CopySourceIfMatch (moto does not): check the copy's bytes too.
        # A single-part object's ETag is its MD5 and survives a copy; a multipart one's need not, so only then
        # is the check skipped.
        if etag and "-" not in etag and not self.exists(dst, etag):
            self.s3.delete_object(Bucket=self.bucket, Key=self._k(dst))
            raise FileNotFoundError(f"{src}: no longer holds the claimed bytes")

    def delete(self, key: str, etag: str | None = None) -> bool:
        from botocore.exceptions import ClientError

        if not self.exists(key):
            return False
        extra = {"IfMatch": f'"{etag}"'} if etag else {}
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self._k(key), **extra)
        except ClientError as exc:
            if _precondition_failed(exc) or _missing(exc):
                return False
            if not (etag and _code(exc) in ("NotImplemented", "InvalidArgument")):
                raise
            # a store without conditional deletes: check, then delete (a replacement landing in between is the
            # one case left open, and needs a re-upload of the very same key within milliseconds)
            if not self.exists(key, etag):
                return False
            self.s3.delete_object(Bucket=self.bucket, Key=self._k(key))
        return True

    def put_json(self, key: str, doc: dict) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._k(key), Body=dumps(doc), ContentType="application/json")

    def create_entry(self, key: str, doc: dict) -> str | None:
        from botocore.exceptions import ClientError

        try:
            r = self.s3.put_object(Bucket=self.bucket, Key=self._k(key), Body=dumps(doc), IfNoneMatch="*",
                                   ContentType="application/json")
        except ClientError as exc:
            if _precondition_failed(exc):
                return None
            raise
        return r["ETag"]

    def replace_entry(self, key: str, doc: dict, token: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            r = self.s3.put_object(Bucket=self.bucket, Key=self._k(key), Body=dumps(doc), IfMatch=token,
                                   ContentType="application/json")
        except ClientError as exc:
            if _precondition_failed(exc) or _missing(exc):
                return None
            raise
        return r["ETag"]

    def read_entry(self, key: str) -> tuple[dict, str] | None:
        from botocore.exceptions import ClientError

        try:
            r = self.s3.get_object(Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return json.loads(r["Body"].read()), r["ETag"]

    def locate(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._k(key)}"
