"""The mixed-precision search shared by ONNX INT8, TensorRT Q/DQ and Core ML w4, on a made-up error model."""

from litetext.calibration.search import keep_most_sensitive

# Each group's error when it alone is reduced; a candidate's error is the sum over the groups it reduces.
ERRORS = {"a": 0.001, "b": 0.05, "c": 0.02, "d": 0.0001, "e": 0.03}


def run(target: float, errors=ERRORS):
    calls = []

    def figures_keeping(kept):
        calls.append(list(kept))
        return {"error": sum(e for g, e in errors.items() if g not in kept)}

    result = keep_most_sensitive(sorted(errors), figures_keeping, lambda g: errors[g],
                                 lambda f: f["error"] <= target)
    return result, calls


def test_keeps_the_fewest_most_sensitive_groups():
    result, calls = run(target=0.025)
    assert result.kept == ["b", "e"]  # 0.05 and 0.03 kept: 0.0211 left; keeping only b leaves 0.0511
    assert result.figures["error"] == sum(ERRORS[g] for g in "acd")
    assert result.sensitivity == ERRORS
    assert len(calls) <= 1 + 1 + 3  # all reduced, all kept, then a bisection over 5 (not one per group)
    result, _ = run(target=0.0012)  # needs everything but d and a... a alone leaves 0.0011
    assert result.kept == ["b", "e", "c"]


def test_nothing_kept_when_the_target_is_met():
    result, calls = run(target=1.0)
    assert result.kept == [] and result.sensitivity == {} and calls == [[]]


def test_everything_kept_when_nothing_meets_the_target():
    result, _ = run(target=-1.0)
    assert result.kept == ["b", "e", "c", "a", "d"] and result.figures["error"] == 0.0
