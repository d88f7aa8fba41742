"""basalt's filters against qdrant-client's local mode, which evaluates every
filter by brute force: the same seeded points (nested objects, arrays, nulls,
empty arrays, missing keys, date-times, integer and UUID ids) go into both;
every condition of Qdrant's filter language that basalt supports is asked of
both, with `params.exact` (basalt's exact path must equal the oracle id for
id), with the planner (min(k, matches) results, all of them matches), in
count, scroll and delete by filter; payload indexes are made for some fields
half-way, so both the index and the payload paths answer.

Usage: python filter_oracle.py URL
Run by tests/filters.rs with the venv of scripts/pyenv.sh.
"""

import random
import sys
import uuid

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

URL = sys.argv[1]
DIM = 8
N = 1500
K = 10
rng = random.Random(11)
NAME = "oracle"

KEYWORDS = ["red", "green", "blue", "cyan", "magenta", "black"]


def payload(i):
    # A skewed keyword (Zipf-like), an integer, a float, a bool, a date, an
    # array of keywords, a nested object, an array of objects; some keys are
    # null, [] or missing.
    kw = KEYWORDS[min(int(rng.paretovariate(1.2)) - 1, len(KEYWORDS) - 1)]
    p = {
        "kw": kw,
        "n": i,
        "price": round(rng.uniform(0, 100), 2),
        "flag": rng.random() < 0.3,
        "day": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        "tags": rng.sample(KEYWORDS, rng.randint(0, 3)),
        "shop": {"city": rng.choice(["oslo", "lima", "pune"]), "rank": rng.randint(0, 4)},
        "items": [{"sku": rng.choice(["a", "b", "c"]), "qty": rng.randint(0, 5)} for _ in range(rng.randint(0, 3))],
    }
    r = i % 11
    if r == 0:
        p["maybe"] = None
    elif r == 1:
        p["maybe"] = []
    elif r == 2:
        p["maybe"] = [1, None]
    elif r == 3:
        p["maybe"] = [1, 2, 3]
    elif r == 4:
        p["maybe"] = "x"
    if i % 7 == 0:
        del p["shop"]
    if i % 5 == 0:
        p["price"] = int(p["price"])
    return p


def point_id(i):
    # Most ids are integers; every 10th is a UUID.
    return str(uuid.UUID(int=rng.getrandbits(128))) if i % 10 == 9 else i


points = [models.PointStruct(id=point_id(i), vector=[rng.gauss(0, 1) for _ in range(DIM)], payload=payload(i)) for i in range(N)]
queries = [[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(8)]
one_id = points[123].id
k_ids = [p.id for p in points[200:210]]

client = QdrantClient(url=URL, timeout=120, https=False)
oracle = QdrantClient(":memory:")
for c in (client, oracle):
    c.create_collection(NAME, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID))
for lo in range(0, N, 250):
    for c in (client, oracle):
        c.upsert(NAME, points=points[lo : lo + 250], wait=True)

F = models.FieldCondition
M = models.MatchValue


def filters():
    return {
        "match keyword": models.Filter(must=[F(key="kw", match=M(value="blue"))]),
        "match integer": models.Filter(must=[F(key="n", match=M(value=77))]),
        "match bool": models.Filter(must=[F(key="flag", match=M(value=True))]),
        "match any": models.Filter(must=[F(key="kw", match=models.MatchAny(any=["cyan", "black"]))]),
        "match any int": models.Filter(must=[F(key="n", match=models.MatchAny(any=[1, 2, 3, 500, 1499]))]),
        "match except": models.Filter(must=[F(key="kw", match=models.MatchExcept(**{"except": ["red", "green"]}))]),
        "array element": models.Filter(must=[F(key="tags", match=M(value="magenta"))]),
        "nested key": models.Filter(must=[F(key="shop.city", match=M(value="lima"))]),
        "array of objects": models.Filter(must=[F(key="items[].sku", match=M(value="c"))]),
        "range float": models.Filter(must=[F(key="price", range=models.Range(gte=20.5, lt=31))]),
        "range int": models.Filter(must=[F(key="n", range=models.Range(gt=100, lte=140))]),
        "range nested": models.Filter(must=[F(key="items[].qty", range=models.Range(gte=5))]),
        "datetime range": models.Filter(must=[F(key="day", range=models.DatetimeRange(gte="2024-03-01T00:00:00Z", lt="2024-03-10"))]),
        "is_empty": models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="maybe"))]),
        "is_null": models.Filter(must=[models.IsNullCondition(is_null=models.PayloadField(key="maybe"))]),
        "is_empty nested": models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="shop.city"))]),
        "values_count": models.Filter(must=[F(key="tags", values_count=models.ValuesCount(gte=2))]),
        "values_count lt": models.Filter(must=[F(key="items", values_count=models.ValuesCount(lt=1))]),
        "has_id": models.Filter(must=[models.HasIdCondition(has_id=[p.id for p in points[10:40:3]])]),
        "should": models.Filter(should=[F(key="kw", match=M(value="magenta")), F(key="shop.rank", match=M(value=4))]),
        "must_not": models.Filter(must_not=[F(key="kw", match=M(value="red")), F(key="flag", match=M(value=True))]),
        "nested filters": models.Filter(
            must=[
                models.Filter(should=[F(key="kw", match=M(value="green")), F(key="tags", match=M(value="green"))]),
                models.Filter(must_not=[F(key="price", range=models.Range(lt=50))]),
            ]
        ),
        "nested condition": models.Filter(
            must=[
                models.NestedCondition(
                    nested=models.Nested(
                        key="items",
                        filter=models.Filter(must=[F(key="sku", match=M(value="a")), F(key="qty", range=models.Range(gte=4))]),
                    )
                )
            ]
        ),
        "min_should": models.Filter(
            min_should=models.MinShould(
                conditions=[F(key="kw", match=M(value="blue")), F(key="flag", match=M(value=True)), F(key="shop.rank", match=M(value=0))],
                min_count=2,
            )
        ),
        "nothing": models.Filter(must=[F(key="kw", match=M(value="no-such-colour"))]),
        "everything": models.Filter(must_not=[F(key="kw", match=M(value="no-such-colour"))]),
        "one point": models.Filter(must=[models.HasIdCondition(has_id=[one_id])]),
        "exactly k": models.Filter(must=[models.HasIdCondition(has_id=k_ids)]),
        "empty should": models.Filter(should=[]),
    }


