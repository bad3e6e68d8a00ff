"""Case 4: output. A bad output path, a read-only or full disk, or Ctrl-C end in a clear message
and leave no partial IR and no temporary folder; an existing output is never damaged."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from pot_cli.graph import model as graph_model
from reliability.helpers import assert_failed_cleanly, error_line, leftovers, pot, pot_env, snapshot


def _quantize(ws, out, *extra, data=None):
    return pot("-q", "default", "-m", ws.xml, "--data-source", data or ws.images, "--output-dir", out, *extra)


def test_output_path_that_is_a_file(ws):
    target = ws.root / "results"
    target.write_text("I am a file")
    before = {**ws.before(), **snapshot(target)}
    for args, where in ((["-d"], f"{target}: output folder is a file"), ([], f"{target}: output folder is a file")):
        result = _quantize(ws, target, *args)
        assert_failed_cleanly(result.exit_code, result.stderr, 1, [where, "expected a folder"], ws.root / "none",
                              before)
    inside = target / "sub"
    result = _quantize(ws, inside, "-d")
    assert_failed_cleanly(result.exit_code, result.stderr, 1,
                          [f"{inside}: output folder is inside {target}, which is a file"], ws.root / "none", before)
    assert target.read_text() == "I am a file"


def test_output_path_not_writable(ws, tiny_tmpfs):
    read_only = tiny_tmpfs("ro", read_only=True)
    before = ws.before()
    result = _quantize(ws, read_only / "results", "-d")
    assert_failed_cleanly(result.exit_code, result.stderr, 1,
                          [f"{read_only / 'results'}: output folder is not writable ({read_only}: read-only file "
                           "system); expected a writable folder for --output-dir"], read_only, before)
    assert list(read_only.iterdir()) == []


def _large_model(ws) -> Path:
    """Two 3x3 convolutions, 3 -> 128 -> 128 channels: ~150 KB of INT8 weights (more than 64 KB)."""
    rng = models._rng(0)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = models._named(ops.relu(models.conv(x, models.conv_weights(rng, 128, 3), "conv1")), "relu1")
    y = models.conv(y, models.conv_weights(rng, 128, 128), "conv2")
    xml, _ = models.save_ir(ov.Model([ops.result(y)], [x], "large"), ws.inputs / "large", "large")
    return xml


def test_full_disk_leaves_no_partial_ir_and_no_temp_folder(ws, tiny_tmpfs):
    disk = tiny_tmpfs("disk", size="64k")
    xml = _large_model(ws)
    before = ws.before()
    for args in (["-d"], []):
        out = disk / ("direct" if args else "runs")
        result = pot("-q", "default", "-m", xml, "--data-source", ws.images, "--output-dir", out, *args)
        line = assert_failed_cleanly(result.exit_code, result.stderr, 1,
                                     ["optimized: cannot write the output model: no space left on device"], disk,
                                     before)
        assert line.startswith(str(out)), line
        assert not [p for p in disk.rglob("*") if p.name.startswith(".")], list(disk.rglob("*"))
    # a disk already full: even log.txt cannot be written; one warning, one error, no traceback
    _fill(disk)
    result = pot("-q", "default", "-m", xml, "--data-source", ws.images, "--output-dir", disk / "full", "-d")
    assert_failed_cleanly(result.exit_code, result.stderr, 1, ["no space left on device"], disk, before)
    assert "cannot write the log file (No space left on device); logging to the console only" in result.stderr


def _fill(disk: Path) -> None:
    """Fill the file system of ``disk`` to the last byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0


def test_existing_output_gets_a_new_run_folder(ws):
    first = _quantize(ws, ws.out)
    assert first.exit_code == 0, first.stderr
    first_xml = Path(first.stdout.strip())
    kept = snapshot(first_xml.parent)
    second = _quantize(ws, ws.out)
    assert second.exit_code == 0, second.stderr
    second_xml = Path(second.stdout.strip())
    assert second_xml.parent.parent != first_xml.parent.parent  # a new timestamped folder
    assert snapshot(first_xml.parent) == kept
    assert len(list((ws.out / "tiny_DefaultQuantization").iterdir())) == 2


