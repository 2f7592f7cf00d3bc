"""Normal/atypical mitotic-figure classifier: model and checkpoint, crop data, training, scoring."""

from midog_viewer.atypical.classify import atypical_scores, classify_files, shared_classifier
from midog_viewer.atypical.model import AtypicalConfig, AtypicalNet, load_classifier, save_classifier

__all__ = ["AtypicalConfig", "AtypicalNet", "atypical_scores", "classify_files", "load_classifier",
           "save_classifier", "shared_classifier"]
