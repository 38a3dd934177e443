"""The nested leave-one-family-out design choice runs end to end, and a fold's decision never uses its own family."""

from __future__ import annotations

import pandas as pd

from edgesplit.experiments import nested_design


def test_quick_nested_design_end_to_end(tmp_path):
    out = tmp_path / "nested"
    assert nested_design.main(["--quick", "--out", str(out)]) == 0
    inner = pd.read_csv(out / "inner.csv")
    # three families: each training set is one family, judged on the two others, both designs
    assert len(inner) == 3 * 2 * 2 and set(inner.design) == {"plain", "augmented"}
    assert not any(j in t.split("+") for t, j in zip(inner.train, inner.judged))
    import json

    for train in set(inner.train):
        for design, warp in (("plain", 1.0), ("augmented", 2.0)):
            meta = json.loads((out / train / design / "model.json").read_text())
            assert meta["trained_on"] == [train] and meta["es"]["augment_warp"] == warp
    dec = pd.read_csv(out / "decisions.csv")
    assert list(dec.fold) == ["synthetic-a", "synthetic-b", "synthetic-c"] and (dec.inner_folds == 2).all()
    for r in dec.itertuples():
        assert r.chosen == ("augmented" if r.augmented_minus_plain < 0 else "plain")
    assert (out / "results.md").is_file()
    # a second run reuses what is there and decides the same
    assert nested_design.main(["--quick", "--out", str(out)]) == 0
    assert pd.read_csv(out / "decisions.csv").equals(dec)


def test_decision_of_a_fold_ignores_every_row_that_saw_its_family():
    rows = []
    fams = ["a", "b", "c", "d"]
    import itertools

    for train in itertools.combinations(fams, 2):
        for judged in set(fams) - set(train):
            # augmented wins by 1 wherever family "a" is involved, loses by 1 elsewhere
            involved = "a" in train or judged == "a"
            rows.append({"train": "+".join(train), "judged": judged, "design": "plain", "log_ratio_vs_pf": 0.0})
            rows.append({"train": "+".join(train), "judged": judged, "design": "augmented",
                         "log_ratio_vs_pf": -1.0 if involved else 1.0})
    dec = nested_design.decide(pd.DataFrame(rows), fams).set_index("fold")
    assert dec.loc["a", "chosen"] == "plain" and dec.loc["a", "augmented_minus_plain"] == 1.0
    assert (dec.loc[["b", "c", "d"], "chosen"] == "augmented").all()
    assert (dec.inner_folds == 3).all()


def test_nested_design_needs_three_families(tmp_path, capsys):
    from pathlib import Path

    pensieve = str(Path(nested_design.ROOT) / "edgesplit" / "data" / "traces" / "pensieve")
    assert nested_design.main(["--traces", pensieve, "--out", str(tmp_path / "x")]) == 2
    assert "at least 3 families" in capsys.readouterr().err


def test_scores_made_with_other_settings_are_never_reused_and_missing_inner_folds_are_refused(tmp_path, capsys):
    import pytest

    out = tmp_path / "nested"
    assert nested_design.main(["--quick", "--out", str(out)]) == 0
    capsys.readouterr()
    assert nested_design.main(["--quick", "--out", str(out), "--augment-warp", "5"]) == 2
    assert "other settings" in capsys.readouterr().err and "augment_warp" in (out / "settings.json").read_text()
    inner = pd.read_csv(out / "inner.csv")
    names = ["synthetic-a", "synthetic-b", "synthetic-c"]
    with pytest.raises(ValueError, match="fold synthetic-a: 1 of its 2 inner folds"):
        nested_design.decide(inner[~((inner.train == "synthetic-b") & (inner.judged == "synthetic-c"))], names)
    # rows of a family outside the study change nothing
    extra = inner.assign(train="synthetic-a+zz", log_ratio_vs_pf=-9.0)
    assert nested_design.decide(pd.concat([inner, extra]), names).equals(nested_design.decide(inner, names))
