from salad_ray.config import InterleaveConfig
from salad_ray.spoken import plan_text, sample_id, speak

TEXT = "Rivers carve their valleys slowly, grain by grain, over many thousands of patient years of rain."


def test_plans_and_ids_are_deterministic(tokenizer, espeak):
    config = InterleaveConfig(text_words=(3, 5), speech_words=(2, 4))
    a = plan_text("id1", TEXT, tokenizer, tokenizer.bos_token_id, config)
    assert a == plan_text("id1", TEXT, tokenizer, tokenizer.bos_token_id, config)
    assert sample_id("id1", "en-us", {"speed": 165}) == sample_id("id1", "en-us", {"speed": 165})
    assert sample_id("id1", "en-us", {"speed": 165}) != sample_id("id1", "en-gb", {"speed": 165})
    assert sample_id("id1", "en-us", {"speed": 165}) != sample_id("id1", "en-us", {"speed": 170})
    assert sample_id("id1", "en-us", {"speed": 165}) != sample_id("id2", "en-us", {"speed": 165})
    sample = speak(a, espeak, "en-us", {})
    assert len(sample.audio) == sum(s.speech for s in sample.spans) == len(a.speech_texts())
    assert sample.ids == a.ids
