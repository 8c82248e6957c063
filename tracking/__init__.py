"""Experiment tracking, in whichever runtime records: the driver (the job's one MLflow run:
params, tags, artifacts, the export as a model version; mlflow_run.py) and rank 0 of the Ray
Train workers (metrics per log step, never a step twice; metrics_logger.py). MLflow is
imported only inside the functions that use it, so a job with tracking=none never loads it;
the rest (store.py, params.py, guard.py) is standard library."""
