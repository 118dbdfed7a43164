"""R²ec: a recommender that reasons in text, then ranks the catalogue with its own hidden states.

Pure ML: this package imports torch / transformers / peft / pandas only, never an external system's client.
"""
