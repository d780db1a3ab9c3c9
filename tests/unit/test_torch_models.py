"""decomp.models: shapes, sizes, seeded initialisation."""

from __future__ import annotations

import pytest
import torch  # (pinned dependency: missing = a broken install, not a skip)

from decomp.errors import ConfigError  # noqa: E402
from decomp.torch.models import MODELS, make_model  # noqa: E402

SHAPES = {"mlp": (40,), "cnn1d": (40,), "lenet": (64,), "resnet20": (3, 32, 32)}


@pytest.mark.parametrize("name", list(MODELS))
def test_models_map_a_batch_to_class_scores(name: str) -> None:
    m = make_model(name, input_shape=SHAPES[name], n_classes=7, seed=0)
    out = m(torch.randn(3, *SHAPES[name]))
    assert out.shape == (3, 7)
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_parameter_counts_match_the_reference_architectures() -> None:
    def d(name: str) -> int:
        m = make_model(name, input_shape=SHAPES[name], n_classes=10)
        return sum(p.numel() for p in m.parameters())

    assert d("cnn1d") == 5210  # MNIST-1D ConvBase: 150 + 1900 + 1900 + 1260
    assert d("resnet20") == 269_722  # He et al.: 0.27 M with option-A shortcuts
    assert d("lenet") == 19_754


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a = make_model("cnn1d", input_shape=(40,), n_classes=10, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = make_model("cnn1d", input_shape=(40,), n_classes=10, seed=1)
    c = make_model("cnn1d", input_shape=(40,), n_classes=10, seed=2)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_flat_inputs_are_reshaped() -> None:
    m = make_model("resnet20", input_shape=(3072,), n_classes=10)
    assert m(torch.randn(2, 3072)).shape == (2, 10)
    assert make_model("lenet", input_shape=(1, 8, 8), n_classes=10)(
        torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_models_and_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'cnn1d'"):
        make_model("cnn_1d", input_shape=(40,), n_classes=10)
    with pytest.raises(ConfigError, match="square"):
        make_model("lenet", input_shape=(40,), n_classes=10)
    with pytest.raises(ConfigError, match="3×32×32"):
        make_model("resnet20", input_shape=(40,), n_classes=10)
    with pytest.raises(ConfigError, match="model 'mlp'"):
        make_model("mlp", input_shape=(40,), n_classes=10, depth=3)
