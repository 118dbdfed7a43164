"""Canonical schemas, dataset loaders, samples and the temporal split."""
