"""Our decoding loop (musilingo_cli.model.decoding) against transformers' `generate` and warpers, on tiny
random models: same tokens under greedy, same filtered distribution under sampling, EOS and
min_new_tokens handled the same way, and a reused static cache leaves nothing behind."""

import pytest
import torch
from model_helpers import build_model
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from musilingo_cli.model.decoding import Decoder, choose_tokens, filter_logits
from musilingo_cli.model.generation import GenerationSettings, postprocess

GREEDY = GenerationSettings.from_preset("greedy", max_new_tokens=30)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("decoding"))


@pytest.fixture(scope="module")
def features(model):
    torch.manual_seed(5)
    lengths = [10, 25, 4]  # seconds -> 3, 6 and 1 audio tokens: prompts of three widths (left padding)
    return [model.encode(torch.randn(1, 24000 * s) * 0.1)[0] for s in lengths]


QUESTIONS = ["What genre is this?", "Describe the audio in detail.", "Tempo?"]


def transformers_answers(model, features, questions, settings):
    """The same batch answered by transformers' `generate` (dynamic cache, its own loop)."""
    batch = model.build_batch(features, questions, padding_side="left")
    out = model._transformers_generate(batch.inputs_embeds, batch.attention_mask, settings)
    return [postprocess(t, model.config.end_sym) for t in model.tokenizer.batch_decode(out, skip_special_tokens=True)]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.1, 50, 0.5), (0.7, 5, 0.9), (1.0, 0, 1.0), (1.3, 0, 0.3)])
def test_filter_logits_equals_transformers_warpers(temperature, top_k, top_p):
    torch.manual_seed(0)
    logits = torch.randn(6, 80) * 3
    logits[0, :10] = 2.0  # ties at the cut
    settings = GenerationSettings.from_preset("official", temperature=temperature, top_k=top_k, top_p=top_p)
    theirs = TemperatureLogitsWarper(temperature)(None, logits)
    if top_k:
        theirs = TopKLogitsWarper(top_k)(None, theirs)
    if top_p < 1.0:
        theirs = TopPLogitsWarper(top_p)(None, theirs)
    ours = filter_logits(logits, settings)
    assert torch.equal(ours.isinf(), theirs.isinf())
    torch.testing.assert_close(ours[~ours.isinf()], theirs[~theirs.isinf()], rtol=0, atol=0)


def test_draws_follow_the_filtered_distribution():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]])
    settings = GenerationSettings.from_preset("official", temperature=1.0, top_k=5, top_p=0.8)
    expected = filter_logits(logits, settings).softmax(-1)[0]
    torch.manual_seed(0)
    draws = choose_tokens(logits.expand(40000, -1), settings)
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert (freq[expected == 0] == 0).all()  # filtered tokens are never drawn
    torch.testing.assert_close(freq, expected, rtol=0, atol=0.01)


def test_greedy_batch_with_left_padding_equals_transformers_generate(model, features):
    ours = model.generate(features, QUESTIONS, GREEDY)
    assert ours == transformers_answers(model, features, QUESTIONS, GREEDY)
    assert len({len(a) for a in ours}) > 1  # real, different answers, not a degenerate case
    for k in range(3):  # and each row equals the row answered alone
        assert model.generate([features[k]], [QUESTIONS[k]], GREEDY) == [ours[k]]


def test_cache_is_reused_for_a_repeated_shape_and_keeps_nothing_from_the_last_batch(model, features):
    decoder = model._decoder(False)
    first = model.generate(features, QUESTIONS, GREEDY)
    cache = decoder._cache
    other = model.generate(features[::-1], QUESTIONS[::-1], GREEDY)  # same shape, other contents
    assert decoder._cache is cache
    assert model.generate(features, QUESTIONS, GREEDY) == first
    assert other == first[::-1]
    model.generate(features[:2], QUESTIONS[:2], GREEDY)
    assert decoder._cache is not cache and decoder._full_mask.shape[0] == 2


def test_eos_ends_a_row_and_min_new_tokens_holds_it_off(tmp_path):
    model = build_model(tmp_path, seed=3)
    model.llm.lm_head.weight.data.zero_()  # all logits equal: greedy picks id 0 unless it is banned
    model.llm.generation_config.eos_token_id = 0
    pad = model.tokenizer.pad_token_id
    batch = model.build_batch([torch.randn(3, 32)], ["Tempo?"], padding_side="left")
    settings = GenerationSettings.from_preset("greedy", max_new_tokens=6, min_new_tokens=3)
    ours = Decoder(model.llm).generate(batch.inputs_embeds, batch.attention_mask, settings, [0], pad)
    theirs = model.llm.generate(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        pad_token_id=pad,
        **settings.generate_kwargs(),
    )
    assert theirs[0].tolist() == [1, 1, 1, 0]  # three banned-EOS tokens, then EOS
    assert ours[0].tolist() == [1, 1, 1, 0] + [pad] * 2  # the same; after EOS only padding


def test_stop_string_ends_generation_early(model, features):
    stops_at = []

    def stop(tails):  # ends every row once 10 tokens exist: the loop must notice at its next check
        stops_at.append(len(tails[0]))
        return [True] * len(tails)

    batch = model.build_batch(features, QUESTIONS, padding_side="left")
    settings = GenerationSettings.from_preset("greedy", max_new_tokens=100)
    out = Decoder(model.llm).generate(batch.inputs_embeds, batch.attention_mask, settings, [], 0, stop)
    assert out.shape[1] < 100 and stops_at  # stopped at the first check, long before the limit


def test_unknown_mode_is_refused(model):
    with pytest.raises(ValueError, match="unknown decoding mode 'fast'"):
        Decoder(model.llm, "fast")


def test_compiled_step_gives_the_eager_tokens(model, features):
    batch = model.build_batch(features, QUESTIONS, padding_side="left")
    args = (batch.inputs_embeds, batch.attention_mask, GREEDY, model._eos_ids(), model.tokenizer.pad_token_id)
    eager = Decoder(model.llm).generate(*args)
    compiled = Decoder(model.llm, "compiled")
    assert torch.equal(compiled.generate(*args), eager)
    assert torch.equal(compiled.generate(*args), eager)  # the second run replays the compiled step
