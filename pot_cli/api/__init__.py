"""The Python API: the original POT's (2022.1-2023.3) names, so a script written for it runs with
one change, its import line (``from openvino.tools.pot import ...`` -> ``from pot_cli.api import ...``).

``DataLoader`` and ``Metric`` are what a user writes; ``IEEngine`` runs a model on them;
``ACEngine`` reads an Accuracy Checker YAML instead (datasets, detection/segmentation metrics);
``load_model`` -> ``create_pipeline(algorithms, engine).run(model)`` -> ``compress_model_weights``
-> ``save_model`` quantizes; ``Pipeline.evaluate`` measures. The ``pot`` command is built on the
same objects (:mod:`pot_cli.client`).
"""
from pot_cli.algorithms.registry import (AccuracyAwareQuantization, ActivationChannelAlignment, BiasCorrection,
                                         DefaultQuantization, FastBiasCorrection, MinMaxQuantization)
from pot_cli.api.data_loader import AttrDict, DataLoader
from pot_cli.api.engine import BatchSampler, Engine, append_stats, output_key, process_accumulated_stats
from pot_cli.api.ie_engine import IEEngine, SimplifiedEngine
from pot_cli.api.metric import Metric
from pot_cli.api.model import CompressedModel, compress_model_weights, load_model, save_model
from pot_cli.pipeline import Pipeline, create_pipeline

__all__ = ["DataLoader", "Metric", "Engine", "IEEngine", "SimplifiedEngine", "ACEngine", "load_model", "save_model",
           "compress_model_weights", "create_pipeline", "Pipeline", "CompressedModel", "BatchSampler",
           "append_stats", "process_accumulated_stats", "output_key", "AttrDict", "DefaultQuantization",
           "MinMaxQuantization", "AccuracyAwareQuantization", "ActivationChannelAlignment", "FastBiasCorrection",
           "BiasCorrection"]


def __getattr__(name: str):
    """``ACEngine`` is imported on first use: it builds on the CLI's engines, which import this package."""
    if name == "ACEngine":
        from pot_cli.api.ac_engine import ACEngine

        return ACEngine
    raise AttributeError(f"module 'pot_cli.api' has no attribute {name!r}")
