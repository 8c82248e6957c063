"""The run directory's contract, read and written by every runtime (driver, Ray Train
workers, evaluation, serving): the names in it (layout.py), the metrics file
(metrics_file.py) and the checkpoint manifests (checkpoints.py), on a local path or a URI
(store.py, through pyarrow.fs). No torch, Ray or driver imports, so any process can read a
run."""
