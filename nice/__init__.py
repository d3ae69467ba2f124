"""NICE pipeline: Neural Image Compression and Explanation (arXiv 1908.08988).

The library knows nothing of Kubeflow: components and pipelines wrap it.
"""

__version__ = "0.1.0"
