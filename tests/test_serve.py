"""sami-rt serve on a local Ray instance (two CPUs, HTTP on 127.0.0.1 only): concurrent requests batched,
each response equal to Runtime.generate; 4xx with one sentence for bad requests; health and info."""

import base64
import io
import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.serve")

from sami_rt.runtime import SAMPLERS, Runtime  # noqa: E402
from tests.helpers import EXAMPLES  # noqa: E402

TIMEOUT = 60  # seconds, every request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    import ray
    from ray import serve

    from sami_rt.serve import build_app, start

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=200 * 2**20)  # responses pass through HTTP, not the object store
    try:
        yield start(build_app(threads=1, max_batch_size=16, batch_wait_s=0.05), "127.0.0.1", free_port())
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def rt1():
    return Runtime(device="cpu", threads=1)  # what each replica opens


def call(url, path, obj=None, raw: bytes | None = None, method=None):
    """(status, headers, body) of one request, bounded by TIMEOUT."""
    data = raw if raw is not None else (None if obj is None else json.dumps(obj).encode())
    req = urllib.request.Request(url + path, data=data, method=method or ("GET" if data is None else "POST"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def random_case(r, D, pictures):
    """(the JSON body, Runtime.generate's arguments) of a random request."""
    n, sampler = int(r.integers(1, 4)), str(r.choice(SAMPLERS))
    body = {"n": n, "sampler": sampler, "steps": int(r.integers(2, 4)), "seed": int(r.integers(0, 2**63)),
            "format": str(r.choice(["npy", "json", "npz"]))}
    args = {k: body[k] for k in ("n", "sampler", "steps", "seed")}
    kind = r.integers(3)
    if kind == 0:
        path = pictures[int(r.integers(len(pictures)))]
        body["guide"], args["guide"] = b64(path), str(path)
        if r.integers(2):
            body["guide_mean"] = args["guide_mean"] = True
    elif kind == 1:
        z = r.standard_normal((n, D)).astype(np.float32)
        body["z"], args["z"] = z.tolist(), z
    if kind < 2 and r.integers(2):
        body["scale"] = args["scale"] = float(r.uniform(0.5, 3))
    if kind < 2 and r.integers(3) == 0:
        dims = sorted(r.choice(D, 2, replace=False).tolist())
        body["mask"], args["mask"] = dims, dims
    return body, args


def images_of(fmt, body: bytes) -> np.ndarray:
    if fmt == "json":
        return np.asarray(json.loads(body)["x"], dtype=np.float32)
    if fmt == "npz":
        return np.load(io.BytesIO(body))["x"]
    return np.load(io.BytesIO(body), allow_pickle=False)


def test_concurrent_requests_are_batched_and_each_equals_runtime_generate(url, rt1, tmp_path, fresh_seed):
    import cv2

    r = np.random.default_rng(fresh_seed)
    pictures = [EXAMPLES / "guide.png"]
    for k in range(2):  # pictures of other sizes and colours, through the model's preprocessing
        p = tmp_path / f"p{k}.png"
        cv2.imwrite(str(p), r.integers(0, 256, (int(r.integers(20, 60)), int(r.integers(20, 60)), 3), dtype=np.uint8))
        pictures.append(p)
    cases = [random_case(r, rt1.latent_dim, pictures) for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda c: call(url, "/generate", c[0]), cases))
    for (body, args), (status, headers, data) in zip(cases, replies):
        assert status == 200, data[:300]
        want = rt1.generate(**args)
        got = images_of(body["format"], data)
        assert got.dtype == np.float32 and np.array_equal(got, want.x), (body["format"], args["sampler"])
    status, _, data = call(url, "/info")
    assert status == 200 and max(json.loads(data)["recent_batches"]) > 1  # some requests did share a batch


def test_a_png_grid_shows_the_guide_and_the_samples(url, rt1, fresh_seed):
    import cv2

    from sami_rt.grids import auto_zoom, grid_shape

    n, seed = 3, int(np.random.default_rng(fresh_seed).integers(2**63))
    status, headers, data = call(url, "/generate", {"guide": b64(EXAMPLES / "guide.png"), "n": n, "steps": 2,
                                                    "seed": seed})
    assert status == 200 and headers["content-type"] == "image/png"
    grid = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert grid.shape[:2] == grid_shape(n + 1, (32, 32), 8, auto_zoom(32, 32), ["guide"] + [""] * n)


def test_encode_equals_runtime_encode(url, rt1):
    paths = [EXAMPLES / "guide.png", EXAMPLES / "guide_light.png"]
    status, _, data = call(url, "/encode", {"images": [b64(p) for p in paths]})
    assert status == 200
    got = json.loads(data)
    mu, var = rt1.encode([str(p) for p in paths])
    assert np.array_equal(np.asarray(got["mu"], np.float32), mu) and np.array_equal(np.asarray(got["var"], np.float32), var)


def test_bad_requests_get_a_4xx_with_one_sentence(url, rt1, fresh_seed):
    r = np.random.default_rng(fresh_seed)
    D = rt1.latent_dim
    cases = [
        ("/generate", {"guide": "not base64 at all!", "n": 1}, 400, "base64"),
        ("/generate", {"guide": base64.b64encode(r.bytes(64)).decode()}, 400, "not an image"),
        ("/generate", {"n": 0}, 400, "n must be a positive number"),
        ("/generate", {"sampler": "euler"}, 400, "unknown sampler"),
        ("/generate", {"z": r.standard_normal(D + 1).tolist(), "n": 1}, 400, "z must have shape"),
        ("/generate", {"n": 1, "seeds": 4}, 400, "unknown field 'seeds'"),
        ("/generate", {"n": 1, "format": "gif"}, 400, "format must be one of"),
        ("/encode", {"image": 12}, 400, "base64 string"),
        ("/nowhere", {"n": 1}, 404, "no such endpoint"),
    ]
    for path, obj, code, words in cases:
        status, _, data = call(url, path, obj)
        msg = json.loads(data)["error"]
        assert status == code and words in msg and "\n" not in msg and "Traceback" not in msg, (path, obj, msg)
    status, _, data = call(url, "/generate", raw=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    status, _, data = call(url, "/generate", method="GET")
    assert status == 405


def test_health_and_info(url, rt1):
    status, _, data = call(url, "/health")
    assert status == 200 and json.loads(data) == {"status": "ok", "model": "disks-small"}
    status, _, data = call(url, "/info")
    info = json.loads(data)
    assert status == 200 and info["latent_dim"] == rt1.latent_dim and info["max_batch_size"] == 16
