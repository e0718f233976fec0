"""sami-rt serve on a local Ray instance (two CPUs, HTTP on 127.0.0.1 only): concurrent requests batched,
each response equal to Runtime.generate; 4xx with one sentence for bad requests; health and info."""

import base64
import io
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.serve")

from sami_rt.runtime import DEFAULT_MODEL, SAMPLERS, Runtime  # noqa: E402
from tests.helpers import EXAMPLES  # noqa: E402

TIMEOUT = 60  # seconds, every request
STARTUP = 240  # seconds for the replica to start (a busy 2-core machine); a replica that never does fails the test


def free_port(r: np.random.Generator) -> int:
    """A port that is free now, outside Linux's ephemeral range (32768-60999), where the OS hands out the
    ports other processes' connections take."""
    for _ in range(50):
        port = int(r.integers(20000, 32000))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


def bounded(fn, seconds: float, what: str):
    """fn() in a daemon thread: its result, its error, or a failed test after ``seconds`` (Ray waits without
    end for a replica that cannot be placed; the daemon thread dies with Ray's shutdown)."""
    done, box = threading.Event(), {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 -- handed back to the caller
            box["error"] = e
        done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(seconds):
        pytest.fail(f"{what} did not finish within {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def wait_healthy(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=10) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url}/health did not answer within {seconds} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def url():
    import ray
    from ray import serve

    from sami_rt.scale.ray_util import serve_env_defaults
    from sami_rt.scale.serve import build_app, start

    serve_env_defaults()  # the proxy's start-up allowance of `sami-rt serve` (slow on busy cores)
    # a new instance for these tests alone, never a cluster that `ray start` left running on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=200 * 2**20)  # responses go through HTTP, not the object store
    try:
        r = np.random.default_rng()
        for attempt in range(3):  # a port taken between the check and Serve's bind: another port
            try:
                where = bounded(lambda: start(build_app(threads=1, max_batch_size=16, batch_wait_s=0.05),
                                              "127.0.0.1", free_port(r)), STARTUP, "serve.run")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                serve.shutdown()
        wait_healthy(where, STARTUP)
        yield where
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

    from sami_rt.media.grids import auto_zoom, grid_shape

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
        # values that once overflowed or were cast in silence (a 500, or a wrong answer)
        ("/generate", {"mask": [10**30], "n": 1}, 400, "mask dimensions must be in"),
        ("/generate", {"z": r.standard_normal(D).tolist(), "mask": [2**64 - 1]}, 400, "mask dimensions must be in"),
        ("/generate", {"z": [str(v) for v in r.standard_normal(D)]}, 400, "z must hold numbers only"),
        ("/generate", {"z": [True] * D}, 400, "z must hold numbers only"),
        ("/generate", {"z": [[0.5] * D, [None] * D], "n": 2}, 400, "z must hold numbers only"),
        ("/generate", {"z": [10**400] * D}, 400, "z must be a list of numbers"),
        ("/generate", {"z": r.standard_normal(D).tolist(), "scale": 1e308}, 400, "float32"),
        ("/generate", {"sampler": "ddim", "eta": 10**400}, 400, "eta must be a finite number"),
        ("/generate", {"seed": 2**64}, 400, "seed must be an integer from 0 to 2**64 - 1"),
    ]
    for path, obj, code, words in cases:
        status, _, data = call(url, path, obj)
        msg = json.loads(data)["error"]
        assert status == code and words in msg and "\n" not in msg and "Traceback" not in msg, (path, obj, msg)
    status, _, data = call(url, "/generate", raw=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]
    for deep in (b"[" * 100000, b'{"z": ' + b"[" * 100000):  # json.loads: RecursionError
        status, _, data = call(url, "/generate", raw=deep)
        assert status == 400 and "nested too deeply" in json.loads(data)["error"], data[:200]
    status, _, data = call(url, "/generate", method="GET")
    assert status == 405


def test_health_and_info(url, rt1):
    status, _, data = call(url, "/health")
    assert status == 200 and json.loads(data) == {"status": "ok", "model": DEFAULT_MODEL.name}
    status, _, data = call(url, "/info")
    info = json.loads(data)
    assert status == 200 and info["latent_dim"] == rt1.latent_dim and info["max_batch_size"] == 16
    assert info["compiled_at_start"] == 0  # onnxruntime compiles nothing per batch size (OpenVINO: its ladder)


def test_seeds_above_int64_over_http_equal_runtime_generate(url, rt1, fresh_seed):
    z = np.random.default_rng(fresh_seed).standard_normal((2, rt1.latent_dim)).astype(np.float32)
    cases = [{"n": 2, "steps": 2, "seed": 2**64 - 1, "z": z.tolist(), "format": "npz"},
             {"n": 2, "steps": 2, "seed": 2**63, "format": "json"}]
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda body: call(url, "/generate", body), cases))
    for body, (status, _, data) in zip(cases, replies):
        assert status == 200, data[:300]
        args = {k: body[k] for k in ("n", "steps", "seed")}
        want = rt1.generate(**args, z=z if "z" in body else None)
        assert np.array_equal(images_of(body["format"], data), want.x)
    assert int(np.load(io.BytesIO(replies[0][2]))["seed"]) == 2**64 - 1
    assert json.loads(replies[1][2])["seed"] == 2**63


