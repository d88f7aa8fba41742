"""The unmodified qdrant-client against a running `basalt serve`.

Usage: python client_roundtrip.py URL [API_KEY]
Exits non-zero (an assertion) on the first thing that differs from what a
Qdrant user expects. Run by tests/serve.rs with the venv of scripts/pyenv.sh.
"""

import importlib.metadata
import math
import random
import sys
import uuid
import warnings

from qdrant_client import QdrantClient, models
from qdrant_client.common.version_check import get_server_version, is_compatible
from qdrant_client.http.exceptions import UnexpectedResponse

URL = sys.argv[1]
KEY = sys.argv[2] if len(sys.argv) > 2 else None
DIM = 16
N = 600
rng = random.Random(7)


def vec():
    return [rng.uniform(-1.0, 1.0) for _ in range(DIM)]


def expect_error(status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except UnexpectedResponse as e:
        assert e.status_code == status, (e.status_code, e.content)
        body = e.structured()
        assert body["status"]["error"], body
        return body["status"]["error"]
    raise AssertionError(f"{fn.__name__} succeeded; expected {status}")


# The client's own compatibility check (it only warns, from a thread, at
# construction): a failure would mean GET / is wrong.
headers = {"api-key": KEY} if KEY else {}
server_version = get_server_version(URL + "/", headers, None, 10)
assert is_compatible(importlib.metadata.version("qdrant-client"), server_version), server_version
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
    client = QdrantClient(url=URL, api_key=KEY, timeout=60, https=False)
assert client.info().version == server_version

if KEY:
    # A wrong key is refused.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = QdrantClient(url=URL, api_key="not-the-key", https=False, check_compatibility=False)
    expect_error(401, bad.get_collections)

name = "roundtrip"
if client.collection_exists(name):
    client.delete_collection(name)
assert not client.collection_exists(name)
assert client.create_collection(
    name,
    vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
    hnsw_config=models.HnswConfigDiff(m=24, ef_construct=48),
    quantization_config=models.ProductQuantization(
        product=models.ProductQuantizationConfig(compression=models.CompressionRatio.X8)
    ),
)
assert client.collection_exists(name)
assert name in [c.name for c in client.get_collections().collections]
msg = expect_error(
    409,
    client.create_collection,
    name,
    vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
)
assert "already exists" in msg, msg

ci = client.get_collection(name)
assert ci.config.params.vectors.size == DIM, ci
assert ci.config.params.vectors.distance == models.Distance.COSINE
assert ci.config.hnsw_config.m == 24 and ci.config.hnsw_config.ef_construct == 48
assert ci.points_count == 0

# Upserts: u64 ids with payloads (PointStruct), UUID ids (Batch).
vectors = {}
points = []
for i in range(N):
    v = vec()
    vectors[i] = v
    points.append(models.PointStruct(id=i, vector=v, payload={"i": i, "even": i % 2 == 0}))
for start in range(0, N, 200):
    r = client.upsert(name, points=points[start : start + 200], wait=True)
    assert r.status == models.UpdateStatus.COMPLETED, r
uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20)]
uvecs = [vec() for _ in uuids]
for u, v in zip(uuids, uvecs):
    vectors[u] = v
client.upsert(
    name,
    points=models.Batch(ids=uuids, vectors=uvecs, payloads=[{"u": u} for u in uuids]),
    wait=True,
)
assert client.count(name, exact=True).count == N + len(uuids)
assert client.get_collection(name).points_count == N + len(uuids)


