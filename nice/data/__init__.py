"""Datasets: IDX parsing and offline-first MNIST / Fashion-MNIST loaders."""
