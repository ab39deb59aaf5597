"""Seed replicates end to end: one search trial re-trained with a second seed, tracked, resumed and reported."""

from __future__ import annotations

import pytest
from support import base_spec


@pytest.mark.slow
def test_a_replicated_sweep_records_reports_and_resumes(ws, write_spec) -> None:
    spec = base_spec()
    spec["search"] |= {"trials": 1, "replicates": {"top_k": 1, "seeds": 2}}
    spec["train"]["max_steps"] = 6
    path = write_spec(spec)
    done = ws.sweep(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 trials finished" in done.stdout
    trials = sorted(ws.study().trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["replicate_of"] == 0 and trials[1].user_attrs["seed"] == 1
    assert trials[1].params == trials[0].params
    parents, children = ws.runs()
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    audit = [
        a.path for a in __import__("mlflow").tracking.MlflowClient(ws.tracking).list_artifacts(parents[0].info.run_id)
    ]
    assert "data_audit.json" in audit and "audit.identity.pairs" in parents[0].data.metrics
    html = (ws.root / "report" / "index.html").read_text()
    assert "trained with 2 seeds" in html and "Data audit" in html
    again = ws.sweep(path)  # resuming a complete replicated study runs nothing
    assert again.returncode == 0 and "2/2 trials finished" in again.stdout
    assert len(ws.study().trials) == 2
