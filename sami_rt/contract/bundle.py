"""The model bundle on disk: a directory holding ``manifest.json`` and the files it names.

What the manifest holds, and its reading and writing, is ``sami_rt.contract.manifest``; this module finds the
bundle and its files: ``read_bundle`` reads the manifest through :class:`Manifest` and resolves and checks the
files it names (every name stays inside the bundle directory, every file exists, and with ``verify`` its
sha256 matches). A bundle is treated as untrusted input: reading it never executes code from it, and every
inconsistency raises :class:`BundleError` with a sentence that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from sami_rt.contract.format import FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST, is_finite_number
from sami_rt.contract.manifest import EngineEntry, FileEntry, GraphEntry, Manifest
from sami_rt.errors import BundleError
from sami_rt.media.files import atomic_write_bytes

__all__ = ["Bundle", "BundleError", "FORMAT", "FORMAT_VERSION", "GRAPHS", "MANIFEST", "Manifest", "is_finite_number",
           "read_bundle", "resolve_model", "sha256_file", "shipped_models", "write_manifest"]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its ``root``, the typed ``manifest`` and ``files``, every file the manifest names
    resolved inside the root (checked to exist, and by sha256 where read with ``verify``). The graphs, engines
    and reference are the manifest's own entries; :meth:`path` finds an entry's file. What the model is
    (image, latent size, schedule, sampling defaults) is read from ``manifest``, in one place."""

    root: Path
    manifest: Manifest
    files: dict[str, Path] = field(default_factory=dict)

    def path(self, entry: FileEntry) -> Path:
        return self.files[entry.file]

    @property
    def graphs(self) -> dict[str, GraphEntry]:
        return self.manifest.graphs

    @property
    def graphs_fp16(self) -> dict[str, GraphEntry]:
        return self.manifest.graphs_fp16

    @property
    def engines(self) -> dict[str, EngineEntry]:
        return self.manifest.engines

    @property
    def reference(self) -> Path | None:
        """The reference model's weights (npz, no pickle), for sami_reference."""
        return None if self.manifest.reference is None else self.path(self.manifest.reference)


def _inside(root: Path, name: str, where: str) -> Path:
    if not isinstance(name, str) or not name:
        raise BundleError(f"{where}: file name {name!r} is not a file name")
    p = (root / name).resolve()
    if root.resolve() not in p.parents:
        raise BundleError(f"{where}: file {name!r} points outside the bundle directory {root}")
    return p


def read_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Read and validate ``root/manifest.json``; ``verify`` checks every file's sha256."""
    root = Path(root)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"model bundle {root} is not a directory")
    if not mpath.is_file():
        raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing")
    try:
        text = mpath.read_bytes().decode()
    except UnicodeDecodeError as e:
        raise BundleError(f"{mpath} is not valid JSON ({e})") from None
    where = str(mpath)
    m = Manifest.loads(text, where)

    def resolve(e: FileEntry, w: str) -> Path:
        path = _inside(root, e.file, w)
        if not path.is_file():
            raise BundleError(f"{w}: file {e.file} is missing from {root}")
        if verify:
            if not e.sha256:
                raise BundleError(f"{w} lacks the field 'sha256'")
            if sha256_file(path) != e.sha256:
                raise BundleError(f"{w}: checksum mismatch for {e.file} (the file changed after export)")
        return path

    files = {}
    for key, entries in (("graphs", m.graphs), ("graphs_fp16", m.graphs_fp16)):
        for name, g in entries.items():
            files[g.file] = resolve(g, f"{where} graph {name!r}" if key == "graphs" else f"{where} {key} graph {name!r}")
    for k, e in m.engines.items():
        files[e.file] = resolve(e, f"{where} engine {k!r}")
    if m.reference is not None:
        files[m.reference.file] = resolve(m.reference, f"{where} reference")
    return Bundle(root, m, files)


def manifest_digest(root: Path) -> str:
    """The SHA-256 of the bundle's manifest file as written (it holds every file's checksum): a fingerprint."""
    return sha256_file(Path(root) / MANIFEST)


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (temporary file, then rename)."""
    atomic_write_bytes(Path(root) / MANIFEST, manifest.dumps().encode())


MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = MODELS_DIR / "disks-3d"


def shipped_models() -> dict[str, Path]:
    """The bundles inside the package, by name (their directory names)."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(MODELS_DIR.iterdir()) if (p / "manifest.json").is_file()}


def resolve_model(model: str | os.PathLike | None) -> Path:
    """A bundle directory, or the name of a bundle shipped in the package (an existing path wins)."""
    if model is None:
        return DEFAULT_MODEL
    path = Path(model)
    if path.exists():
        return path
    shipped = shipped_models()
    if len(path.parts) == 1 and path.name in shipped:
        return shipped[path.name]
    raise BundleError(f"model bundle {model} is not a directory, nor the name of a model shipped in the package "
                      f"(shipped: {', '.join(shipped) or 'none'})")
