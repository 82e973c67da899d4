from __future__ import annotations

TINY = [
    "model.d_model=64", "model.n_layers=2", "model.n_heads=2", "model.vocab_size=512", "model.context_length=64",
    "tokenizer.vocab_size=512", "tokenizer.train_docs=300", "inference.total_length=48", "data.batch_size=8",
    "data.shuffle_buffer_size=64", "optimizer.warmup_iteration=2", "training.log_freq_iteration=1",
    "training.sample_steps=8", "training.num_samples=1", "logging.backend=noop",
]
