"""Models: classifiers to explain and mask generators that explain them."""

from nice.models.classifiers import build_classifier
from nice.models.generators import build_generator

__all__ = ["build_classifier", "build_generator"]
