"""The `sami-rt serve` command around Ray, with a fake Ray: one line for each failure and a clean-up of only
what it started (the service itself runs on a local Ray instance in test_serve.py)."""

import os

import pytest

from sami_rt.contract.bundle import DEFAULT_MODEL

pytest.importorskip("ray")
pytest.importorskip("ray.serve")


class FakeRay:
    """What sami-rt serve uses of the ray module, recording the clean-up."""

    def __init__(self, resources):
        from types import SimpleNamespace

        self.resources, self.calls = resources, []
        self.serve = SimpleNamespace(shutdown=lambda: self.calls.append("serve.shutdown"),
                                     delete=lambda name: self.calls.append(f"serve.delete {name}"))

    def cluster_resources(self):
        return self.resources

    def shutdown(self):
        self.calls.append("ray.shutdown")


REPLICA_FAILED = """Deploying application sami-rt failed: Failed to update the deployments ['SamiRT'].
The deployment failed to start 3 times in a row. See controller logs for details. Error:
ray::ServeReplica:sami-rt:SamiRT.initialize_and_get_metadata() (pid=4242, ip=10.0.0.2)
  File "/site-packages/sami_rt/runtime.py", line 120, in __init__
    self.bundle: Bundle = read_bundle(resolve_model(model))
sami_rt.errors.BundleError: /shared/m/manifest.json is missing
"""


@pytest.mark.parametrize("started", [True, False])
@pytest.mark.parametrize("case", ["served", "replica fails", "no gpu", "too few cpus", "bad address"])
def test_serve_command_fails_in_one_line_and_cleans_up_only_what_it_started(case, started, monkeypatch):
    """Without Ray (a fake): one line for each failure, Serve shut down with our own instance only, on a
    cluster only this application deleted, and the signal handlers restored."""
    import signal

    from click.testing import CliRunner

    from sami_rt.cli import serve as cli_serve

    from sami_rt.scale import serve as serve_module
    from sami_rt.cli.main import main
    from sami_rt.errors import BackendError

    fake = FakeRay({"CPU": 2.0} if case != "too few cpus" else {"CPU": 1.0})
    started = started or case == "too few cpus"  # the CPU check is for an instance of our own only

    def connect(address, what, serve=False, **kw):
        assert serve and what == "sami-rt serve"
        if case == "bad address":
            raise BackendError(f"{what}: cannot start or reach Ray at {address} (connection refused)")
        return fake, started

    def start(app, host, port):
        if case == "replica fails":
            raise RuntimeError(REPLICA_FAILED)
        return f"http://{host}:{port}"

    def wait():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_serve, "connect", connect)
    monkeypatch.setattr(cli_serve, "_wait", wait)
    monkeypatch.setattr(serve_module, "start", start)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    args = {"no gpu": ["--device", "cuda", "--replicas", "2"], "too few cpus": ["--threads", "2"],
            "bad address": ["--address", "10.9.9.9:6379"]}.get(case, [])
    r = CliRunner().invoke(main, ["serve", "--port", "8123", *args])
    assert {s: signal.getsignal(s) for s in before} == before
    if case == "served":
        assert r.exit_code == 0 and f"serving {DEFAULT_MODEL.name} on http://127.0.0.1:8123" in r.stderr, r.stderr
    else:
        starting, error = r.stderr.splitlines(keepends=True)  # the progress line, then one line of error
        assert starting == "starting Ray and 2 replica(s)\n" if case == "no gpu" else starting.startswith("starting Ray")
        assert r.exit_code == 1 and r.stdout == "" and error.count("\n") == 1, r.stderr
        words = {"replica fails": "did not start (sami_rt.errors.BundleError: /shared/m/manifest.json is missing)",
                 "no gpu": "--device cuda needs one GPU per replica: 2 wanted, the Ray cluster has 0",
                 "too few cpus": "need 2 CPUs; this machine's Ray instance has 1",
                 "bad address": "cannot start or reach Ray at 10.9.9.9:6379"}[case]
        assert error.startswith("Error: ") and words in error, r.stderr
    deployed = case in ("served", "replica fails")
    want = [] if case == "bad address" else (["ray.shutdown"] if started else
                                             (["serve.delete sami-rt"] if deployed else []))
    assert fake.calls == want


def test_serve_gives_the_proxy_a_start_up_allowance_unless_the_environment_sets_one(monkeypatch):
    from sami_rt.scale.ray_util import SERVE_ENV_DEFAULTS, serve_env_defaults

    key = "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"
    monkeypatch.delenv(key, raising=False)
    serve_env_defaults()
    assert os.environ[key] == SERVE_ENV_DEFAULTS[key] == "30"
    monkeypatch.setenv(key, "7")
    serve_env_defaults()
    assert os.environ[key] == "7"  # the user's value stands
