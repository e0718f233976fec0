"""``python -m sami_reference.bench``: ``sami-rt bench`` with the PyTorch eager baseline beside the runtime,
in one process. The same options, figures and report as ``sami-rt bench`` (``sami_rt.cli.bench``), plus the
same calls on the bundle's model rebuilt in PyTorch (``baseline.TorchBaseline``: denoiser forward plus
``torch.autograd.grad`` guidance, the way a research script does it), interleaved with the runtime's so that
machine noise hits both alike, and the ratios: the speed-up columns, the sample's time and the inference-
alone rate. PyTorch runs on the runtime's card when the runtime is on a GPU and torch has CUDA, else on the
CPU, and the report says which. Without torch, or for a bundle without reference weights, it reports the
runtime alone and says why.

    python -m sami_reference.bench [--model BUNDLE] [--device cpu] [--batch 1 --batch 16] [--json out.json]
"""

from __future__ import annotations

import click

from sami_rt.cli.bench import bench_options, run_bench_command
from sami_rt.cli.shared import friendly


def load_baseline(rt, threads: int = 0):
    """(the PyTorch eager baseline on the runtime's device, None), or (None, why there is none). A runtime in
    bfloat16 is compared with eager under bfloat16 autocast, bf16 with bf16."""
    if rt.bundle.reference is None:
        return None, "the bundle has no reference weights"
    try:
        from sami_reference.baseline import TorchBaseline
    except ImportError as e:
        return None, f"{e.name or 'torch'} is not installed"
    device = "cpu" if rt.backend.device == "openvino" else rt.backend.device
    return TorchBaseline(rt.bundle, threads, device, bf16=rt.backend.precision == "bfloat16"), None


def eager_entries(rt, threads: int = 0) -> dict:
    """--compare: PyTorch eager float32 and bfloat16 autocast beside the installed backends."""
    ref, _ = load_baseline(rt, threads)
    if ref is None:
        return {}
    from sami_reference.baseline import TorchBaseline

    return {"PyTorch eager f32": TorchBaseline(rt.bundle, threads, "cpu"),
            "PyTorch eager bf16": TorchBaseline(rt.bundle, threads, "cpu", bf16=True)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@bench_options
@click.option("--no-baseline", is_flag=True, help="Skip PyTorch: the figures of `sami-rt bench` alone.")
@click.option("--compare", is_flag=True, help="Every installed backend side by side with PyTorch eager float32 and "
              "bfloat16 autocast (CPU), guided_eps and encoder per batch.")
@friendly
def main(no_baseline, compare, **kw):
    """Measure the runtime against PyTorch eager, in this one process.

    \b
    Per-call latency of guided_eps and the encoder, a full generate, and video encoding throughput
    (decoding included and excluded), as `sami-rt bench` measures them; and the same calls on the bundle's
    model in PyTorch eager mode (denoiser forward plus autograd guidance; needs torch and the bundle's
    reference weights), with the ratios.
    \b
    Examples:
      python -m sami_reference.bench
      python -m sami_reference.bench --batch 1 --batch 16 --repeats 50 --json bench.json
      python -m sami_reference.bench --device cuda --batch 1 --batch 64
      python -m sami_reference.bench --device openvino --precision bf16   (eager under bf16 autocast beside it)
      python -m sami_reference.bench --compare --batch 16 --batch 64
    """
    run_bench_command(**kw, baseline=(lambda rt, threads: (None, "skipped")) if no_baseline else load_baseline,
                      compare=compare, extra=None if no_baseline else eager_entries)


if __name__ == "__main__":
    main()
