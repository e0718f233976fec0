// sami_rt.sampling._sampler: the sampling loop of sami-rt in C++ (DDPM / DDIM, DPM-Solver++(2M) and its SDE form).
//
//   from sami_rt.sampling import _sampler
//   steps_done = _sampler.sample_loop(backend, x, c_x, c_eps, sigma, seeds, indices, progress, cancel,
//                                     c_x_prev, c_eps_prev)
//
// `backend(x, i)` returns eps_hat for the current x at step i (one call per step: the backend owns the
// model, its device buffers and the timestep table). The loop updates x in place,
//   x <- float(c_x[i] * x + c_eps[i] * eps_hat + c_x_prev[i] * x_prev + c_eps_prev[i] * eps_prev
//              + sigma[i] * noise(seeds[b], indices[b], i, j)),
// in double precision per element, x_prev and eps_prev the previous step's x and eps_hat kept in float
// buffers of the loop's own (only when some c_x_prev or c_eps_prev is not zero; None means zeros, and a
// step whose two are zero adds nothing), noise from Philox keyed by (the row's seed, sample index, step)
// (`seeds`: uint64, one per row, or one for every row), with the GIL
// released for its own arithmetic. `progress(done, total)` is called after each step; `cancel()` returning
// true stops the loop before the next step. sami_rt/sampling/loop.py holds the numpy twin of this loop.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "philox.h"

namespace py = pybind11;

