"""What crosses between training and the runtime, in one file: the graphs, the image and its preprocessing,
the model's architecture. No deep-learning framework and no file I/O.

- :data:`GRAPHS`: one :class:`GraphSpec` per graph (inputs and outputs with names, axes and dtypes, the
  default TensorRT batch profile, and example inputs for validation and benchmarks).
- :class:`ImageSpec`: the model's image and how any picture is brought to it (:class:`Preprocess`), used by
  training's data loading and by the runtime alike (``sami_rt.media.images.to_model``).
- :class:`Architecture`: the network's shape, separate from training settings; stored in checkpoints and
  bundles, and what the reference model (outside this package) is rebuilt from.
- The manifest that records them is ``sami_rt.contract.manifest`` (its writing and reading side by side).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from sami_rt.errors import BundleError

FORMAT = "sami-rt-bundle"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
PARAMETERISATIONS = ("eps",)
TRT_PROFILE = (1, 16, 256)  # TensorRT optimisation profile over the batch axis: min, opt, max
PIXEL_TO_MODEL = "x = pixel / 127.5 - 1 (pixels 0..255)"
MODEL_TO_PIXEL = "pixel = (x + 1) * 127.5"


# ------------------------------------------------------------------------------------------- graphs
@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, its axes over B (batch, dynamic), C, H, W (image) and D (latent
    dimension), and its dtype."""

    name: str
    axes: str
    dtype: str = "float32"

    def shape(self, dims: dict[str, int]) -> list:
        """Concrete shape, ``"batch"`` for the dynamic axis."""
        return ["batch" if a == "B" else int(dims[a]) for a in self.axes]

    def to_json(self, dims: dict[str, int]) -> dict:
        return {"name": self.name, "shape": self.shape(dims), "dtype": self.dtype}


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    trt_profile: tuple[int, int, int] = TRT_PROFILE

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def io(self, dims: dict[str, int]) -> dict[str, list[dict]]:
        """Inputs and outputs with concrete shapes, as the manifest records them."""
        return {"inputs": [s.to_json(dims) for s in self.inputs], "outputs": [s.to_json(dims) for s in self.outputs]}

    def example_inputs(self, rng: np.random.Generator, B: int, dims: dict[str, int], T: int) -> dict[str, np.ndarray]:
        """Random inputs in each input's working range: an image in [-1, 1] for the encoder, a noisy image
        (standard normal) elsewhere, levels in [0, T), codes N(0, 1), masks with 70% ones, scales in
        [0.5, 2)."""
        C, H, W, D = (int(dims[k]) for k in "CHWD")
        x = rng.uniform(-1, 1, (B, C, H, W)) if self.name == "encoder" else rng.standard_normal((B, C, H, W))
        full = {"x": x, "x_t": x, "t": rng.integers(0, T, B, dtype=np.int64), "z": rng.standard_normal((B, D)),
                "mask": (rng.random((B, D)) > 0.3), "scale": rng.uniform(0.5, 2.0, B)}
        return {s.name: np.ascontiguousarray(full[s.name], dtype=s.dtype) for s in self.inputs}


def _graph(name, ins, outs) -> GraphSpec:
    spec = lambda n, a: TensorSpec(n, a, "int64" if n == "t" else "float32")  # noqa: E731
    return GraphSpec(name, tuple(spec(*i) for i in ins), tuple(spec(*o) for o in outs))


GRAPHS: dict[str, GraphSpec] = {g.name: g for g in (
    _graph("encoder", [("x", "BCHW")], [("mu", "BD"), ("var", "BD")]),
    _graph("denoiser", [("x_t", "BCHW"), ("t", "B")], [("eps", "BCHW")]),
    _graph("guidance", [("x_t", "BCHW"), ("z", "BD"), ("mask", "BD")], [("g", "BCHW")]),
    _graph("guided_eps", [("x_t", "BCHW"), ("t", "B"), ("z", "BD"), ("mask", "BD"), ("scale", "B")],
           [("eps_hat", "BCHW")]),
)}
RUNTIME_GRAPHS = ("encoder", "denoiser", "guided_eps")  # what sampling and encoding call; guidance is for tools


