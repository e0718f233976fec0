"""One error base (sami_rt.errors.SamiError) and one Backend protocol."""

import numpy as np
import pytest

from sami_rt import errors
from sami_rt.backends import Backend
from sami_rt.sampling.loop import has_extension, run_loop


def test_every_error_of_the_project_derives_from_one_base():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) >= 9 and all(issubclass(c, errors.SamiError) for c in classes)
    # each keeps the builtin it replaced, so older `except ValueError` / `except RuntimeError` still catch it
    assert issubclass(errors.BundleError, ValueError) and issubclass(errors.SamplingError, RuntimeError)
    from export.core import ExportError
    from train.data import DataError

    assert ExportError is errors.ExportError and DataError is errors.DataError


@pytest.mark.parametrize("use_cpp", [False, True])
def test_a_non_finite_step_raises_sampling_error_by_type_from_both_loops(use_cpp, fresh_seed):
    if use_cpp and not has_extension():
        pytest.skip("the C++ extension is not built")
    rng = np.random.default_rng(fresh_seed)
    bad_step = int(rng.integers(0, 4))
    x = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)

    def backend(x, i):  # finite until bad_step, then one NaN
        eps = rng.standard_normal(x.shape).astype(np.float32)
        if i == bad_step:
            eps[1, 0, 2, 3] = np.nan
        return eps

    coeffs = {k: rng.uniform(0.5, 1.0, 4) for k in ("c_x", "c_eps", "sigma")}
    with pytest.raises(errors.SamplingError, match=f"step {bad_step} produced 1 non-finite") as info:
        run_loop(backend, x, coeffs, seed=fresh_seed, indices=np.arange(3), use_cpp=use_cpp)
    assert isinstance(info.value, errors.SamiError)
    if use_cpp:  # the extension's own registered class, a subclass of the Python one
        assert type(info.value).__module__ == "sami_rt.sampling._sampler"


def test_the_cpu_backend_is_a_backend():
    from sami_rt import Runtime

    be = Runtime(device="cpu").backend
    assert isinstance(be, Backend) and be.device == "cpu" and be.precision == "float32"
    assert isinstance(be.notes, list) and "CPUExecutionProvider" in be.name
