"""The precisions a backend can be asked for, their short names (the CLI's ``--precision``), and the rule
that turns a request into what runs (section 8 of docs/design.md)."""

from __future__ import annotations

from sami_rt.errors import BackendError
from sami_rt.hardware.cpuinfo import bf16_support

# what the CLI offers -> the name the backends use
PRECISIONS = {"auto": "auto", "f32": "float32", "f16": "float16", "bf16": "bfloat16"}
ALIASES = {**PRECISIONS, "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16"}


def normalize_precision(precision: str) -> str:
    """``auto``, ``float32``, ``float16`` or ``bfloat16`` for any accepted spelling; BackendError otherwise."""
    p = ALIASES.get(str(precision).lower())
    if p is None:
        raise BackendError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return p


def cpu_precision(precision: str) -> tuple[str, str | None]:
    """What OpenVINO runs for a request on this CPU: (``float32`` or ``bfloat16``, a note or None).
    ``auto`` and ``float32`` run float32 (bf16 changes the samples' rounding, so it is only ever asked for);
    ``bfloat16`` runs bf16 where the CPU has AMX-BF16 or AVX512-BF16, else float32 with a note saying why."""
    if precision == "float16":
        raise BackendError("float16 graphs are for GPUs; on the CPU use --precision f32 or bf16")
    if precision != "bfloat16":
        return "float32", None
    ok, why = bf16_support()
    if ok:
        return "bfloat16", None
    return "float32", f"--precision bf16: {why}; running float32"
