"""The one inference path: histories -> samples -> user vectors (+ rationales) -> ranked catalogue items.

Evaluation (through ``R2ecRecommender.full_sort_predict``), ``r2ec explain``, the MLflow pyfunc and the nightly
recommendation job all go through these functions, so a user is scored the same way everywhere.
"""

from r2ec.inference.histories import samples_from_histories
from r2ec.inference.ranking import RankedLists, UserReadout, rank_catalogue, read_users, top_k_unseen

__all__ = ["RankedLists", "UserReadout", "rank_catalogue", "read_users", "samples_from_histories", "top_k_unseen"]
