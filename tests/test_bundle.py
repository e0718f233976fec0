"""The bundle reader (sami_rt.contract.bundle.read_bundle) on corrupted copies of the bundle shipped in the package.

The exporter's own output is checked in test_export.py; here any valid bundle will do, so these tests need
neither torch nor an export."""

import numpy as np
import pytest

from sami_rt.contract.bundle import FORMAT_VERSION, MANIFEST, BundleError, read_bundle
from tests.helpers import copy_shipped_bundle, flip_byte, write_manifest


def test_the_shipped_bundle_reads_and_its_copy_too(tmp_path):
    dst, m = copy_shipped_bundle(tmp_path)
    b = read_bundle(dst)
    assert set(b.graphs) == {"encoder", "denoiser", "guidance", "guided_eps"} and b.reference is not None
    import onnxruntime as ort  # the latent size the manifest states is the one the encoder graph computes

    enc = ort.InferenceSession(str(b.path(b.graphs["encoder"])), providers=["CPUExecutionProvider"])
    assert [o.shape[-1] for o in enc.get_outputs()] == [b.manifest.latent_dim, b.manifest.latent_dim] == [m["latent_dim"]] * 2


def test_reference_weights_are_checked(tmp_path):
    pytest.importorskip("torch")
    from sami_reference import load_reference

    dst, m = copy_shipped_bundle(tmp_path)
    flip_byte(dst / "reference.npz", 200)
    with pytest.raises(BundleError, match="checksum mismatch for reference.npz"):
        read_bundle(dst)
    del m["reference"]
    write_manifest(dst, m)
    with pytest.raises(BundleError, match="has no reference weights"):
        load_reference(read_bundle(dst))


def test_reader_refuses_an_unknown_version(tmp_path):
    dst, m = copy_shipped_bundle(tmp_path)
    m["format_version"] = FORMAT_VERSION + 1
    write_manifest(dst, m)
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        read_bundle(dst)


def test_reader_refuses_a_missing_graph_file(tmp_path):
    dst, _ = copy_shipped_bundle(tmp_path)
    (dst / "guidance.onnx").unlink()
    with pytest.raises(BundleError, match="graph 'guidance': file guidance.onnx is missing"):
        read_bundle(dst)


def test_reader_refuses_a_checksum_mismatch(tmp_path):
    dst, _ = copy_shipped_bundle(tmp_path)
    flip_byte(dst / "encoder.onnx", 100)
    with pytest.raises(BundleError, match="checksum mismatch for encoder.onnx"):
        read_bundle(dst)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_reader_refuses_a_file_outside_the_bundle(tmp_path, name):
    dst, m = copy_shipped_bundle(tmp_path)
    (tmp_path / "outside.onnx").write_bytes((dst / "encoder.onnx").read_bytes())
    m["graphs"]["encoder"]["file"] = name
    write_manifest(dst, m)
    with pytest.raises(BundleError, match="points outside the bundle directory"):
        read_bundle(dst)


def test_reader_refuses_malformed_manifests(tmp_path):
    dst, m = copy_shipped_bundle(tmp_path)
    (dst / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON"):
        read_bundle(dst)
    (dst / MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        read_bundle(dst)
    m2 = dict(m, graphs=dict(m["graphs"]))
    out = m["graphs"]["denoiser"]["outputs"][0]
    m2["graphs"]["denoiser"] = dict(m["graphs"]["denoiser"], outputs=[dict(out, name="noise")])  # not "eps"
    write_manifest(dst, m2)
    with pytest.raises(BundleError, match="differ from the contract"):
        read_bundle(dst)
    abar = list(m["schedule"]["abar"])
    for bad in ([abar[7], 0.5], 10**400):  # nested (found by the fuzz test), beyond a float: numpy's own errors once
        abar[7] = bad
        write_manifest(dst, dict(m, schedule=dict(m["schedule"], abar=abar)))
        with pytest.raises(BundleError, match="schedule.abar must be a list of numbers"):
            read_bundle(dst)


@pytest.mark.parametrize("sampling,msg", [
    ({"scale": 0}, "sampling.scale must be a positive number, got 0"),
    ({"scale": -2.0}, "sampling.scale must be a positive number, got -2.0"),
    ({"scale": "3"}, "sampling.scale must be a positive number, got '3'"),
    ({"scale": True}, "sampling.scale must be a positive number, got True"),
    ({"scale": 10**400}, "sampling.scale must be a positive number"),  # JSON allows it; a float does not
    ([3.0], "field 'sampling' should be an object"),
])
def test_reader_refuses_a_bad_sampling_scale(tmp_path, sampling, msg):
    dst, m = copy_shipped_bundle(tmp_path)
    write_manifest(dst, dict(m, sampling=sampling))
    with pytest.raises(BundleError, match=msg):
        read_bundle(dst)


def test_reader_takes_the_sampling_scale_and_defaults_to_the_exact_model(tmp_path, fresh_seed):
    dst, m = copy_shipped_bundle(tmp_path)
    s = float(np.random.default_rng(fresh_seed).uniform(0.5, 4.0))
    write_manifest(dst, dict(m, sampling={"scale": s}))
    assert read_bundle(dst).manifest.sampling_scale == s
    write_manifest(dst, {k: v for k, v in m.items() if k != "sampling"})  # bundles written before the field: the exact model
    assert read_bundle(dst).manifest.sampling_scale == 1.0
