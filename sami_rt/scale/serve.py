"""``sami-rt serve``: guided generation and encoding over HTTP, on Ray Serve (``pip install "sami-rt[ray]"``).

One deployment, ``SamiRT``: each replica opens one ``Runtime`` (one backend thread by default) and answers

- ``POST /generate``: a JSON object with ``guide`` (a base64 PNG or JPEG) or ``z`` (a list, [n, D] or [D]),
  ``n``, ``steps``, ``sampler``, ``eta``, ``seed``, ``scale``, ``interval``, ``mask``, ``guide_mean`` (as
  ``Runtime.generate``) and ``format`` (``png`` grid, ``npy``, ``npz`` or ``json`` arrays);
- ``POST /encode``: ``image`` (base64) or ``images`` (a list) -> posterior means and variances;
- ``GET /health`` (200 and the model's name) and ``GET /info`` (the model, its defaults, the batching).

Concurrent generate requests are gathered by ``@serve.batch`` (up to ``max_batch_size`` requests, waiting at
most ``batch_wait_s`` for more) and answered by ``sami_rt.scale.batching.generate_batch``: the requests that share a
sampler, steps, eta, guidance interval and guidance (latents, or none) run as one loop, each sample keyed by its own
request's seed, so a response equals what ``Runtime.generate`` gives for the same arguments, bit for bit on the CPU
backend with one thread (the default), within floating-point rounding otherwise. A bad request gets status 400 and
``{"error": one sentence}`` (``serve_api``: an ``InputError`` or ``ImageError``); a body above the limit
(``max_body``, 8 MiB by default) 413 before it is read, an image above 2048x2048 pixels 400 before it is
decoded; an unknown path 404, a wrong method 405; a failure of the server itself (a backend error, a sampling step producing NaN, anything
else) 500 with one sentence and a line in the replica's log, never a traceback in the response.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sami_rt.errors import ImageError, InputError, SamiError
from sami_rt.runtime import Runtime, resolve_model, shipped_models
from sami_rt.scale import serve_api
from sami_rt.scale.batching import generate_batch

log = logging.getLogger("ray.serve")
ROUTES = {"/health": "GET", "/info": "GET", "/generate": "POST", "/encode": "POST"}
APP_NAME = "sami-rt"
REQUEST_ERRORS = (InputError, ImageError)  # a request that cannot be used: status 400; other failures 500


@serve.deployment(name="SamiRT")
class SamiRT:
    def __init__(self, model=None, device: str = "cpu", threads: int = 1, max_batch_size: int = 16,
                 batch_wait_s: float = 0.01, max_n: int = serve_api.MAX_N,
                 max_body: int = serve_api.MAX_BODY_BYTES, precision: str = "auto"):
        self.rt = Runtime(model, device, threads, precision)
        # OpenVINO compiles per batch size: every size a batch of one-sample requests can have, now, so that no
        # request waits on a compile (benchmarks/RESULTS.md, issue 31's load curve)
        compiled = self.rt.warm_up(max_batch_size)
        self.max_n, self.max_body = max_n, max_body
        # one thread runs the backend: sampling and encoding take turns, the event loop stays free to queue
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="sami-rt-backend")
        self.settings = {"max_batch_size": max_batch_size, "batch_wait_s": batch_wait_s, "max_n": max_n,
                         "threads": threads, "max_body_bytes": max_body,
                         "max_image_pixels": serve_api.MAX_REQUEST_PIXELS, "compiled_at_start": compiled}
        self.batches: list[int] = []  # the number of requests in each batch run (GET /info reports the last few)
        self._generate.set_max_batch_size(max_batch_size)
        self._generate.set_batch_wait_timeout_s(batch_wait_s)

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/") or "/"
        if path not in ROUTES:
            return JSONResponse({"error": f"no such endpoint {path}; the endpoints are "
                                          f"{', '.join(f'{m} {p}' for p, m in ROUTES.items())}"}, status_code=404)
        if request.method != ROUTES[path]:
            return JSONResponse({"error": f"{path} takes {ROUTES[path]} requests, not {request.method}"},
                                status_code=405, headers={"Allow": ROUTES[path]})
        try:
            if path == "/health":
                return JSONResponse({"status": "ok", "model": self.rt.bundle.root.name})
            if path == "/info":
                info = serve_api.info(self.rt, **self.settings, recent_batches=self.batches[-20:])
                return JSONResponse(info)
            too_large = serve_api.body_too_large(request.headers.get("content-length"), self.max_body)
            if too_large:  # said before a byte of the body is read
                return JSONResponse({"error": too_large}, status_code=413)
            body = await read_body(request, self.max_body)
            if body is None:  # no Content-Length (chunked): counted as it arrives
                return JSONResponse({"error": f"the request body is larger than the server takes "
                                              f"({self.max_body / 2**20:g} MiB)"}, status_code=413)
            reply = await (self.generate(body) if path == "/generate" else self.encode(body))
        except REQUEST_ERRORS as e:  # the request's fault
            return JSONResponse(serve_api.error_body(e), status_code=400)
        except SamiError as e:  # the server's (a backend, a sampling step): its sentence, status 500
            log.warning("sami-rt: %s %s failed: %s", request.method, path, e)
            return JSONResponse(serve_api.error_body(e), status_code=500)
        except Exception as e:  # the server's own failure: one line here and in the log, no traceback out
            log.exception("sami-rt: %s %s failed", request.method, path)
            return JSONResponse({"error": f"internal error ({type(e).__name__}); see the server's log"},
                                status_code=500)
        return Response(reply.body, media_type=reply.media_type, headers=reply.headers)

    async def generate(self, body: bytes) -> serve_api.Reply:
        obj = serve_api.parse_body(body, serve_api.GENERATE_FIELDS, "generate")
        args, fmt, guide_x, notes = serve_api.generate_args(obj, self.rt, self.max_n)
        samples = await self._generate(args)
        if isinstance(samples, Exception):
            raise samples
        samples.notes[:0] = notes
        return serve_api.generate_reply(samples, fmt, guide_x)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _generate(self, requests: list[dict]) -> list:
        """A batch of generate requests (Runtime.generate keyword arguments) -> Samples, or the error of a
        request that cannot be used, in its place."""
        self.batches = self.batches[-99:] + [len(requests)]
        run = functools.partial(generate_batch, self.rt, requests, return_errors=True)
        return await asyncio.get_running_loop().run_in_executor(self.pool, run)

    async def encode(self, body: bytes) -> serve_api.Reply:
        obj = serve_api.parse_body(body, serve_api.ENCODE_FIELDS, "encode")
        x, fmt = serve_api.encode_inputs(obj, self.rt)
        mu, var = await asyncio.get_running_loop().run_in_executor(self.pool, self.rt.encode, x)
        return serve_api.encode_reply(mu, var, fmt)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as more than ``limit`` bytes have arrived (the rest unread)."""
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def model_argument(model) -> str | None:
    """What the replicas open: None (the shipped default), a shipped model's name (resolved on each node), or
    an existing bundle directory as an absolute path (on a cluster, a path every node holds). BundleError,
    one sentence, for neither."""
    if model is None:
        return None
    resolve_model(model)
    return str(model) if (not Path(model).exists() and str(model) in shipped_models()) else str(Path(model).resolve())


def build_app(model=None, device: str = "cpu", threads: int = 1, replicas: int = 1, max_batch_size: int = 16,
              batch_wait_s: float = 0.01, max_n: int = serve_api.MAX_N, max_body: int = serve_api.MAX_BODY_BYTES,
              precision: str = "auto"):
    """The application ``serve.run`` deploys: ``replicas`` copies of SamiRT, each reserving ``threads`` CPUs
    (at least one; and one GPU for ``device`` cuda or tensorrt) and taking enough requests at once to fill a
    batch."""
    resources = {"num_cpus": max(1, threads), **({"num_gpus": 1} if device in ("cuda", "tensorrt") else {})}
    return SamiRT.options(
        num_replicas=replicas, max_ongoing_requests=max(32, 4 * max_batch_size), ray_actor_options=resources,
    ).bind(model_argument(model), device, threads, max_batch_size, batch_wait_s, max_n, max_body,
           precision)


def start(app, host: str = "127.0.0.1", port: int = 8000) -> str:
    """Serve ``app`` over HTTP on host:port of the Ray cluster this process is connected to (``ray.init``
    first); returns the URL once the replicas are up."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"
