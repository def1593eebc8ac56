"""w2sray.store.Store against a real S3-compatible server (moto in server mode) on loopback.

The store talks to it through pyarrow's S3 filesystem exactly as it would talk to AWS S3 or
MinIO: the endpoint comes from the URI's query (``?endpoint_override=...&scheme=http``) or from
AWS_ENDPOINT_URL, the credentials from the environment (fake ones here).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from w2sray.store import DONE, Store, parquet_bytes

moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (the dev extra)")
boto3 = pytest.importorskip("boto3")

BUCKET = "w2s-bucket"
PREFIX = "sweeps/w2s"
KEY = "gt-0123456789abcdef0123"
KEY2 = "w2s-fedcba9876543210fedc"


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on 127.0.0.1 (a free port) for this module; yields its endpoint URL."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """Fake credentials, no real AWS lookups, a fresh bucket; yields a boto3 client."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    objects = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    for obj in objects:
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def uri(endpoint: str) -> str:
    return f"s3://{BUCKET}/{PREFIX}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def artifacts(tag: str = "a") -> dict[str, bytes]:
    df = pd.DataFrame({"id": [0, 1, 2], "p1": [0.1, 0.6, 0.9], "tag": [tag] * 3})
    return {
        "config.json": json.dumps({"key": KEY, "tag": tag}).encode(),
        "metrics.json": json.dumps({"acc": 0.75, "tag": tag}).encode(),
        "preds.parquet": parquet_bytes(df),
    }


def object_key(*parts: str) -> str:
    return "/".join((PREFIX, *parts))


def test_round_trip_through_s3(s3, s3_server):
    store = Store(uri(s3_server))
    assert not store.local
    assert store.root == f"{BUCKET}/{PREFIX}"
    assert not store.is_complete(KEY)
    assert store.run_keys() == []

    assert store.write_run(KEY, artifacts()) is True
    assert store.is_complete(KEY)
    assert store.read_json(KEY, "metrics.json") == {"acc": 0.75, "tag": "a"}
    assert store.read_parquet(KEY, "preds.parquet")["p1"].tolist() == [0.1, 0.6, 0.9]
    assert store.run_keys() == [KEY]

    # The objects are really in the bucket, under the prefix, DONE.json listing every file.
    body = s3.get_object(Bucket=BUCKET, Key=object_key("runs", KEY, DONE))["Body"].read()
    assert set(json.loads(body)["sha256"]) == {"config.json", "metrics.json", "preds.parquet"}

    # A complete run is kept: a second writer of the same key changes nothing.
    assert store.write_run(KEY, artifacts("b")) is False
    assert store.read_json(KEY, "metrics.json")["tag"] == "a"

    # A second Store on the same URI (as a Ray worker builds one) sees the same state.
    assert Store(uri(s3_server)).is_complete(KEY)


def test_truncated_or_uncommitted_objects_are_not_complete(s3, s3_server):
    store = Store(uri(s3_server))
    store.write_run(KEY, artifacts())
    key = object_key("runs", KEY, "preds.parquet")
    data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=data[: len(data) // 2])  # a torn upload
    assert not store.is_complete(KEY)

    # Rewriting replaces the broken copy and commits again.
    assert store.write_run(KEY, artifacts("b")) is True
    assert store.is_complete(KEY)
    assert store.read_json(KEY, "metrics.json")["tag"] == "b"

    # Artifacts without the DONE marker (a writer that died before its commit point).
    for name, blob in artifacts().items():
        s3.put_object(Bucket=BUCKET, Key=object_key("runs", KEY2, name), Body=blob)
    assert KEY2 in store.run_keys()
    assert not store.is_complete(KEY2)

    # A DONE marker whose listed file is gone.
    s3.delete_object(Bucket=BUCKET, Key=object_key("runs", KEY, "config.json"))
    assert not store.is_complete(KEY)


def test_failures_and_manifests_round_trip(s3, s3_server):
    store = Store(uri(s3_server))
    assert store.failures() == [] and store.manifests() == []
    store.record_failure(KEY, {"key": KEY, "error": "boom"})
    assert store.has_failure(KEY)
    assert store.failures() == [{"key": KEY, "error": "boom"}]
    store.write_manifest("quickstart", {"name": "quickstart", "runs": [KEY]})
    assert store.manifests() == [{"name": "quickstart", "runs": [KEY]}]

    store.write_run(KEY, artifacts())  # a later success clears the failure
    assert not store.has_failure(KEY)
    assert store.failures() == []
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert object_key("sweeps", "quickstart.json") in keys
    assert object_key("failures", f"{KEY}.json") not in keys


def test_endpoint_from_aws_endpoint_url(s3, s3_server, monkeypatch):
    """Without a query the endpoint comes from AWS_ENDPOINT_URL (read by the AWS SDK)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    store = Store(f"s3://{BUCKET}/{PREFIX}")
    assert store.write_run(KEY, artifacts()) is True
    assert Store(uri(s3_server)).is_complete(KEY)  # the same objects as through the query
    assert store.ray_storage_path() == f"s3://{BUCKET}/{PREFIX}/ray"


def test_ray_storage_path_keeps_the_endpoint(s3, s3_server):
    """Tune and Train get a URI whose query still names the endpoint, so their own pyarrow
    filesystem (built from the URI by Ray) writes to the same server."""
    store = Store(uri(s3_server))
    query = uri(s3_server).split("?", 1)[1]
    assert store.ray_storage_path() == f"s3://{BUCKET}/{PREFIX}/ray?{query}"
    assert store.ray_storage_path("train") == f"s3://{BUCKET}/{PREFIX}/ray/train?{query}"

    from ray.train._internal.storage import StorageContext as TuneStorage
    from ray.train.v2._internal.execution.storage import StorageContext as TrainStorage

    TuneStorage(store.ray_storage_path(), "sweep-gt")
    TrainStorage(store.ray_storage_path("train"), KEY)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert object_key("ray", "sweep-gt", ".validate_storage_marker") in keys
    assert object_key("ray", "train", KEY, ".validate_storage_marker") in keys


def test_claims_on_s3(s3, s3_server):
    """The claim protocol of w2sray.claims on an object store (no create-if-absent): one owner
    at a time, a race of claimants has one winner, an expired claim is taken over."""
    import time

    from test_claims import race

    from w2sray.claims import Lease, claim_or_wait

    store = Store(uri(s3_server))
    a, b = Lease(store, KEY, ttl=30, settle=0.2), Lease(store, KEY, ttl=30, settle=0.2)
    assert a.acquire()
    body = s3.get_object(Bucket=BUCKET, Key=object_key("claims", f"{KEY}.json"))["Body"].read()
    assert json.loads(body)["owner"] == a.owner  # really in the bucket
    assert not b.acquire()
    a.release()
    assert store.read_claim(KEY) is None

    leases = [Lease(store, KEY, ttl=0.5, settle=0.5) for _ in range(6)]
    won = race(leases)
    assert sum(won) == 1, won
    time.sleep(0.6)  # the winner's claim expires unrenewed: the next claimant takes it over
    lease = claim_or_wait(store, KEY, poll=0.1)
    assert lease is not None and store.read_claim(KEY)["owner"] == lease.owner
    assert not leases[won.index(True)].renew()