# -------------------------------------------------------------------------------------------- image
@dataclass(frozen=True)
class Preprocess:
    """How a picture of any size reaches the model, in this order: centre crop (``crop`` > 0: a square of at
    most ``crop`` source pixels, as CelebA's 140-px face crop; 0: the largest centred crop with the
    content's aspect ratio), colour reduced to the model's channels (OpenCV's BGR -> grey weights), resized
    to the content size (the image less ``pad`` pixels on every side; area averaging to shrink, bicubic to
    enlarge), then ``pad`` pixels of black (-1) around it (Fashion-MNIST's 28 x 28 items in a 32 x 32 image)."""

    crop: int = 0
    pad: int = 0

    RESIZE = "OpenCV: INTER_AREA to shrink, INTER_CUBIC to enlarge"
    GREY = "OpenCV COLOR_BGR2GRAY"

    def to_json(self) -> dict:
        return {"crop": self.crop, "pad": self.pad, "resize": self.RESIZE, "grey": self.GREY}

    @classmethod
    def from_json(cls, d, where: str) -> "Preprocess":
        if not isinstance(d, dict):
            raise BundleError(f"{where}: image.preprocess should be an object, got {d!r:.60}")
        vals = {}
        for k in ("crop", "pad"):
            v = d.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BundleError(f"{where}: image.preprocess.{k} must be a non-negative integer, got {v!r:.60}")
            vals[k] = v
        return cls(**vals)


@dataclass(frozen=True)
class ImageSpec:
    """The model's image: channels, height and width, values ``x = pixel / 127.5 - 1``, and its preprocessing."""

    channels: int
    height: int
    width: int
    preprocess: Preprocess = Preprocess()

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def content_size(self) -> tuple[int, int]:
        """The size the picture is resized to before padding."""
        p = self.preprocess.pad
        return (self.height - 2 * p, self.width - 2 * p)

    def to_json(self) -> dict:
        return {"channels": self.channels, "height": self.height, "width": self.width, "range": [-1.0, 1.0],
                "to_model": PIXEL_TO_MODEL, "from_model": MODEL_TO_PIXEL, "preprocess": self.preprocess.to_json()}


def preprocess_for(config: dict) -> Preprocess:
    """The preprocessing a training configuration implies (its data set's framing)."""
    dataset = config.get("dataset")
    if dataset == "fashion-mnist":
        return Preprocess(pad=max(0, (int(config.get("image_size", 32)) - 28) // 2))
    if dataset == "celeba":
        return Preprocess(crop=140)
    return Preprocess()


# ------------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class Architecture:
    """The networks' shape: everything the reference model's constructor needs, nothing about training."""

    channels: int
    image_size: int
    latent_dim: int
    unet_channels: int
    unet_mult: tuple[int, ...]
    unet_res_blocks: int
    unet_attention: tuple[int, ...]
    unet_dropout: float
    encoder: str
    enc_channels: tuple[int, ...]
    enc_hidden: int
    enc_bias: bool
    enc_act: str
    enc_pool: str
    enc_var_init: float
    enc_mult: tuple[int, ...]
    enc_unet_channels: int
    enc_res_blocks: int
    enc_attention: tuple[int, ...]

    @classmethod
    def from_config(cls, config) -> "Architecture":
        """From a training configuration (a mapping, or an object with these attributes)."""
        get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
        defaults = {"enc_act": "relu", "enc_pool": "flatten", "unet_dropout": 0.0}
        vals = {}
        for f in fields(cls):
            v = get(f.name, defaults.get(f.name))
            if v is None:
                raise KeyError(f.name)
            vals[f.name] = tuple(v) if isinstance(v, (list, tuple)) else v
        return cls(**vals)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d, where: str) -> "Architecture":
        if not isinstance(d, dict):
            raise BundleError(f"{where}: field 'architecture' should be an object, got {d!r:.60}")
        try:
            return cls.from_config(d)
        except KeyError as e:
            raise BundleError(f"{where}: architecture lacks the field {e.args[0]!r}") from None


def is_finite_number(v) -> bool:
    """A real number (not a bool) that a float holds finitely: False for 10**400, NaN, strings, None."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:
        return False
