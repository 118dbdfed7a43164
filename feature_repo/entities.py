"""Entities: the keys every feature of the recommender hangs on."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A person whose interactions we log and whom we recommend to.",
    owner="data@r2ec",
    tags={"team": "r2ec"},
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A catalogue item (a movie for ML-100k).",
    owner="data@r2ec",
    tags={"team": "r2ec"},
)