namespace {

// A step that produced NaN or infinity (bound to sami_rt.errors.SamplingError in PYBIND11_MODULE).
struct NonFinite : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using FloatArray = py::array_t<float, py::array::c_style>;
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using IndexArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using SeedArray = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>;

// One update over the whole batch; returns the number of non-finite results. `xprev` and `eprev` (null for a
// one-step sampler) hold the previous step's x and eps_hat on entry and this step's on return.
int64_t update(float* x, const float* eps, float* xprev, float* eprev, int64_t batch, int64_t per_sample,
               double cx, double ce, double cxp, double cep, double sigma, const uint64_t* seeds, bool seed_per_row,
               const int64_t* indices, uint32_t step) {
  int64_t bad = 0;
  float noise[4];
  const bool use_prev = xprev && (cxp != 0.0 || cep != 0.0);
  for (int64_t b = 0; b < batch; ++b) {
    float* xb = x + b * per_sample;
    const float* eb = eps + b * per_sample;
    float* xpb = xprev ? xprev + b * per_sample : nullptr;
    float* epb = eprev ? eprev + b * per_sample : nullptr;
    const uint32_t index = static_cast<uint32_t>(indices[b]);
    const uint64_t seed = seeds[seed_per_row ? b : 0];
    for (int64_t j = 0; j < per_sample; ++j) {
      double v = cx * static_cast<double>(xb[j]) + ce * static_cast<double>(eb[j]);
      if (use_prev) v += cxp * static_cast<double>(xpb[j]) + cep * static_cast<double>(epb[j]);
      if (sigma > 0.0) {
        if ((j & 3) == 0) sami::normal_block(seed, index, step, static_cast<uint32_t>(j >> 2), noise);
        v += sigma * static_cast<double>(noise[j & 3]);
      }
      if (xpb) {
        xpb[j] = xb[j];
        epb[j] = eb[j];
      }
      const float f = static_cast<float>(v);
      bad += !std::isfinite(f);
      xb[j] = f;
    }
  }
  return bad;
}

// An optional per-step coefficient array: None is all zeros.
std::vector<double> optional_coefficients(const py::object& arr, int64_t steps, const char* name) {
  std::vector<double> out(static_cast<size_t>(steps), 0.0);
  if (arr.is_none()) return out;
  auto a = DoubleArray::ensure(arr);
  if (!a || a.size() != steps)
    throw std::invalid_argument(std::string(name) + " must have one entry per step");
  for (int64_t i = 0; i < steps; ++i) out[static_cast<size_t>(i)] = a.data()[i];
  return out;
}

int64_t sample_loop(py::object backend, FloatArray x, DoubleArray c_x, DoubleArray c_eps, DoubleArray sigma,
                    SeedArray seeds, IndexArray indices, py::object progress, py::object cancel, py::object c_x_prev,
                    py::object c_eps_prev) {
  if (x.ndim() < 1) throw std::invalid_argument("x must have a batch axis");
  const int64_t steps = c_x.size();
  if (c_eps.size() != steps || sigma.size() != steps)
    throw std::invalid_argument("c_x, c_eps and sigma must have one entry per step");
  const std::vector<double> cxp = optional_coefficients(c_x_prev, steps, "c_x_prev");
  const std::vector<double> cep = optional_coefficients(c_eps_prev, steps, "c_eps_prev");
  bool multistep = false;
  for (int64_t i = 0; i < steps; ++i) multistep = multistep || cxp[i] != 0.0 || cep[i] != 0.0;
  const int64_t batch = x.shape(0);
  if (indices.size() != batch) throw std::invalid_argument("indices must have one entry per sample");
  if (seeds.size() != batch && seeds.size() != 1)
    throw std::invalid_argument("seeds must have one entry per sample, or one for all");
  const bool seed_per_row = seeds.size() != 1;
  const uint64_t* sd = seeds.data();
  const int64_t per_sample = batch ? x.size() / batch : 0;
  float* xp = x.mutable_data();
  const double *cx = c_x.data(), *ce = c_eps.data(), *sg = sigma.data();
  const int64_t* idx = indices.data();
  // the previous step's x and eps_hat (the backend may reuse its output buffer, so eps_hat is copied)
  std::vector<float> x_prev(multistep ? static_cast<size_t>(x.size()) : 0, 0.0f);
  std::vector<float> eps_prev(x_prev.size(), 0.0f);
  float* xprev = multistep ? x_prev.data() : nullptr;
  float* eprev = multistep ? eps_prev.data() : nullptr;
  for (int64_t i = 0; i < steps; ++i) {
    if (!cancel.is_none() && cancel().cast<bool>()) return i;
    py::object out = backend(x, i);
    auto eps = FloatArray::ensure(out);
    if (!eps || eps.size() != x.size())
      throw std::runtime_error("backend returned eps_hat of size " + std::to_string(eps ? eps.size() : -1) +
                               " at step " + std::to_string(i) + ", expected " + std::to_string(x.size()) +
                               " float32 values");
    int64_t bad;
    {
      py::gil_scoped_release release;
      bad = update(xp, eps.data(), xprev, eprev, batch, per_sample, cx[i], ce[i], cxp[i], cep[i], sg[i], sd,
                   seed_per_row, idx, static_cast<uint32_t>(i));
    }
    if (bad) {
      throw NonFinite("sampling step " + std::to_string(i) + " produced " + std::to_string(bad) +
                      " non-finite values");
    }
    if (!progress.is_none()) progress(i + 1, steps);
  }
  return steps;
}

py::array_t<float> normals(uint64_t seed, uint32_t index, uint32_t step, int64_t n) {
  py::array_t<float> out(n);
  float* p = out.mutable_data();
  float block[4];
  for (int64_t j = 0; j < n; ++j) {
    if ((j & 3) == 0) sami::normal_block(seed, index, step, static_cast<uint32_t>(j >> 2), block);
    p[j] = block[j & 3];
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_sampler, m) {
  m.doc() = "The sampling loop of sami-rt (DDPM/DDIM, DPM-Solver++(2M) and its SDE form; one backend call per "
            "step, Philox noise).";
  // NonFinite reaches Python as sami_rt.errors.SamplingError itself (registered with that class as its base,
  // under the same name), so callers catch it by type, not by matching its text.
  py::register_exception<NonFinite>(m, "SamplingError",
                                   py::module_::import("sami_rt.errors").attr("SamplingError").ptr());
  m.attr("__version__") = "3";  // 3: seeds per row (sami_rt/sampling/loop.py's LOOP_VERSION)
  m.def("sample_loop", &sample_loop, py::arg("backend"), py::arg("x").noconvert(), py::arg("c_x"), py::arg("c_eps"),
        py::arg("sigma"), py::arg("seeds"), py::arg("indices"), py::arg("progress") = py::none(),
        py::arg("cancel") = py::none(), py::arg("c_x_prev") = py::none(), py::arg("c_eps_prev") = py::none(),
        "Run the loop in place on x (float32, C-contiguous). backend(x, i) -> eps_hat; seeds: uint64, one per "
        "row or one for all; c_x_prev, c_eps_prev "
        "(None: zeros) weigh the previous step's x and eps_hat; returns the number of steps done (fewer when "
        "cancel() returned True).");
  m.def("normals", &normals, py::arg("seed"), py::arg("index"), py::arg("step"), py::arg("n"),
        "n standard normals of one sample at one step (the twin of sami_rt.sampling.rng.normals).");
}
