"""Shared helpers of the reliability tests (issue 5).

Each test runs ``pot`` in process (Click's ``CliRunner``, fast) or in a subprocess (signals, peak
memory, reruns in a fresh process) and checks four things: the exit code, the message (one
``ERROR:`` line naming the file, key or layer, no traceback), that the inputs are byte-identical
afterwards, and that no partial output exists (no ``optimized/`` folder, no temporary folder).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from click.testing import CliRunner

import models
from pot_cli.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def pot(*args):
    """Run ``pot args`` in process; returns Click's result (``exit_code``, ``stdout``, ``stderr``)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def pot_env() -> dict[str, str]:
    """Environment for ``python -m pot_cli`` subprocesses: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def pot_proc(*args, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m pot_cli args`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "pot_cli", *[str(a) for a in args]], capture_output=True,
                          text=True, timeout=timeout, env=pot_env(), cwd=cwd)


def run_measured(args, *, cwd=None, timeout: float = 300) -> tuple[int, str, float]:
    """Run a command and return ``(exit code, stderr, peak RSS in MiB)`` of that process alone.

    ``os.wait4`` reports the resource usage of exactly this child, so earlier children of the test
    process do not count.
    """
    with open(os.devnull, "wb") as null, subprocess.Popen([str(a) for a in args], stdout=null,
                                                          stderr=subprocess.PIPE, env=pot_env(), cwd=cwd) as p:
        err = p.stderr.read().decode("utf-8", "replace")
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                raise TimeoutError(f"{args} did not finish in {timeout} s")
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, err, usage.ru_maxrss / 1024.0


def snapshot(*roots) -> dict[str, str]:
    """``path -> sha256`` of every file under ``roots`` (files or folders)."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def error_line(stderr: str) -> str:
    """The single ``ERROR:`` line of ``stderr`` (without the prefix); fails on a traceback or on
    anything but exactly one error line."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("ERROR: ")]
    assert len(lines) == 1, stderr
    return lines[0][len("ERROR: "):]


def leftovers(out: Path) -> list[Path]:
    """Partial output under ``out``: ``optimized`` folders and hidden temporary/backup folders."""
    out = Path(out)
    if not out.exists():
        return []
    return sorted(p for p in out.rglob("*") if p.name == "optimized" or p.name.startswith(".optimized"))


def assert_failed_cleanly(code: int, stderr: str, expected_code: int, fragments, out: Path,
                          before: dict[str, str]) -> str:
    """Exit code, one error line holding every fragment, inputs unchanged, no partial output.

    :return: the error line.
    """
    assert code == expected_code, stderr
    line = error_line(stderr)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert snapshot(*{Path(p) for p in before}) == before, "an input file changed"
    assert leftovers(out) == [], leftovers(out)
    return line


def model_with_if(seed: int = 0) -> ov.Model:
    """``x [1,3,8,8] -> conv1 -> bias1 -> relu1 -> If(mean > 0: then_conv | else: relu) -> conv2``.

    The If's bodies are separate graphs; the main graph holds ``conv1`` and ``conv2``.
    """
    rng = models._rng(seed)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = models.add_bias(models.conv(x, models.conv_weights(rng, 4, 3), "conv1"), models.bias_values(rng, 4), "bias1")
    y = models._named(ops.relu(y), "relu1")
    mean = ops.reduce_mean(y, ops.constant(np.array([0, 1, 2, 3], dtype=np.int64)), False)
    cond = models._named(ops.greater(mean, ops.constant(np.float32(0))), "cond")
    p_then = ops.parameter([1, 4, 8, 8], ov.Type.f32, name="then_x")
    then_out = ops.result(models.conv(p_then, models.conv_weights(rng, 4, 4), "then_conv"))
    p_else = ops.parameter([1, 4, 8, 8], ov.Type.f32, name="else_x")
    else_out = ops.result(models._named(ops.relu(p_else), "else_relu"))
    branch = ops.if_op(cond.output(0))
    branch.set_then_body(ov.Model([then_out], [p_then], "then"))
    branch.set_else_body(ov.Model([else_out], [p_else], "else"))
    branch.set_input(y.output(0), p_then, p_else)
    out = branch.set_output(then_out, else_out)
    models._named(branch, "if")
    z = models.conv(out, models.conv_weights(rng, 2, 4), "conv2")
    return ov.Model([ops.result(z)], [x], "with_if")


def op_names(xml: Path, op_type: str) -> list[str]:
    """Friendly names of the ``op_type`` ops of the main graph of a saved IR."""
    model = ov.Core().read_model(str(xml))
    return sorted(o.get_friendly_name() for o in model.get_ops() if o.get_type_name() == op_type)


def model_with_loop(seed: int = 0, body_conv: bool = False) -> ov.Model:
    """``x [1,3,8,8] -> conv1 -> relu1 -> Loop(2 iterations: h = relu(h * 0.5)) -> conv2``.

    The Loop body is a separate graph; the main graph holds ``conv1`` and ``conv2``. With
    ``body_conv`` the body computes ``h = relu(body_conv(h))`` (a quantizable op) instead.
    """
    rng = models._rng(seed)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = models._named(ops.relu(models.conv(x, models.conv_weights(rng, 4, 3), "conv1")), "relu1")
    h = ops.parameter([1, 4, 8, 8], ov.Type.f32, name="h")
    body_cond = ops.result(ops.constant(np.array(True)))
    step = models.conv(h, models.conv_weights(rng, 4, 4), "body_conv") if body_conv \
        else ops.multiply(h, ops.constant(np.float32(0.5)))
    body_h = ops.result(ops.relu(step))
    loop = ops.loop(ops.constant(np.int64(2)), ops.constant(np.array(True)))
    loop.set_function(ov.Model([body_cond, body_h], [h], "body"))
    loop.set_special_body_ports([-1, 0])
    loop.set_merged_input(h, y.output(0), body_h.output(0))
    out = loop.get_iter_value(body_h.output(0), -1)
    models._named(loop, "loop")
    z = models.conv(out, models.conv_weights(rng, 2, 4), "conv2")
    return ov.Model([ops.result(z)], [x], "with_loop")
