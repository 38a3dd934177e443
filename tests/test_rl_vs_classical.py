"""The leave-one-family-out study runs end to end (``--quick``: synthetic families, tiny settings)."""

from __future__ import annotations

import pandas as pd
import pytest

from edgesplit.experiments import rl_vs_classical


def test_quick_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "study"
    assert rl_vs_classical.main(["--quick", "--out", str(out), "--options"]) == 0
    for name in ("episodes.csv", "summary.csv", "aggregate.csv", "selection.csv", "results.md", "rl_vs_classical.png"):
        assert (out / name).is_file(), name
    eps = pd.read_csv(out / "episodes.csv")
    fams = set(eps.family)
    assert fams == {"synthetic-a", "synthetic-b"}
    # every policy on every family's same episodes, the learned one included
    assert set(eps.policy) == {"alternating", "pf", "pf-tuned", "learned", "oracle"}
    assert (eps.groupby(["family", "policy"]).size() == 1).all()
    assert (eps.total_time_s > 0).all()
    summary = pd.read_csv(out / "summary.csv")
    learned = summary[summary.policy == "learned"]
    assert len(learned) == 2 and learned.ratio_to_oracle.notna().all()
    # each fold's model was trained without its family
    import json

    for fam in fams:
        meta = json.loads((out / "models" / fam / "model.json").read_text())
        assert fam not in meta["trained_on"] and len(meta["trained_on"]) == 1
        # pf was tuned on the same training families only, and the tilt is built on that rule
        tuned = json.loads((out / "models" / fam / "pf.json").read_text())
        assert tuned["tuned_on"] == meta["trained_on"]
        assert meta["backbone_pf"] == tuned["pf"]
        assert meta["config"]["alpha"] == tuned["pf"]["exponent"]
        # every candidate was trained, and the option kept has the best selection score (training families)
        scores = meta["selection_log_ratio_vs_pf"]
        assert set(scores) == {"raw", "raw:avg", "rank", "rank:avg", "ensemble", "ensemble:avg"}
        assert meta["selected"] == min(scores, key=scores.get)
        for name in ("raw", "rank"):
            assert (out / "models" / fam / name / "progress.csv").is_file()
    assert "gap closed" in (out / "results.md").read_text()
    sel = pd.read_csv(out / "selection.csv").set_index("family")
    for fam in fams:
        meta = json.loads((out / "models" / fam / "model.json").read_text())
        assert sel.loc[fam, "kept"] == meta["selected"]
        assert sel.loc[fam, f"score[{meta['selected']}]"] == pytest.approx(meta["validation_log_ratio_vs_pf"], abs=1e-5)
    assert "Policy kept per fold" in (out / "results.md").read_text()
    # the option diagnostic replays every option on the held-out episodes; the kept one is the learned policy
    opts = pd.read_csv(out / "options.csv")
    for fam in fams:
        o = opts[opts.family == fam].set_index("option")
        assert set(o.index) == {"raw", "raw:avg", "rank", "rank:avg", "ensemble", "ensemble:avg"}
        assert o.kept.sum() == 1
        learned_t = eps[(eps.family == fam) & (eps.policy == "learned")].total_time_s.mean()
        assert o.loc[o.kept, "mean_total_time_s"].iloc[0] == pytest.approx(learned_t, rel=1e-9)
        assert o.spearman_selection_vs_heldout.nunique(dropna=False) == 1


def test_bad_fold_is_one_clear_error(tmp_path, capsys):
    assert rl_vs_classical.main(["--quick", "--out", str(tmp_path), "--folds", "nope"]) == 2
    assert "folds" in capsys.readouterr().err


def test_study_runs_on_trace_folders_of_ones_own_and_never_reuses_a_fold_model_of_other_families(tmp_path, capsys):
    """``--traces``: the study on any trace folders (here the Pensieve sample that ships: fcc and
    hsdpa); a fold model on disk trained on other families than this study's is refused up front."""
    import json
    from pathlib import Path

    pensieve = str(Path(rl_vs_classical.ROOT) / "edgesplit" / "data" / "traces" / "pensieve")
    out = tmp_path / "study"
    assert rl_vs_classical.main(["--quick", "--traces", pensieve, "--out", str(out)]) == 0
    eps = pd.read_csv(out / "episodes.csv")
    assert set(eps.family) == {"fcc", "hsdpa"}
    for fam, other in (("fcc", "hsdpa"), ("hsdpa", "fcc")):
        assert json.loads((out / "models" / fam / "model.json").read_text())["trained_on"] == [other]
    # a third family of our own (a folder is a family): fcc's model was trained on hsdpa alone
    extra = tmp_path / "extra"
    extra.mkdir()
    src = sorted(Path(pensieve).glob("trace_*"))
    for k, f in enumerate(src[:4]):
        (extra / f"link-{k}.log").write_text(f.read_text())
    capsys.readouterr()
    assert rl_vs_classical.main(["--quick", "--traces", pensieve, str(extra), "--out", str(out), "--stage", "eval"]) == 2
    err = capsys.readouterr().err
    assert "fold extra: no model" in err  # families are sorted by name: extra, fcc, hsdpa
    assert rl_vs_classical.main(["--quick", "--traces", pensieve, str(extra), "--out", str(out), "--folds", "fcc"]) == 2
    err = capsys.readouterr().err
    assert "fold fcc: " in err and "trained on ['hsdpa'], not on this study's other families ['extra', 'hsdpa']" in err
    # one folder is not a study
    assert rl_vs_classical.main(["--quick", "--traces", str(extra), "--out", str(tmp_path / "one")]) == 2
    assert "at least 2 families" in capsys.readouterr().err


def test_augmentation_flags_reach_every_candidate_and_bad_values_are_refused(tmp_path, capsys):
    import json

    out = tmp_path / "aug"
    assert rl_vs_classical.main(["--quick", "--out", str(out), "--stage", "train", "--folds", "synthetic-a",
                                 "--augment-warp", "2", "--augment-gamma", "1.5"]) == 0
    for cand in ("raw", "rank"):
        es = json.loads((out / "models" / "synthetic-a" / cand / "model.json").read_text())["es"]
        assert (es["augment_warp"], es["augment_gamma"]) == (2.0, 1.5)
    # the fold exists: training it again without the override is refused (never silently kept) ...
    capsys.readouterr()
    assert rl_vs_classical.main(["--quick", "--out", str(out), "--stage", "train", "--folds", "synthetic-a"]) == 2
    err = capsys.readouterr().err
    assert "fold synthetic-a: candidate raw: trained with other settings" in err and "augment_warp" in err
    # ... while evaluating it as it is works, and the selection table says how it was trained
    assert rl_vs_classical.main(["--quick", "--out", str(out), "--stage", "eval", "--folds", "synthetic-a"]) == 0
    sel = pd.read_csv(out / "selection.csv")
    assert (sel.augment_warp == 2.0).all() and (sel.augment_gamma == 1.5).all()
    assert rl_vs_classical.main(["--quick", "--out", str(tmp_path / "bad"), "--augment-warp", "0.5"]) == 2
    assert "augment_warp: must be a number in [1, 10]" in capsys.readouterr().err
