"""The R²ec model: backbone + LoRA, prompts, vectors, scoring, and the recommender built from them."""
