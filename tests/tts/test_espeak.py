import pytest

from salad_ray.audio import SAMPLE_RATE
from salad_ray.tts.base import SynthesisError


def test_espeak_speaks_each_span_at_16k(espeak):
    short, long = espeak.synthesize(
        ["Hello.", "This sentence is a good deal longer than the first one."], "en-us"
    )
    assert short.dtype.name == "float32" and short.ndim == 1
    assert 0.2 * SAMPLE_RATE < len(short) < len(long) < 6 * SAMPLE_RATE
    assert abs(short).max() > 0.05  # not silence


def test_espeak_voices_differ_and_errors_name_the_problem(espeak):
    a = espeak.synthesize(["the same words"], "en-us")[0]
    b = espeak.synthesize(["the same words"], "en-us+f3")[0]
    assert len(a) != len(b) or abs(a - b).max() > 0.01
    with pytest.raises(SynthesisError, match="voice 'xx-nope'"):
        espeak.synthesize(["hello"], "xx-nope")
    with pytest.raises(SynthesisError, match="empty"):
        espeak.synthesize(["   "], "en-us")
    assert len(espeak.synthesize(["-- starts with dashes"], "en-us")[0]) > 0
