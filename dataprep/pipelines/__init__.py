"""The preparations end to end, each a short list of named stages: pretraining data
(pretrain.py, with its report), instruction data (sft.py, sft_stages.py) on Ray Data, and
preference pairs (preference.py) in the driver; shards.py holds their Parquet output."""
