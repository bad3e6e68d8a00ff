"""Hardware configs: which operations a device quantizes, and with which schemes.

The files ``pot_cli/hw_configs/<device>.json`` use the original POT hw_config format::

    {
      "target_device": "CPU",
      "primary_bitwidth": 8,                      # optional (GNA: 16)
      "input_priority_types": ["Convolution"],    # optional
      "config": {"quantization": {
          "q8_a":     {"bits": 8, "mode": ["symmetric", "asymmetric"], "granularity": "pertensor"},
          "q8_w_sym": {"bits": 8, "mode": "symmetric", "granularity": "perchannel",
                       "level_low": -127, "level_high": 127}}},
      "operations": [
          {"type": "Convolution",
           "quantization": {"activations": "q8_a", "weights": ["q8_w_sym", "q8_w_asym"]}},
          {"type": "Concat", "attributes": {"unified_scales": "all"}},
          {"type": "MaxPool"}]                    # listed without quantization: agnostic
    }

A named quantizer whose ``mode`` or ``granularity`` is a list stands for every combination, in
priority order (mode first): ``q8_a`` above is two :class:`QuantizerSpec` (symmetric, then
asymmetric). An operation's ``activations``/``weights``/``outputs`` is a name, an inline quantizer
or a list of them; the first resulting spec is the preferred one. Which spec an algorithm uses
(for example the preset's activation mode) is the algorithm's choice among these.

Levels: when a spec gives ``level_low``/``level_high`` they are fixed (POT's ``q8_w_sym``:
-127..127, i.e. 255 levels, so that the int8 range is symmetric around zero); otherwise the
levels are ``2**bits`` (256 for 8 bits) and ``[0, 255]`` or ``[-128, 127]`` follows from the
sign of the range.

``DepthWiseConvolution`` is POT's virtual type for a GroupConvolution with one input channel per
group; graph code maps nodes to it.

Device mapping: ANY and CPU -> ``cpu.json`` (POT used the CPU rules for ANY), CPU_SPR ->
``cpu_spr.json``, GPU -> ``gpu.json``, NPU and VPU -> ``npu.json``, GNA -> ``gna.json``, GNA3 and
GNA3.5 -> ``gna3.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from pot_cli.config.loader import (
    did_you_mean,
    format_key_path,
    raise_problems,
    schema_problems,
    strip_json_comments,
)
from pot_cli.config.model import freeze
from pot_cli.errors import ConfigError

#: target_device -> file name under ``pot_cli/hw_configs/``.
DEVICE_FILES: Mapping[str, str] = MappingProxyType({
    "ANY": "cpu.json",
    "CPU": "cpu.json",
    "CPU_SPR": "cpu_spr.json",
    "GPU": "gpu.json",
    "NPU": "npu.json",
    "VPU": "npu.json",
    "GNA": "gna.json",
    "GNA3": "gna3.json",
    "GNA3.5": "gna3.json",
})


@dataclass(frozen=True)
class QuantizerSpec:
    """One concrete quantization scheme.

    :param bits: bit width.
    :param mode: ``symmetric`` or ``asymmetric``.
    :param granularity: ``pertensor`` or ``perchannel``.
    :param level_low: fixed lowest integer level, or ``None`` (derived from bits and sign).
    :param level_high: fixed highest integer level, or ``None``.
    :param unified_zeropoint: the device needs one zero point for all channels.
    """

    bits: int
    mode: str
    granularity: str
    level_low: int | None = None
    level_high: int | None = None
    unified_zeropoint: bool = False

    @property
    def levels(self) -> int:
        """Number of quantization levels: ``level_high - level_low + 1`` if fixed, else
        ``2**bits``."""
        if self.level_low is not None and self.level_high is not None:
            return self.level_high - self.level_low + 1
        return 2 ** self.bits


@dataclass(frozen=True)
class HwOperation:
    """What a device does with one operation type.

    :param type: OpenVINO operation type (or ``DepthWiseConvolution``).
    :param attributes: read-only attributes, e.g. ``{"unified_scales": "all"}``.
    :param activations: allowed schemes for activation inputs, preferred first.
    :param weights: allowed schemes for constant (weight) inputs, preferred first.
    :param outputs: allowed schemes for outputs (GNA), preferred first.
    """

    type: str
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    activations: tuple[QuantizerSpec, ...] = ()
    weights: tuple[QuantizerSpec, ...] = ()
    outputs: tuple[QuantizerSpec, ...] = ()

    @property
    def quantizable(self) -> bool:
        """True if the device quantizes some input of this operation."""
        return bool(self.activations or self.weights)

    @property
    def unified_scales(self) -> str | tuple[tuple[int, ...], ...] | None:
        """``"all"``, groups of input ports sharing one scale, or ``None``."""
        return self.attributes.get("unified_scales")


@dataclass(frozen=True)
class HardwareConfig:
    """A device's quantization rules, read from a hw_config file.

    :param target_device: the requested device, normalised (``VPU`` -> ``NPU``).
    :param primary_bitwidth: the device's main bit width (8; GNA 16).
    :param input_priority_types: operation types whose input quantizer wins when quantizers meet.
    :param quantizers: read-only mapping quantizer name -> its specs in priority order.
    :param operations: one entry per operation type, in file order.
    """

    target_device: str
    primary_bitwidth: int
    input_priority_types: tuple[str, ...]
    quantizers: Mapping[str, tuple[QuantizerSpec, ...]]
    operations: tuple[HwOperation, ...]

    def op_spec(self, type_name: str) -> HwOperation | None:
        """Return the entry for an operation type.

        :param type_name: OpenVINO type name, e.g. ``"Convolution"``.
        :return: the entry, or ``None`` if the device does not list the type (such operations
            are neither quantized nor quantization-agnostic).
        """
        for op in self.operations:
            if op.type == type_name:
                return op
        return None

    def unified_scale_types(self) -> set[str]:
        """Operation types whose quantized inputs must share scales (e.g. ``Concat``)."""
        return {op.type for op in self.operations if op.unified_scales is not None}

    def quantizable_types(self) -> set[str]:
        """Operation types with at least one quantized input."""
        return {op.type for op in self.operations if op.quantizable}

    def agnostic_types(self) -> set[str]:
        """Operation types listed without any quantization (``MaxPool``, ``Reshape``, ``Concat``
        on CPU): a FakeQuantize may be moved through them. See :meth:`unified_scale_types` for
        those whose inputs must share one scale."""
        return {op.type for op in self.operations if not op.quantizable and not op.outputs}


def _expand(raw: Mapping[str, Any]) -> tuple[QuantizerSpec, ...]:
    modes = raw["mode"] if isinstance(raw["mode"], list) else [raw["mode"]]
    grans = raw["granularity"] if isinstance(raw["granularity"], list) else [raw["granularity"]]
    return tuple(QuantizerSpec(bits=raw["bits"], mode=m, granularity=g,
                               level_low=raw.get("level_low"), level_high=raw.get("level_high"),
                               unified_zeropoint=raw.get("unified_zeropoint", False))
                 for m in modes for g in grans)


def _resolve_refs(value: Any, quantizers: Mapping[str, tuple[QuantizerSpec, ...]],
                  path: list, source: str, problems: list[str]) -> tuple[QuantizerSpec, ...]:
    items: Iterable[Any] = value if isinstance(value, list) else [value]
    specs: list[QuantizerSpec] = []
    for item in items:
        if isinstance(item, str):
            if item not in quantizers:
                problems.append(f"{source}: {format_key_path(path)}: unknown quantizer "
                                f"{item!r}; expected one of: {', '.join(quantizers)}")
                continue
            new = quantizers[item]
        else:
            new = _expand(item)
        specs.extend(s for s in new if s not in specs)
    return tuple(specs)


def _check_levels(name: str, raw: Mapping[str, Any], source: str, problems: list[str]) -> None:
    low, high = raw.get("level_low"), raw.get("level_high")
    if low is not None and high is not None and low >= high:
        problems.append(f"{source}: config.quantization.{name}.level_high: value {high} is not "
                        f"above level_low {low}; expected level_high > level_low")


def parse_hardware_config(data: Any, source: str, target_device: str | None = None
                          ) -> HardwareConfig:
    """Validate a parsed hw_config document and build the :class:`HardwareConfig`.

    :param data: the parsed JSON document.
    :param source: file name used in messages.
    :param target_device: device to record (default: the file's ``target_device``).
    :return: the frozen hardware config.
    :raises ConfigError: listing every schema or reference problem.
    """
    raise_problems(schema_problems(data, "hw_config.schema.json", source))
    problems: list[str] = []
    raw_quantizers = data["config"]["quantization"]
    for name, raw in raw_quantizers.items():
        _check_levels(name, raw, source, problems)
    quantizers = {name: _expand(raw) for name, raw in raw_quantizers.items()}
    operations: list[HwOperation] = []
    seen: set[str] = set()
    for index, op in enumerate(data["operations"]):
        if op["type"] in seen:
            problems.append(f"{source}: operations[{index}].type: duplicate type "
                            f"{op['type']!r}; expected each operation type once")
        seen.add(op["type"])
        quant = op.get("quantization", {})
        refs = {role: _resolve_refs(quant[role], quantizers,
                                    ["operations", index, "quantization", role], source, problems)
                for role in ("activations", "weights", "outputs") if role in quant}
        operations.append(HwOperation(type=op["type"], attributes=freeze(op.get("attributes", {})),
                                      **refs))
    raise_problems(problems)
    device = target_device or data["target_device"]
    return HardwareConfig(
        target_device="NPU" if device == "VPU" else device,
        primary_bitwidth=data.get("primary_bitwidth", 8),
        input_priority_types=tuple(data.get("input_priority_types", ())),
        quantizers=MappingProxyType(quantizers),
        operations=tuple(operations),
    )


def load_hardware_config(target_device: str, path: Path | None = None) -> HardwareConfig:
    """Load the hardware config of a device (or a custom hw_config file).

    :param target_device: ``ANY``, ``CPU``, ``CPU_SPR``, ``GPU``, ``NPU`` (``VPU``), ``GNA``,
        ``GNA3`` or ``GNA3.5``.
    :param path: optional custom file in the same format (comments allowed); default: the
        shipped ``pot_cli/hw_configs/<device>.json``.
    :return: the frozen hardware config, ``target_device`` normalised.
    :raises ConfigError: unknown device, unreadable file, or a file that breaks the schema.
    """
    if target_device not in DEVICE_FILES:
        raise ConfigError(f"compression.target_device: unknown device {target_device!r}"
                          f"{did_you_mean(target_device, DEVICE_FILES)}; expected one of: "
                          f"{', '.join(DEVICE_FILES)}")
    if path is None:
        resource = resources.files("pot_cli").joinpath("hw_configs", DEVICE_FILES[target_device])
        source, reader = f"hw_configs/{DEVICE_FILES[target_device]}", resource.read_text
    else:
        source, reader = str(path), Path(path).read_text
    try:
        text = reader(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read hardware config: {e}") from None
    try:
        data = json.loads(strip_json_comments(text, source))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: line {e.lineno}, column {e.colno}: {e.msg}") from None
    return parse_hardware_config(data, source, target_device)
