"""Configuration: POT config files -> validated frozen dataclasses; hardware configs.

Use :func:`load_config` for a file, :func:`validate_config` for a dict built from command-line
flags, and :func:`load_hardware_config` for a device's quantization rules.
"""
from pot_cli.config.hardware import (
    DEVICE_FILES,
    HardwareConfig,
    HwOperation,
    QuantizerSpec,
    load_hardware_config,
    parse_hardware_config,
)
from pot_cli.config.loader import (
    CONFIG_EXTENSIONS,
    load_config,
    load_config_file,
    resolve_path,
    strip_json_comments,
    validate_config,
)
from pot_cli.config.model import (
    ALGORITHM_NAMES,
    TARGET_DEVICES,
    AlgorithmConfig,
    CompressionConfig,
    EngineConfig,
    IgnoredOperation,
    IgnoredScope,
    MetricSpec,
    ModelConfig,
    PotConfig,
    QuantizationParams,
    QuantizerOverrides,
    RangeEstimator,
    StatisticSpec,
    freeze,
    thaw,
)

__all__ = [
    "ALGORITHM_NAMES",
    "CONFIG_EXTENSIONS",
    "DEVICE_FILES",
    "TARGET_DEVICES",
    "AlgorithmConfig",
    "CompressionConfig",
    "EngineConfig",
    "HardwareConfig",
    "HwOperation",
    "IgnoredOperation",
    "IgnoredScope",
    "MetricSpec",
    "ModelConfig",
    "PotConfig",
    "QuantizationParams",
    "QuantizerOverrides",
    "QuantizerSpec",
    "RangeEstimator",
    "StatisticSpec",
    "freeze",
    "load_config",
    "load_config_file",
    "load_hardware_config",
    "parse_hardware_config",
    "resolve_path",
    "strip_json_comments",
    "thaw",
    "validate_config",
]
