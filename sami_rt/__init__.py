"""sami-rt: the runtime of SAMI (score-based autoencoder for multiscale inference).

``from sami_rt import Runtime`` loads a model bundle and runs guided generation and encoding with
onnxruntime and a C++ sampling loop, on numpy, OpenCV and click alone (no deep-learning framework: the
reference model lives in ``sami_reference``). Its numerical core (noise schedules, the bundle format) is
shared with ``train/`` and ``export/`` so that they cannot disagree.
"""

from sami_rt._version import __version__

__all__ = ["Runtime", "__version__"]


def __getattr__(name):  # lazy: ``import sami_rt.sampling.schedule`` must not pull in onnxruntime or OpenCV
    if name == "Runtime":
        from sami_rt.runtime import Runtime  # lazy: `import sami_rt` stays light (no onnxruntime)

        return Runtime
    raise AttributeError(f"module 'sami_rt' has no attribute {name!r}")
