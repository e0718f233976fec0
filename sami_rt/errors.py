"""Every error sami_rt raises on purpose derives from :class:`SamiError` (``except SamiError`` catches them
all); each also derives from the builtin it replaces (ValueError or RuntimeError), so older callers that
caught those still do. Each carries one sentence that names the input and the problem."""

from __future__ import annotations


class SamiError(Exception):
    """Base of sami_rt's own errors."""


class BundleError(SamiError, ValueError):
    """A model bundle that cannot be used, with the reason in one sentence."""


class InputError(SamiError, ValueError):
    """An argument that cannot be used (conflicting options, wrong shapes, out-of-range values)."""


class ImageError(SamiError, ValueError):
    """An image that cannot be used, named with the reason."""


class VideoError(SamiError, ValueError):
    """A video that cannot be read, named with the reason."""


class BackendError(SamiError, RuntimeError):
    """A requested device or backend is not available here, said in one sentence."""


class SamplingError(SamiError, RuntimeError):
    """A sampling step produced NaN or infinity. The C++ loop raises it itself (a registered exception:
    ``sami_rt.sampling._sampler`` binds its C++ error to this class when the module loads)."""


class DataError(SamiError, ValueError):
    """A training data set that cannot be read, named with what was expected (raised by train/)."""


class ExportError(SamiError, RuntimeError):
    """An export that failed, naming the graph and the reason (raised by export/)."""


class Cancelled(SamiError):
    """Sampling stopped by the cancel callback."""
