"""Broken data and model files: a one-line error naming the file, the split and the first bad sample,
exit code 2; never a traceback."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.adversarial.conftest import Sandbox, recipe


def _arrays(count: int = 40, **changes: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.random((count, 1, 8, 8), dtype=np.float32), "y": rng.integers(0, 10, count), **changes}


def _run(box: Sandbox, arrays: dict | bytes) -> tuple[Path, str]:
    data = box.root / "data.npz"
    if isinstance(arrays, bytes):
        data.write_bytes(arrays)
    else:
        np.savez(data, **arrays)
    path = box.write("recipe.yaml", recipe(data={"source": "npz", "path": "data.npz"}))
    outcome = box.cli("run", path, "--out", box.out)
    assert outcome.code == 2, outcome.stdout[-2000:] + outcome.stderr
    line = outcome.one_line_error()
    assert line.startswith(f"error: {path}: data"), line
    return path, line


def _valid_npz_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **_arrays())
    return buffer.getvalue()


@pytest.mark.parametrize(("arrays", "message"), [
    (_valid_npz_bytes()[:300], "cannot read data.npz as .npz"),  # truncated
    (b"PK\x03\x04" + b"\x00" * 64, "cannot read data.npz as .npz"),
    (b"garbage that is no zip at all", "cannot read data.npz as .npz"),
    (_arrays(0), "has 0 samples: a train, a calibration and a test split need at least 3"),
    (_arrays(2), "has 2 samples"),
    (_arrays(y=np.arange(7)), "has 40 samples but 7 labels"),
    ({"z": np.zeros(3)}, "expected 'x' (and 'y')"),
    (_arrays(y=np.full(40, 57)), "has label 57, outside the model's 10 outputs (0 to 9)"),
    (_arrays(y=np.full(40, -1)), "has label -1, outside the model's 10 outputs"),
    (_arrays(y=np.full(40, 0.5)), "labels are float64, not integer class indices"),
    (_arrays(x=np.zeros((40, 2, 8, 8), dtype=np.float32)), "samples have shape (2, 8, 8)"),
    (_arrays(x=np.full((40, 1, 8, 8), np.nan, dtype=np.float32)), "holds NaN or infinite values (28 of 28 samples"),
    (_arrays(x=np.where(np.arange(40)[:, None, None, None] == 5, np.inf,
                        np.random.default_rng(1).random((40, 1, 8, 8))).astype(np.float32)), "holds NaN or infinite"),
    ({"x": np.full((40, 1, 8, 8), "a"), "y": np.zeros(40, dtype=int)},
     "samples are <U1 but model.input.dtype is float32"),
])
def test_broken_data_is_one_line_exit_2(box: Sandbox, arrays: dict | bytes, message: str) -> None:
    _, line = _run(box, arrays)
    assert message in line, line


def test_a_crc_corrupt_npz(box: Sandbox) -> None:
    raw = bytearray(_valid_npz_bytes())
    with zipfile.ZipFile(__import__("io").BytesIO(bytes(raw))) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + 200
    raw[start:start + 8] = b"\xff" * 8  # damage the stored bytes: the CRC no longer matches
    _, line = _run(box, bytes(raw))
    assert "cannot read data.npz as .npz" in line


def test_a_pickled_npz_is_refused_unread(box: Sandbox) -> None:
    marker = box.tmp / "ran"
    data = box.root / "data.npz"
    np.savez(data, x=np.array([object()] * 3, dtype=object))
    path = box.write("recipe.yaml", recipe(data={"source": "npz", "path": "data.npz"}))
    outcome = box.cli("run", path, "--out", box.out)
    assert outcome.code == 2 and "Object arrays cannot be loaded when allow_pickle=False" in outcome.one_line_error()
    assert not marker.exists()


@pytest.mark.parametrize(("name", "content", "message"), [
    ("m.onnx", b"\x08\x01garbage that is no protobuf", "not a readable ONNX model"),
    ("m.onnx", b"", "m.onnx: not an ONNX model: it has no graph"),
    ("m.tflite", b"garbage", "m.tflite: not a TFLite model (no TFL3 flatbuffer identifier)"),
    ("m.pt2", b"garbage", "--trust"),
])
def test_garbage_model_files_in_bench(box: Sandbox, name: str, content: bytes, message: str) -> None:
    model = box.write(name, content)
    outcome = box.cli("bench", model, "--min-runs", "1", "--min-seconds", "0", "--warmup", "0")
    assert outcome.code in (2, 3), outcome.stdout
    assert message in outcome.one_line_error()


def test_a_truncated_openvino_bin_keeps_the_runtime_cause(box: Sandbox) -> None:
    import torch

    from compress import formats
    from compress.zoo.digits import DigitsCNN

    ir = formats.export("openvino", DigitsCNN(width=4).eval(), torch.rand(2, 1, 8, 8), box.root / "ov").path
    weights = ir / "model.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    outcome = box.cli("bench", ir / "model.xml", "--min-runs", "1", "--min-seconds", "0", "--warmup", "0")
    assert outcome.code == 3
    line = outcome.one_line_error()
    assert "Exception from src/" not in line.split("openvino", 1)[-1][:40]  # the source location alone says nothing
    assert "weights" in line.lower() or "bin" in line.lower(), line  # OpenVINO's own reason is kept
