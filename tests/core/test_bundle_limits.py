"""Crafted bundles: sizes a manifest asks for are bounded and checked against the weights
before anything is allocated (a bundle is a file from someone else)."""

from __future__ import annotations

import json
import resource
import shutil
import time

import numpy as np
import pytest

from neuralign.bundle import (
    MANIFEST,
    MAX_CHANNELS,
    MAX_EPOCH_VALUES,
    MAX_FEATURE_DIM,
    MAX_TEMPLATES,
    MAX_THUMBNAIL_PX,
    MAX_TIMES,
    TEMPLATES,
    _content_hash,
    load_bundle,
)
from neuralign.errors import DataError


def _crafted(tiny_bundle, tmp_path, edit) -> object:
    """A copy of the tiny bundle with ``edit`` applied to its manifest, re-hashed (an attacker
    or a broken exporter writes a consistent hash)."""
    d = tmp_path / "crafted"
    shutil.copytree(tiny_bundle[0], d)
    raw = json.loads((d / MANIFEST).read_text())
    edit(raw)
    raw["content_hash"] = _content_hash(d, raw)
    (d / MANIFEST).write_text(json.dumps(raw))
    return d


def _refused(d, match: str) -> None:
    """load_bundle refuses ``d`` at once, naming the manifest file, without a big allocation."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=match) as err:
        load_bundle(d)
    assert time.perf_counter() - t0 < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000  # < 200 MB
    assert str(d) in str(err.value)


@pytest.mark.parametrize("edit, key, limit", [
    (lambda r: r["model"].update(n_chans=10**9), "model.n_chans", MAX_CHANNELS),
    (lambda r: r["model"].update(n_times=10**8), "model.n_times", MAX_TIMES),
    (lambda r: r["model"].update(feature_dim=10**7), "model.feature_dim", MAX_FEATURE_DIM),
    (lambda r: r["model"].update(n_chans=MAX_CHANNELS, n_times=MAX_TIMES), "model",
     MAX_EPOCH_VALUES),
    (lambda r: r["template_bank"].update(image_ids=[f"i{k}" for k in range(MAX_TEMPLATES + 1)]),
     "template_bank.image_ids", MAX_TEMPLATES),
])
def test_bad_bundle_sizes_beyond_the_limits_are_refused(tiny_bundle, tmp_path, edit, key, limit):
    d = _crafted(tiny_bundle, tmp_path, edit)
    _refused(d, rf"manifest.json: manifest key '{key}': .*{limit}")


def test_bad_bundle_model_not_matching_its_weights_is_refused_before_building(tiny_bundle,
                                                                             tmp_path):
    """k = 4000 is within every bound but the model it describes holds a 4000 x 4000 x 63
    spatial convolution (4 GB): refused from the weights' header, the model never built."""
    d = _crafted(tiny_bundle, tmp_path, lambda r: r["model"]["config"].update(k=4000))
    _refused(d, r"weights.safetensors: tensor '[\w.]+' has shape \([\d, ]+\), but the model "
                r".*manifest.json describes \(key 'model'\) needs \(\d+")


def test_bad_bundle_sections_that_disagree_on_sizes_are_refused(tiny_bundle, tmp_path):
    d = _crafted(tiny_bundle, tmp_path, lambda r: r["epoch"].update(n_times=10**5))
    _refused(d, r"manifest key 'epoch.n_times': 100000, but model.n_times is 250")


def test_bad_bundle_thumbnails_beyond_the_limit_are_refused(tiny_bundle, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    def no_edit(raw):
        pass

    d = _crafted(tiny_bundle, tmp_path, no_edit)
    t = load_file(d / TEMPLATES)
    n = t["embeddings"].shape[0]
    save_file({"embeddings": t["embeddings"],
               "thumbnails": torch.zeros((n, MAX_THUMBNAIL_PX + 1, 2, 3), dtype=torch.uint8)},
              d / TEMPLATES)
    raw = json.loads((d / MANIFEST).read_text())
    raw["content_hash"] = _content_hash(d, raw)
    (d / MANIFEST).write_text(json.dumps(raw))
    _refused(d, rf"templates.safetensors: 'thumbnails' has shape \({n}, {MAX_THUMBNAIL_PX + 1}, "
                rf"2, 3\), expected .*<= {MAX_THUMBNAIL_PX}")


def test_bad_bundle_checks_pass_a_real_bundle(tiny_bundle):
    b = load_bundle(tiny_bundle[0])
    model = b.build_model()
    assert sum(p.numel() for p in model.parameters()) > 0
    assert np.isfinite(b.template_embeddings).all()
