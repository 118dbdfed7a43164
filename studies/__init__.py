"""One-off studies of the R²ec recipe on ML-100k, kept apart from the product's benchmarks.

Each study asks one question (does the item tower rank unseen items, which new-item slot policy, what WiSE-FT or
centring does, can the backbone learn at all, ...) and is run as ``.venv/bin/python -m studies.<name>``; its
figures, with the command that made them, go to ``studies/results/`` (the ablation and variant results of
``benchmarks.quality`` runs are kept there too, with their training logs under ``studies/results/runs/``).
Studies may import ``benchmarks``, ``r2ec`` and ``services``; nothing outside ``studies`` imports a study.
"""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
