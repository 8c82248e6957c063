"""The tiny pretraining setup the integration tests share: `model=gpt2-micro` (a 2-layer,
width-64 GPT-2 with a 512-token BPE on 64-token sequences; seconds per run on two CPU
workers). Each test adds its own data size, steps and intervals."""

TINY_MODEL = ["model=gpt2-micro"]
