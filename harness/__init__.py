"""dpo-harness: Optuna sweeps of TRL DPO trainings, tracked in MLflow, scored and reported."""

__version__ = "0.1.0"
