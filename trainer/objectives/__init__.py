"""What a training run minimises: the next-token loss or DPO's, chosen by select.py."""
