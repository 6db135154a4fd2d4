"""Frozen image encoders: deterministic, content-sensitive; the CLI writes a loadable NPZ."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from neuralign.errors import DataError, UserError
from neuralign.offline.feature_files import load_features
from neuralign.offline.image_features import BuiltinImageEncoder, make_encoder, pixel_features


def _img(path, colour, stripes=0):
    a = np.zeros((64, 64, 3), np.uint8) + np.array(colour, np.uint8)
    if stripes:
        a[:, ::stripes] = 255
    Image.fromarray(a).save(path)
    return path


def test_builtin_is_deterministic_and_sees_colour_and_texture(tmp_path):
    enc = BuiltinImageEncoder()
    red, red2 = _img(tmp_path / "r.png", (200, 20, 20)), _img(tmp_path / "r2.png", (200, 20, 20))
    blue, striped = _img(tmp_path / "b.png", (20, 20, 200)), _img(tmp_path / "s.png", (200, 20, 20), 4)
    f = enc.encode_files([red, red2, blue, striped])
    assert f.shape == (4, enc.dim)
    np.testing.assert_array_equal(f[0], f[1])
    assert np.linalg.norm(f[0] - f[2]) > 0.1 and np.linalg.norm(f[0] - f[3]) > 0.1


def test_simulated_images_of_a_concept_are_closer_than_across_concepts(tiny_sim):
    from neuralign.offline.simulator import image_paths

    _, _, data = tiny_sim
    files = image_paths(data)
    ids = sorted(i for i in files if "_i" in i and i.startswith("c"))
    concepts = [i.split("_")[0] for i in ids]
    f = BuiltinImageEncoder().encode_files([files[i] for i in ids])
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    same = np.equal.outer(concepts, concepts) & ~np.eye(len(ids), dtype=bool)
    diff = ~np.equal.outer(concepts, concepts)
    assert sim[same].mean() > sim[diff].mean()


def test_features_cli_round_trip(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, c in enumerate([(10, 200, 10), (200, 10, 10), (10, 10, 200)]):
        _img(d / f"img{i}.png", c)
    out = tmp_path / "f.npz"
    res = subprocess.run([sys.executable, "-m", "neuralign", "features", str(d), "--out", str(out)],
                         capture_output=True, text=True, env={**os.environ})
    assert res.returncode == 0, res.stderr
    table = load_features(out, ["img2", "img0"])
    assert table.features.shape == (2, BuiltinImageEncoder().dim)


def test_pixels_and_errors(tmp_path):
    p = _img(tmp_path / "a.png", (255, 0, 0))
    px = pixel_features({"a": p}, ["a"])
    assert px.shape == (1, 3 * 64 * 64) and px[0, 0] == pytest.approx(1.0)
    with pytest.raises(DataError, match="no file"):
        pixel_features({}, ["a"])
    with pytest.raises(UserError, match="open_clip"):
        make_encoder("clip-please")


def test_open_clip_untrained_code_path(tmp_path):
    pytest.importorskip("open_clip")
    enc = make_encoder("open_clip:RN50:none")
    f = enc.encode_files([_img(tmp_path / "a.png", (1, 2, 3))])
    assert f.shape[0] == 1 and np.isfinite(f).all()
