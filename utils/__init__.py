"""LongLive's import paths (`utils.dataset.TextDataset`, ...), re-exported from the `longlive` package."""
