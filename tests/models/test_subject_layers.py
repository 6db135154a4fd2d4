"""Per-subject input layers in front of a shared BrainAE encoder."""

from __future__ import annotations

import pytest
import torch

from neuralign.models.brainae import BrainAE
from neuralign.models.subject_layers import SubjectEncoder, select_subject


def _model(**kw) -> BrainAE:
    torch.manual_seed(0)
    return BrainAE(n_chans=6, n_times=60, feature_dim=8, k=4, **kw).eval()


def test_layers_start_at_identity_and_route_by_subject():
    shared = _model()
    model = _model(subject_layers=3)
    assert isinstance(model.brain_encoder, SubjectEncoder)
    model.brain_encoder.backbone.load_state_dict(shared.brain_encoder.state_dict())
    x = torch.randn(5, 6, 60)
    with torch.no_grad():
        # identity layers: every subject first sees its data as recorded
        torch.testing.assert_close(model.encode_brain(x), shared.encode_brain(x))
        model.brain_encoder.layers[2].mul_(-1.0)  # subject 2's layer flips the sign
        select_subject(model, 2)
        torch.testing.assert_close(model.encode_brain(x), shared.encode_brain(-x))
        select_subject(model, 0)
        torch.testing.assert_close(model.encode_brain(x), shared.encode_brain(x))


def test_subject_index_and_option_errors():
    model = _model(subject_layers=2)
    with pytest.raises(ValueError, match=r"subject index 2 out of range \(0..1\)"):
        model.brain_encoder.select(2)
    with pytest.raises(ValueError, match="two input layers"):
        _model(subject_layers=2, spatial_projection=6)


def test_layers_are_not_weight_decayed():
    from neuralign.offline.train import parameter_groups

    model = _model(subject_layers=2)
    decayed = {id(p) for p in parameter_groups(model, 1e-4)[0]["params"]}
    assert id(model.brain_encoder.layers) not in decayed  # decay would pull them to 0, not to I
