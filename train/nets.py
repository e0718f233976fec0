"""The networks live in ``sami_reference.nets`` (so that ``sami-rt bench`` can rebuild a bundle's model in
PyTorch without this source checkout); re-exported here for the training code."""

from sami_reference.nets import (  # noqa: F401
    SAMI,
    ConvEncoder,
    HalfUNetEncoder,
    UNet,
    build_denoiser,
    build_encoder,
    init_variance_head,
)
