"""`harness eval` with a benchmark lm-eval cannot load: one message naming it, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_eval_with_an_unloadable_benchmark_names_it_and_exits_2(tmp_path: Path, toy_model_path: Path) -> None:
    # A valid task config over a data file datasets cannot parse: it fails only when lm-eval loads it.
    (tmp_path / "broken.yaml").write_text(
        "task: broken_task\ndataset_path: json\ndataset_kwargs:\n  data_files: {test: data.jsonl}\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: question\ndoc_to_choice: choices\n"
        "doc_to_target: answer\n"
    )
    (tmp_path / "data.jsonl").write_text('{"question": "Q", "choices": ["a", "b"], "answer": 0\n')
    (tmp_path / "evals.yaml").write_text("evals:\n  benchmarks: [broken.yaml]\n")
    command = ["eval", str(toy_model_path), "--evals", str(tmp_path / "evals.yaml")]
    shown = subprocess.run([sys.executable, "-m", "harness.cli", *command], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 2, shown.stderr
    errors = [line for line in shown.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: benchmark 'broken.yaml' could not be loaded: ")
    assert "Traceback" not in shown.stderr
