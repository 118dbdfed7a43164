"""Training R²ec: RecPO (reasoning + fused reward), the contrastive "w/o reasoning" ablation, and their parts."""
