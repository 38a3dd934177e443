"""``Scenario.with_samples``: the per-round sample counts the cost model sees (issue 11)."""

import pytest

from edgesplit.costmodel import CostModel
from edgesplit.devices import generate_scenario
from edgesplit.errors import ScenarioError
from edgesplit.profiles import load_builtin_profile


def test_with_samples_sets_counts_and_the_cost_model_follows():
    s = generate_scenario(load_builtin_profile("small_cnn", "cifar10"), 3, seed=0, samples=500, batch_size=32)
    t = s.with_samples([32, 64, 1])
    assert t.array("samples").tolist() == [32, 64, 1]
    assert s.array("samples").tolist() == [500, 500, 500]  # a copy
    a, b = CostModel.from_scenario(s), CostModel.from_scenario(t)
    # one iteration (32 samples) instead of ceil(500/32) = 16: compute scales with K_i b
    assert b.compute_s[0, 0] == pytest.approx(a.compute_s[0, 0] * 32 / (16 * 32))


@pytest.mark.parametrize("bad", [[1, 2], [0, 1, 1]])
def test_with_samples_rejects_bad_counts(bad):
    s = generate_scenario(load_builtin_profile("small_cnn", "cifar10"), 3, seed=0)
    with pytest.raises(ScenarioError, match="samples"):
        s.with_samples(bad)