def ids(res):
    return [p.id for p in res]


def all_ids(c, f):
    out, offset = [], None
    while True:
        pts, offset = c.scroll(NAME, scroll_filter=f, limit=97, offset=offset)
        out += [p.id for p in pts]
        if offset is None:
            return out


def check(phase):
    checked = 0
    for name, f in filters().items():
        want_all = all_ids(oracle, f)
        got_all = all_ids(client, f)
        assert sorted(map(str, got_all)) == sorted(map(str, want_all)), (phase, name, "scroll", len(got_all), len(want_all))
        n_want = oracle.count(NAME, count_filter=f, exact=True).count
        n_got = client.count(NAME, count_filter=f, exact=True).count
        assert n_got == n_want == len(want_all), (phase, name, "count", n_got, n_want)
        matches = set(map(str, want_all))
        for q in queries:
            want = ids(oracle.query_points(NAME, query=q, query_filter=f, limit=K).points)
            got = ids(client.query_points(NAME, query=q, query_filter=f, limit=K, search_params=models.SearchParams(exact=True)).points)
            assert got == want, (phase, name, "exact", got, want)
            auto = ids(client.query_points(NAME, query=q, query_filter=f, limit=K, search_params=models.SearchParams(hnsw_ef=64)).points)
            assert len(auto) == min(K, len(matches)), (phase, name, "planner", len(auto), len(matches))
            assert all(str(i) in matches for i in auto), (phase, name, "planner returned a non-match")
            checked += 1
    print(f"{phase}: {checked} filtered queries equal the oracle", flush=True)


def wait_green():
    import time

    for _ in range(600):
        if client.get_collection(NAME).status == models.CollectionStatus.GREEN:
            return
        time.sleep(0.1)
    raise AssertionError("the collection did not settle")


wait_green()
check("payloads")
# Payload indexes on some fields (others stay unindexed): same answers.
for field, schema in [
    ("kw", models.PayloadSchemaType.KEYWORD),
    ("n", models.PayloadSchemaType.INTEGER),
    ("price", models.PayloadSchemaType.FLOAT),
    ("flag", models.PayloadSchemaType.BOOL),
    ("day", models.PayloadSchemaType.DATETIME),
    ("tags", models.PayloadSchemaType.KEYWORD),
    ("shop.city", models.PayloadSchemaType.KEYWORD),
]:
    client.create_payload_index(NAME, field_name=field, field_schema=schema, wait=True)
info = client.get_collection(NAME)
assert set(info.payload_schema) == {"kw", "n", "price", "flag", "day", "tags", "shop.city"}, info.payload_schema
assert info.payload_schema["kw"].points == N, info.payload_schema["kw"]
check("indexes")

# Writes after the indexes: replacements, deletes and new points; the
# indexes follow them (through the delta and the merges).
more = [models.PointStruct(id=N + i, vector=[rng.gauss(0, 1) for _ in range(DIM)], payload=payload(N + i)) for i in range(300)]
repl = [models.PointStruct(id=p.id, vector=p.vector, payload=payload(rng.randint(0, N))) for p in points[::13]]
for c in (client, oracle):
    c.upsert(NAME, points=more, wait=True)
    c.upsert(NAME, points=repl, wait=True)
    c.delete(NAME, points_selector=models.PointIdsList(points=[p.id for p in points[5::17]]), wait=True)
check("after writes")
wait_green()
check("after the merge")

# Delete by filter.
gone = models.Filter(must=[F(key="kw", match=M(value="cyan"))])
for c in (client, oracle):
    c.delete(NAME, points_selector=models.FilterSelector(filter=gone), wait=True)
assert client.count(NAME, count_filter=gone).count == 0
assert client.count(NAME).count == oracle.count(NAME).count
check("after delete by filter")

# What basalt does not support is a 400 naming it.
try:
    client.query_points(NAME, query=queries[0], query_filter=models.Filter(must=[F(key="kw", match=models.MatchText(text="x"))]))
    raise AssertionError("a text match was accepted")
except UnexpectedResponse as e:
    assert e.status_code == 400 and "match.text" in str(e.content), e.content
print("filter oracle: ok")
