"""pot: post-training INT8 quantization for OpenVINO IR models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
