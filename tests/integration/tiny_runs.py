"""The tiny pretraining setup the integration tests share: a 2-layer, width-64 GPT-2 with a
512-token BPE on 64-token sequences (seconds per run on two CPU workers). Each test adds its
own data size, steps and intervals."""

TINY_MODEL = [
    "tokenizer.vocab_size=512",
    "model.hidden_size=64",
    "model.num_heads=2",
    "model.max_position_embeddings=64",
    "trainer.seq_len=64",
]