def test_direct_dump_replaces_the_old_model_only_when_the_new_one_is_complete(ws, monkeypatch):
    assert _quantize(ws, ws.out, "-d").exit_code == 0
    optimized = ws.out / "optimized"
    old = snapshot(optimized)
    before = ws.before()

    # 1. the new run fails before saving (no readable sample): the old model stays
    corrupt = ws.root / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes((ws.images / "img_000.png").read_bytes()[:50])
    result = _quantize(ws, ws.out, "-d", data=corrupt)
    assert result.exit_code == 1 and "no usable samples" in error_line(result.stderr)
    assert snapshot(optimized) == old

    # 2. writing fails half-way (a partial .bin, then an I/O error): the old model stays, no temp folder
    real_save = ov.save_model

    def failing_save(model, path, compress_to_fp16=True):
        Path(path).with_suffix(".bin").write_bytes(b"\0" * 10)
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp:1:\nsimulated I/O error\n")

    monkeypatch.setattr(graph_model.ov, "save_model", failing_save)
    result = _quantize(ws, ws.out, "-d")
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith(f"{optimized}: cannot write the output model: simulated I/O error")
    assert snapshot(optimized) == old
    assert sorted(p.name for p in ws.out.iterdir()) == ["log.txt", "optimized"]
    monkeypatch.setattr(graph_model.ov, "save_model", real_save)

    # 3. a complete new model replaces the old one; no backup or temp folder is left
    other = ws.root / "other_images"
    models.write_images(other, 12, (8, 8, 3), seed=5)
    result = _quantize(ws, ws.out, "-d", data=other)
    assert result.exit_code == 0, result.stderr
    assert snapshot(optimized) != old
    assert sorted(p.name for p in ws.out.iterdir()) == ["log.txt", "optimized"]
    assert ws.before() == before


@pytest.mark.parametrize("signum, code, message", [
    (signal.SIGINT, 130, "interrupted; no output written"),
    (signal.SIGTERM, 143, "terminated; no output written"),
])
def test_ctrl_c_or_sigterm_during_calibration_keeps_the_old_output(ws, signum, code, message):
    assert _quantize(ws, ws.out, "-d").exit_code == 0
    old = snapshot(ws.out / "optimized")
    listing = ws.inputs / "many.txt"
    names = sorted(p.name for p in ws.images.iterdir())
    listing.write_text("".join(f"images/{names[k % len(names)]}\n" for k in range(20000)))
    before = ws.before()
    config = ws.root / "many.json"
    config.write_text('{"model": {"model": "%s"}, "engine": {"data_source": "%s"}, "compression": {"algorithms": '
                      '[{"name": "DefaultQuantization", "params": {"stat_subset_size": 20000}}]}}' % (ws.xml, listing))
    proc = subprocess.Popen([sys.executable, "-m", "pot_cli", "-c", str(config), "--output-dir", str(ws.out), "-d"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pot_env())
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stderr:
        seen.append(line)
        if "Collecting statistics" in line:
            time.sleep(0.3)  # well inside the ~10 s of statistics collection
            proc.send_signal(signum)
            break
        assert time.monotonic() < deadline, "".join(seen)
    out, err = proc.communicate(timeout=60)
    stderr = "".join(seen) + err
    assert proc.returncode == code, stderr
    assert error_line(stderr) == message
    assert "Quantized model written" not in stderr and out == ""
    assert snapshot(ws.out / "optimized") == old
    assert sorted(p.name for p in ws.out.iterdir()) == ["log.txt", "optimized"]
    assert ws.before() == before
    assert not [p for p in ws.out.rglob("*") if p.name.startswith(".")]  # no temporary folder
    assert leftovers(ws.inputs) == []


@pytest.mark.parametrize("signum, code, message", [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "terminated"),
])
def test_a_signal_that_surfaces_wrapped_in_another_error_is_still_reported_as_the_signal(signum, code, message, capsys):
    """A signal that arrives while Python runs under an OpenVINO call comes back out as a
    ``SystemError``, which the engine wraps as an inference failure (CI once saw exit 1 for a
    SIGTERM during calibration). The session reports the signal, not the wrapper. (The handler is
    called directly: a real signal sent to the test process itself once crashed it after the
    whole suite had run; the subprocess test above sends real ones.)"""
    from pot_cli.cli import _session
    from pot_cli.errors import EngineError

    def infer(session):  # what the collector does with an error raised under start_async
        try:
            session.signals._raise(signum, None)  # the installed handler, as the signal would run it
        except BaseException as e:
            raise EngineError(f"inference failed during statistics collection: {e!r}") from e

    with _session("INFO") as session:
        assert signal.getsignal(signum) == session.signals._raise
        infer(session)
    assert session.code == code
    assert error_line(capsys.readouterr().err) == f"{message}; no output written"
    assert signal.getsignal(signum) is (signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
