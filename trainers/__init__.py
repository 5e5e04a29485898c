"""llmctl.trainers: the GPT model, shared training pieces and one thin module per algorithm."""
