"""Full-ranking metrics and the evaluator every recommender goes through."""