def cos(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


# Query: the point itself first, with its payload; scores are cosines.
hits = 0
for i in range(0, N, 37):
    res = client.query_points(
        name, query=vectors[i], limit=5, with_payload=True,
        search_params=models.SearchParams(hnsw_ef=64),
    ).points
    assert len(res) == 5, res
    assert res[0].payload is not None
    if res[0].id == i:
        hits += 1
        assert res[0].payload == {"i": i, "even": i % 2 == 0}, res[0]
    for p in res:
        assert abs(p.score - cos(vectors[i], vectors[p.id])) < 1e-3, (p, i)
    scores = [p.score for p in res]
    assert scores == sorted(scores, reverse=True), scores
assert hits >= 15, hits  # 17 queries; each point is its own nearest neighbour

# A UUID point is found by its vector, and its id comes back normalised.
res = client.query_points(name, query=uvecs[3], limit=1, with_payload=True).points
assert res[0].id == uuids[3], res
assert res[0].payload == {"u": uuids[3]}

# Batch queries, one result list per query, in order.
batch = client.query_batch_points(
    name,
    requests=[
        models.QueryRequest(query=vectors[10], limit=3, with_payload=False),
        models.QueryRequest(query=vectors[20], limit=2, with_payload=True),
    ],
)
assert len(batch) == 2 and len(batch[0].points) == 3 and len(batch[1].points) == 2
assert batch[0].points[0].id == 10 and batch[1].points[0].id == 20
assert batch[0].points[0].payload is None and batch[1].points[0].payload["i"] == 20

# Retrieve with vectors: cosine vectors come back normalised.
recs = client.retrieve(name, ids=[5, uuids[0], 999999], with_payload=True, with_vectors=True)
assert sorted(str(r.id) for r in recs) == sorted(["5", uuids[0]]), recs
for r in recs:
    assert abs(cos(r.vector, vectors[r.id]) - 1.0) < 1e-4

# Scroll pages through every point exactly once, in id order.
seen = []
offset = None
while True:
    page, offset = client.scroll(name, limit=64, offset=offset, with_payload=False)
    seen.extend(p.id for p in page)
    if offset is None:
        break
assert len(seen) == N + len(uuids) and len(set(map(str, seen))) == len(seen), len(seen)
assert seen[:N] == list(range(N)), seen[:5]

# Set payload merges keys; overwrite replaces.
client.set_payload(name, payload={"tag": "x"}, points=[1, 2], wait=True)
r = client.retrieve(name, ids=[1])[0]
assert r.payload == {"i": 1, "even": False, "tag": "x"}, r.payload
client.overwrite_payload(name, payload={"only": 1}, points=[2], wait=True)
assert client.retrieve(name, ids=[2])[0].payload == {"only": 1}

# Upsert replaces; delete removes; deleted points are never returned.
client.upsert(name, points=[models.PointStruct(id=3, vector=vectors[4], payload={"moved": True})])
assert client.retrieve(name, ids=[3])[0].payload == {"moved": True}
client.delete(name, points_selector=models.PointIdsList(points=[4, 5, uuids[1]]), wait=True)
assert client.count(name).count == N + len(uuids) - 3
res = client.query_points(name, query=vectors[4], limit=10).points
ids = [p.id for p in res]
assert 4 not in ids and 5 not in ids and ids[0] == 3, ids

# What basalt cannot do is a 400 naming the field, not a silent ignore.
msg = expect_error(
    400,
    client.query_points,
    name,
    query=vectors[1],
    query_filter=models.Filter(
        must=[
            models.FieldCondition(
                key="i",
                geo_radius=models.GeoRadius(center=models.GeoPoint(lat=0.0, lon=0.0), radius=1.0),
            )
        ]
    ),
)
assert "geo_radius" in msg, msg
msg = expect_error(400, client.query_points, name, query=[1.0, 2.0], limit=3)
assert "dimension" in msg, msg
expect_error(404, client.get_collection, "no-such-collection")

# A Euclid collection reports Euclidean (not squared) distances.
client.create_collection("euclid", vectors_config=models.VectorParams(size=2, distance=models.Distance.EUCLID))
client.upsert("euclid", points=[models.PointStruct(id=1, vector=[3.0, 4.0]), models.PointStruct(id=2, vector=[0.0, 1.0])])
res = client.query_points("euclid", query=[0.0, 0.0], limit=2).points
assert [p.id for p in res] == [2, 1] and abs(res[1].score - 5.0) < 1e-4, res
assert client.delete_collection("euclid")

# Snapshots: made while the collection serves, listed, deleted.
snap = client.create_snapshot(name)
assert snap.name.startswith(name + "-") and snap.size > 0, snap
assert [x.name for x in client.list_snapshots(name)] == [snap.name]
assert client.delete_snapshot(name, snap.name)
assert client.list_snapshots(name) == []

assert client.delete_collection(name)
assert not client.collection_exists(name)
print("qdrant-client round trip: ok")
