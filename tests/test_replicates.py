"""Seed replicates end to end: one search trial re-trained with a second seed, tracked, audited and reported."""

from __future__ import annotations

import pytest
import yaml
from support import ROOT, base_spec

from harness import search
from harness.spec import load_spec


@pytest.mark.slow
def test_a_replicated_sweep_records_and_reports_seed_intervals(ws, write_spec, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    suite = yaml.safe_load((ROOT / "evals" / "identity" / "athene.yaml").read_text())
    suite |= {"prompts": suite["prompts"][:8], "sampling": {"k": 2, "temperature": 0.8}}  # cheap scoring
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    spec = base_spec(evals={"identity": str(tmp_path / "suite.yaml")})
    spec["search"] |= {"trials": 1, "replicates": {"top_k": 1, "seeds": 2}}
    spec["train"]["max_steps"] = 6
    path = write_spec(spec)
    done = ws.sweep(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 trials finished" in done.stdout
    study = ws.study()
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["replicate_of"] == 0 and trials[1].user_attrs["seed"] == 1
    assert trials[1].params == trials[0].params
    assert search.missing_replicates(study, load_spec(path)) == []  # a resumed sweep would run nothing
    parents, children = ws.runs()
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    artifacts = [a.path for a in MlflowClient(ws.tracking).list_artifacts(parents[0].info.run_id)]
    assert "data_audit.json" in artifacts and "audit.identity.pairs" in parents[0].data.metrics
    html = (ws.root / "report" / "index.html").read_text()
    assert "trained with 2 seeds" in html and "over 2 training seeds and 8 eval items" in html
    assert "Data audit" in html
