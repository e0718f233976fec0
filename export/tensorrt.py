"""TensorRT engines (``*.plan``) from the bundle's ONNX graphs, one optimisation profile over the batch axis.

Engines are specific to a TensorRT version and a GPU: the manifest tags each with both, and a runtime that
finds a mismatch rebuilds or falls back (and says so). Needs an NVIDIA GPU, CUDA and the ``tensorrt`` wheel.
"""

from __future__ import annotations

from pathlib import Path


class TensorRTUnavailable(RuntimeError):
    """TensorRT engines cannot be built here (no GPU, no CUDA, or no tensorrt package)."""


def check_available() -> tuple[str, str]:
    """(TensorRT version, GPU name), or raise TensorRTUnavailable. The name is ``sami_rt.hardware.gpu.gpu_name``'s,
    the one the runtime compares a bundle's engines with."""
    from sami_rt.hardware.gpu import gpu_name

    gpu = gpu_name()
    if gpu is None:
        raise TensorRTUnavailable("--tensorrt needs an NVIDIA GPU with CUDA, and none is visible on this machine; "
                                  "the ONNX graphs in the bundle still run everywhere")
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable("--tensorrt needs the 'tensorrt' package (pip install -e '.[trt]')") from None
    return trt.__version__, gpu


def build_engine(onnx_path: Path, plan_path: Path, inputs: list[dict], batch=(1, 16, 256), fp16: bool = False,
                 workspace_mb: int = 2048) -> dict:
    """Build and write a serialized engine; returns the manifest entry (file, versions, profile, sha256)."""
    import tensorrt as trt

    from sami_rt.contract.bundle import sha256_file
    from sami_rt.media.files import atomic_write_bytes

    version, gpu = check_available()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # float16 graphs: strongly typed, so TensorRT keeps the ONNX graph's own types (float16 denoiser, float32
    # heads, log-likelihood and guidance) instead of choosing float16 wherever it is faster
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if fp16 else 0
    network = builder.create_network(flags)  # explicit batch (the only mode since TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    for spec in inputs:
        rest = [int(d) for d in spec["shape"][1:]]
        profile.set_shape(spec["name"], [lo, *rest], [opt, *rest], [hi, *rest])
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name}")
    atomic_write_bytes(plan_path, bytes(plan))
    return {"file": plan_path.name, "onnx": Path(onnx_path).name, "tensorrt": version, "gpu": gpu,
            "precision": "float16" if fp16 else "float32", "batch_profile": list(batch),
            "sha256": sha256_file(plan_path)}
