"""Reference recommenders that R²ec has to beat: popularity and SASRec."""
