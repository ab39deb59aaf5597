"""A trial that waits instead of training, for benchmarks of the orchestrator (orchestrator.py).

It runs in a real trial process and talks to MLflow and the orchestrator as a trial does (a loss curve
logged step by step, step events, the phase file, a scorecard at the end), so only the training and the
scoring are missing. Its length comes from $HARNESS_SIMULATED_SECONDS; its scores are drawn from the trial
number, and pass the default spec's constraint.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

SECONDS_ENV = "HARNESS_SIMULATED_SECONDS"
STEPS = 20


def simulated_trial(request: Any, events: Any) -> Any:
    from harness.tracking import Tracker
    from harness.trial import COMPLETE, TrialResult
    from harness.worker import mark_phase

    seconds = float(os.environ.get(SECONDS_ENV, "5"))
    tracker = Tracker(request.tracking_uri)
    mark_phase(request.folder, "training")
    for step in range(1, STEPS + 1):
        time.sleep(seconds / STEPS)
        tracker.log_metrics(request.run_id, {"loss": 0.7 / step}, step, wait=False)
        events.put(("step", request.number, step, STEPS))
    tracker.flush()
    draw = random.Random(request.number)
    scores = {"identity.hit_rate": draw.random(), "bench.retention": 0.9 + 0.1 * draw.random()}
    tracker.log_metrics(request.run_id, scores | {"time.train_s": seconds})
    return TrialResult(COMPLETE, scores=scores, seconds={"time.train_s": seconds})
