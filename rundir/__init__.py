"""The run directory's contract, read and written by every runtime (driver, Ray Train
workers, evaluation, serving): the names in it (layout.py), the metrics file
(metrics_file.py) and the checkpoint manifests (checkpoints.py). Standard library only, so
any process can read a run without importing torch, Ray or the driver."""