@pytest.mark.parametrize("error,status", [("InputError", 400), ("ImageError", 400), ("BackendError", 500),
                                          ("SamplingError", 500), ("ZeroDivisionError", 500)])
def test_only_the_requests_own_errors_are_400(error, status):
    """The replica's routing alone (no Ray): a request that cannot be used is 400, a failure of the server
    (a backend, a sampling step, a bug) 500; one sentence either way."""
    import asyncio

    from starlette.requests import Request

    from sami_rt import errors
    from sami_rt.scale.serve import SamiRT

    exc = getattr(errors, error, None) or ZeroDivisionError
    replica = SamiRT.func_or_class.__new__(SamiRT.func_or_class)
    replica.max_body = 1 << 20

    async def encode(body):
        raise exc("the words of the error\nand no more")

    replica.encode = encode

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/encode", "headers": [], "query_string": b"",
             "scheme": "http", "server": ("127.0.0.1", 8000), "root_path": ""}
    reply = asyncio.run(replica(Request(scope, receive)))
    msg = json.loads(reply.body)["error"]
    assert reply.status_code == status and "\n" not in msg
    assert msg == ("the words of the error" if error != "ZeroDivisionError" else
                   "internal error (ZeroDivisionError); see the server's log")


def test_an_oversized_body_is_refused_before_it_is_read(url):
    """Content-Length above the limit: 413 and one sentence while the client has sent 1 KiB of a declared
    20 MiB (a server that read the body first would wait for the rest until the socket timed out)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (20 << 20) + b"{" + b" " * 1023)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"content-length: (\d+)", reply, re.I).group(1)):
            chunk = sock.recv(65536)
            assert chunk, reply
            reply += chunk
    head, body = reply.decode("latin-1").split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 413"), head[:200]
    msg = json.loads(body)["error"]
    assert msg == "the request body is 20.0 MiB; the server takes at most 8 MiB", msg


def test_a_huge_image_is_refused_before_decoding(url, rt1, fresh_seed):
    """A 4000x4000 PNG (2 MB: noise of two levels) fits the body limit but not the image limit: 400, one
    sentence, from its header."""
    import cv2

    r = np.random.default_rng(fresh_seed)
    ok, png = cv2.imencode(".png", (r.integers(0, 2, (4000, 4000)) * 255).astype(np.uint8))
    assert ok and len(png) < (8 << 20)
    status, _, data = call(url, "/generate", {"guide": base64.b64encode(png.tobytes()).decode(), "n": 1})
    msg = json.loads(data)["error"]
    assert status == 400 and "4000x4000 pixels" in msg and "at most 2048x2048" in msg, msg


def test_a_chunked_body_over_the_limit_stops_being_read():
    """No Content-Length (chunked): the replica counts the body as it arrives and answers 413 once it passes
    the limit, leaving the rest unread (the routing alone, no Ray)."""
    import asyncio

    from starlette.requests import Request

    from sami_rt.scale.serve import SamiRT

    replica = SamiRT.func_or_class.__new__(SamiRT.func_or_class)
    replica.max_body = 1 << 20
    sent = []

    async def receive():
        sent.append(1)
        return {"type": "http.request", "body": b" " * (64 << 10), "more_body": len(sent) < 1000}

    scope = {"type": "http", "method": "POST", "path": "/generate", "headers": [], "query_string": b"",
             "scheme": "http", "server": ("127.0.0.1", 8000), "root_path": ""}
    reply = asyncio.run(replica(Request(scope, receive)))
    assert reply.status_code == 413 and "larger than the server takes (1 MiB)" in json.loads(reply.body)["error"]
    assert len(sent) == 17  # 16 chunks of 64 KiB fill the limit; the 17th passes it; 983 never read
