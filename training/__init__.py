"""Training the default model: corpus, tokenizer, objective, trainer, evaluation data."""
