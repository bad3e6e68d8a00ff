"""Accuracy Checker types beyond classification: detection and segmentation converters,
adapters, postprocessing and metrics, registered by name in :mod:`pot_cli.engines.ac.base`."""
