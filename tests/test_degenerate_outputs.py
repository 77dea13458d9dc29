"""Every check can fail: each metric, each agreement and each parity figure on outputs that are zero,
constant, NaN or infinite, with the expected figures computed here with plain numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compress import metrics, tasks
from compress.recipe import ParityThresholds
from compress.verify import parity

RNG = np.random.default_rng(0)
REFERENCE = RNG.standard_normal((8, 5)).astype(np.float32)  # 8 samples, 5 classes, all different
LABELS = REFERENCE.argmax(axis=1)
LOOSE = ParityThresholds(min_cosine=-1.0, min_agreement=0.0)  # thresholds no figure can miss


def _degenerate() -> dict[str, np.ndarray]:
    nan = REFERENCE.copy()
    nan[3, 2] = np.nan
    inf = REFERENCE.copy()
    inf[0, 0] = np.inf
    return {"zeros": np.zeros_like(REFERENCE), "constant": np.tile(REFERENCE[:1], (8, 1)), "nan": nan, "inf": inf,
            "all_nan": np.full_like(REFERENCE, np.nan)}


def _numpy_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Per-sample cosine by its definition; 0 where a side is zero or not finite."""
    values = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True):
        if not (np.isfinite(x).all() and np.isfinite(y).all()) or not np.linalg.norm(x) or not np.linalg.norm(y):
            values.append(0.0)
        else:
            values.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
    return float(np.mean(values))


@pytest.mark.parametrize("case", ["zeros", "constant", "nan", "inf", "all_nan"])
def test_cosine_and_agreement_of_degenerate_outputs(case: str) -> None:
    outputs = _degenerate()[case]
    assert tasks.mean_cosine(outputs, REFERENCE) == pytest.approx(_numpy_cosine(outputs, REFERENCE))
    assert tasks.mean_cosine(outputs, REFERENCE) < 0.99
    finite = np.isfinite(outputs).all(axis=1)
    expected = float(((outputs.argmax(axis=1) == REFERENCE.argmax(axis=1)) & finite).mean())
    assert tasks.agreement("classification", outputs, REFERENCE) == pytest.approx(expected)
    assert tasks.agreement("embedding", outputs, REFERENCE) == pytest.approx(_numpy_cosine(outputs, REFERENCE))
    if case == "zeros":
        assert tasks.mean_cosine(outputs, REFERENCE) == 0.0  # never 1: a zero vector agrees with nothing
        assert tasks.mean_cosine(outputs, outputs) == 1.0  # two zero vectors are the same output


@pytest.mark.parametrize("case", ["zeros", "constant", "nan", "inf", "all_nan"])
def test_every_metric_of_degenerate_outputs(case: str) -> None:
    outputs = _degenerate()[case]
    finite = np.isfinite(outputs).all(axis=1)
    assert metrics.top1(outputs, LABELS) == pytest.approx(float(((outputs.argmax(1) == LABELS) & finite).mean()))
    assert metrics.top1(outputs, LABELS) < 1.0
    assert metrics.cosine(outputs, None, reference=REFERENCE) == pytest.approx(_numpy_cosine(outputs, REFERENCE))
    ppl = metrics.perplexity(outputs, LABELS)
    if finite.all():
        logits = outputs.astype(np.float64)
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        assert ppl == pytest.approx(math.exp(-log_softmax[np.arange(8), LABELS].mean()))
    else:
        assert math.isnan(ppl)  # and NaN fails every budget and gate


def test_a_language_model_token_with_nan_logits_never_agrees() -> None:
    reference = RNG.standard_normal((2, 3, 4))
    outputs = reference.copy()
    outputs[1, 2, 0] = np.nan
    assert tasks.agreement("language_model", outputs, reference) == pytest.approx(5 / 6)
    assert metrics.top1(outputs, reference.argmax(-1)) == pytest.approx(5 / 6)


@pytest.mark.parametrize(("case", "failure"), [
    ("zeros", "outputs are the same for every sample while the reference's vary (a dead model)"),
    ("constant", "outputs are the same for every sample while the reference's vary (a dead model)"),
    ("nan", "outputs are not finite (1 of 8 samples)"),
    ("inf", "outputs are not finite (1 of 8 samples)"),
    ("all_nan", "outputs are not finite (8 of 8 samples)"),
])
def test_parity_fails_degenerate_outputs_even_with_thresholds_nothing_misses(case: str, failure: str) -> None:
    outputs = _degenerate()[case]
    check = parity(outputs, REFERENCE, "ref", LOOSE)
    assert not check.passed and failure in check.failures
    assert check.cosine == pytest.approx(_numpy_cosine(outputs, REFERENCE))
    difference = np.abs(outputs.astype(np.float64) - REFERENCE)
    if np.isfinite(difference).all():
        assert check.max_abs_error == pytest.approx(float(difference.max()))
    else:
        assert not math.isfinite(check.max_abs_error)


def test_parity_of_real_outputs_passes_and_a_shape_mismatch_fails() -> None:
    close = REFERENCE + 1e-4
    assert parity(close, REFERENCE, "ref", ParityThresholds(max_abs_error=1e-3, min_cosine=0.999,
                                                            min_agreement=1.0)).passed
    check = parity(REFERENCE[:, :4], REFERENCE, "ref", LOOSE)
    assert not check.passed and check.failures == ["outputs have shape (8, 4), the reference (8, 5)"]
    bad_reference = parity(REFERENCE, _degenerate()["nan"], "ref", LOOSE)
    assert not bad_reference.passed and "the reference ref's outputs are not finite" in bad_reference.failures


def test_a_single_sample_is_never_called_dead() -> None:
    assert not tasks.is_dead(np.zeros((1, 5)), REFERENCE[:1])
    assert tasks.is_dead(np.zeros((2, 5)), REFERENCE[:2])
    assert not tasks.is_dead(REFERENCE, REFERENCE)
    assert not tasks.is_dead(np.ones((3, 2)), np.ones((3, 2)))  # both constant: nothing to tell apart
