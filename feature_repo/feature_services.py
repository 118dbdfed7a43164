"""Feature services: the named feature sets a model version trains and scores with."""

from feast import FeatureService
from feature_views import item_text, user_history

training = FeatureService(
    name="r2ec_training",
    features=[user_history, item_text],
    description="Point-in-time history before each target, plus the target item's text.",
    owner="ml@r2ec",
    tags={"stage": "training"},
)

scoring = FeatureService(
    name="r2ec_scoring",
    features=[user_history],
    description="A user's history as of the nightly run time.",
    owner="ml@r2ec",
    tags={"stage": "scoring"},
)
