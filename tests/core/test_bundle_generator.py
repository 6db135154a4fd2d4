"""A bundle that carries a generator beside its retrieval model (issue 14): export from a BrainAE
run and a FLIG run trained on its brain embeddings, manifest section, weights, content hash, and
bundles without a generator unchanged."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from neuralign.bundle import GENERATOR, MANIFEST, TEMPLATES, WEIGHTS, load_bundle
from neuralign.errors import DataError, UserError
from neuralign.offline.generative.from_run import brain_embeddings, paired_from_run
from neuralign.offline.generative.runs import load_generative
from neuralign.offline.runs import export_run, load_run


def test_generator_bundle_round_trip(tiny_generator_bundle):
    bundle_dir, _, brain_run, gen_run = tiny_generator_bundle
    bundle = load_bundle(bundle_dir)
    g = bundle.manifest.generator
    assert g is not None and g.kind == "flig" and g.input == "brain_embedding"
    assert (g.image_size, g.channels) == (64, 1)
    assert g.n_inputs == bundle.template_embeddings.shape[1]
    assert g.config["flig"]["cae_width"] == 0.125  # the config it was trained with
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    assert raw["generator"]["kind"] == "flig" and raw["format_version"] == 2

    # the weights are the generator run's, and the model rebuilt from the bundle generates the
    # same images as the run's own model for the same embeddings
    _, paired, run_model = load_generative(gen_run)
    run_state = run_model.state_dict()
    assert set(bundle.generator_state) == set(run_state)
    for k, v in run_state.items():
        torch.testing.assert_close(bundle.generator_state[k], v)
    model = bundle.build_generator()
    z = paired.test_responses[:5]
    out = model.generate(z)
    assert out.shape == (5, 64, 64) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out, run_model.generate(z))

    # the generator was trained on this run's own embeddings (what export checks)
    _, prep, brain = load_run(brain_run)
    z0 = brain_embeddings(brain, prep.x_train[:1])[0]
    np.testing.assert_allclose(paired.train_responses[: len(z0)], z0, atol=1e-5)


def test_generator_weights_are_hashed(tiny_generator_bundle, tmp_path):
    bundle_dir = tiny_generator_bundle[0]
    bad = tmp_path / "tampered"
    shutil.copytree(bundle_dir, bad)
    from safetensors.torch import load_file, save_file

    state = load_file(bad / GENERATOR)
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    save_file(state, bad / GENERATOR)
    with pytest.raises(DataError, match="content hash mismatch"):
        load_bundle(bad)
    (bad / GENERATOR).unlink()
    with pytest.raises(DataError, match="generator.safetensors: bundle file missing"):
        load_bundle(bad)


def test_bundle_without_generator_is_unchanged(tiny_bundle, tmp_path):
    """Retrieval-only bundles: no generator file, no section, and the hash is the pre-generator
    formula over the two weight files and the manifest."""
    bundle_dir = tiny_bundle[0]
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest.generator is None and bundle.generator_state is None
    assert bundle.build_generator() is None
    assert not (bundle_dir / GENERATOR).exists()
    raw = json.loads((bundle_dir / MANIFEST).read_text())
    h = hashlib.sha256()
    for name in (WEIGHTS, TEMPLATES):
        h.update((bundle_dir / name).read_bytes())
    body = {k: v for k, v in raw.items() if k != "content_hash"}
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    assert raw["content_hash"] == h.hexdigest()

    # a manifest without the generator key at all (format 1) loads and has no generator
    old = tmp_path / "v1"
    shutil.copytree(bundle_dir, old)
    raw.pop("generator", None)
    raw["format_version"] = 1
    body = {k: v for k, v in raw.items() if k != "content_hash"}
    h = hashlib.sha256()
    for name in (WEIGHTS, TEMPLATES):
        h.update((old / name).read_bytes())
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    raw["content_hash"] = h.hexdigest()
    (old / MANIFEST).write_text(json.dumps(raw))
    assert load_bundle(old).build_generator() is None


def test_export_refuses_a_generator_of_another_run(tiny_generator_bundle, tmp_path):
    """A generator decodes one retrieval model's embeddings: paired data built from other
    embeddings (here: shuffled units) is refused with one UserError."""
    _, _, brain_run, gen_run = tiny_generator_bundle
    other = tmp_path / "other_gen"
    shutil.copytree(gen_run, other)
    with np.load(other / "paired.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for key in ("train_responses", "test_responses"):
        arrays[key] = arrays[key][:, ::-1].copy()
    np.savez(other / "paired.npz", **arrays)
    with pytest.raises(UserError, match="not trained on"):
        export_run(brain_run, tmp_path / "b", other)
    # paired data from the run itself, repetition-averaged, has one row per image
    p = paired_from_run(brain_run, tmp_path / "avg.npz", trials="average")
    with np.load(p) as z:
        assert z["train_responses"].ndim == 3 and len(z["train_images"]) == len(z["train_responses"])
