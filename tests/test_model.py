"""Parity of our model with a plain re-implementation of the official algorithm
(zihaod/MusiLingo muvi_model.py: encode_audio, instruction_prompt_wrap, forward; qa.py answer)
on the same tiny random weights and inputs."""

import pytest
import torch
from model_helpers import build_model

from musilingo_cli.model.adapter import num_audio_tokens, pool_time
from musilingo_cli.model.generation import GenerationSettings, postprocess
from musilingo_cli.model.musilingo import IGNORE


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("core"))


@pytest.fixture(scope="module")
def waves():
    torch.manual_seed(3)
    return torch.randn(2, 24000 * 10) * 0.1  # two 10 s clips -> 749 frames -> 3 audio tokens


# --- the official algorithm, written out plainly ---
def official_encode_audio(model, waves):
    hubert = model.encoder.model
    hidden = hubert(input_values=waves, output_hidden_states=True).hidden_states
    x = torch.stack(hidden).transpose(0, 1).mean(-3)  # [B, T, D]
    b, t, d = x.shape
    w = 325
    avg_tmp = x[:, : t // w * w].reshape(b, t // w, w, d).mean(2)
    if t % w > 0:
        avg_tmp = torch.cat([avg_tmp, x[:, t // w * w :].mean(1, keepdim=True)], dim=1)
    return model.adapter.proj(avg_tmp)  # llama_proj


def official_wrap(model, audio_embeds, instructions):
    tok, embed = model.tokenizer, model.llm.get_input_embeddings()
    prompts = ["###Human: {} ###Assistant: ".format("<Audio><AudioHere></Audio> " + q) for q in instructions]
    befores, afters = zip(*[p.split("<AudioHere>") for p in prompts])
    tok.padding_side = "right"
    pb = tok(list(befores), return_tensors="pt", padding="longest", add_special_tokens=False)
    pa = tok(list(afters), return_tensors="pt", padding="longest", add_special_tokens=False)
    embeds = torch.cat([embed(pb.input_ids), audio_embeds, embed(pa.input_ids)], dim=1)
    atts = torch.cat(
        [pb.attention_mask, torch.ones(audio_embeds.shape[:2], dtype=torch.long), pa.attention_mask], dim=1
    )
    return embeds, atts


def official_loss(model, waves, instructions, answers):
    tok, embed = model.tokenizer, model.llm.get_input_embeddings()
    audio = official_encode_audio(model, waves)
    wrapped, atts = official_wrap(model, audio, instructions)
    text = [a + "###" for a in answers]
    t = tok(text, return_tensors="pt", padding="longest", truncation=True, max_length=160, add_special_tokens=False)
    targets = t.input_ids.masked_fill(t.input_ids == tok.pad_token_id, -100)
    targets = torch.cat([torch.full((len(answers), atts.shape[1] + 1), -100), targets], dim=1)
    bos = embed(torch.full((len(answers), 1), tok.bos_token_id))
    inputs = torch.cat([bos, wrapped, embed(t.input_ids)], dim=1)
    mask = torch.cat([atts[:, :1], atts, t.attention_mask], dim=1)
    return model.llm(inputs_embeds=inputs, attention_mask=mask, labels=targets).loss, targets


def official_answer(model, wave, instruction, max_new_tokens):
    audio = official_encode_audio(model, wave[None])
    wrapped, _ = official_wrap(model, audio, [instruction])
    bos = model.llm.get_input_embeddings()(torch.tensor([[model.tokenizer.bos_token_id]]))
    out = model.llm.generate(
        inputs_embeds=torch.cat([bos, wrapped], dim=1),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=model.tokenizer.pad_token_id,
    )
    text = model.tokenizer.decode(out[0], skip_special_tokens=True)
    return postprocess(text, "###")


# --- the tests ---
def test_features_and_loss_match_official(model, waves):
    features = model.encode(waves)
    questions = ["What genre is this?", "What genre is this?"]  # equal prompts: official pads inside them
    answers = ["It is rock.", "A calm piano piece with soft strings and a slow tempo."]
    ours = model(list(features), questions, answers)
    theirs, _ = official_loss(model, waves, questions, answers)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_generation_matches_official(model, waves):
    features = model.encode(waves)
    settings = GenerationSettings.from_preset("greedy", max_new_tokens=12)
    for i, q in enumerate(["What genre is this?", "Describe the audio in detail."]):
        assert model.generate([features[i]], [q], settings) == [official_answer(model, waves[i], q, 12)]


def test_labels_are_ignore_exactly_outside_target(model, waves):
    features = list(model.encode(waves))
    answers = ["Rock.", "A slow and sad piano ballad."]
    batch = model.build_batch(features, ["What genre?", "Which instrument?"], answers)
    for row, answer, mask in zip(batch.labels, answers, batch.attention_mask):
        target = model.tokenizer(answer + "###", add_special_tokens=False).input_ids
        kept = row[row != IGNORE].tolist()
        assert kept == target
        end = int(mask.sum())  # right padding: the target ends where the row ends
        assert row[end - len(target) : end].tolist() == target
        assert (row[: end - len(target)] == IGNORE).all() and (row[end:] == IGNORE).all()


def test_target_truncated_to_max_txt_len(model, waves):
    features = list(model.encode(waves[:1]))
    long_answer = "guitar " * 400
    batch = model.build_batch(features, ["q"], [long_answer])
    assert int((batch.labels != IGNORE).sum()) == model.config.max_txt_len


def test_audio_spliced_at_placeholders(model, waves):
    features = list(model.encode(waves))
    batch = model.build_batch(features, ["What genre?", "Tempo?"], padding_side="left")
    audio = model.embed_audio(features)
    n = features[0].shape[0]
    before = len(model.tokenizer("###Human: <Audio>", add_special_tokens=False).input_ids)
    for i in range(2):
        start = int((batch.attention_mask[i] == 0).sum()) + 1 + before  # pads, BOS, prompt half
        torch.testing.assert_close(batch.inputs_embeds[i, start : start + n], audio[i * n : (i + 1) * n])


def test_pool_then_project_equals_project_then_pool(model):
    x = torch.randn(2, 1000, model.config.encoder_hidden_size)
    proj = model.adapter.proj
    torch.testing.assert_close(proj(pool_time(x, 325)), pool_time(proj(x), 325), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("frames,tokens", [(749, 3), (325, 1), (326, 2), (2249, 7), (1, 1)])
def test_pool_counts(frames, tokens):
    x = torch.randn(1, frames, 4)
    assert pool_time(x, 325).shape[1] == tokens == num_audio_tokens(frames, 325)
    torch.testing.assert_close(pool_time(x, 325)[0, -1], x[0, (tokens - 1) * 325 :].mean(0))


def test_only_adapter_trains(model, waves):
    features = list(model.encode(waves))
    model.zero_grad()
    model(features, ["q", "q"], ["a", "b"]).backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {"adapter.proj.weight", "adapter.proj.bias"}
    assert set(model.trainable_state()) == {"proj.weight", "proj.bias"}


def test_learned_layer_weights_start_as_plain_mean(tmp_path, waves):
    mean_model = build_model(tmp_path)
    learned = build_model(tmp_path, layer_combine="learned")
    learned.adapter.proj.load_state_dict(mean_model.adapter.proj.state_dict())
    f_mean, f_learned = mean_model.encode(waves), learned.encode(waves)
    assert f_learned.shape[1] == learned.config.num_hidden_states
    torch.testing.assert_close(learned.adapter(f_learned), mean_model.adapter(f_mean), rtol=1e-5, atol=1e-5)
    learned(list(f_learned), ["q", "q"], ["a", "b"]).backward()
    assert learned.adapter.layer_weights.grad is not None


def test_stage1_has_no_prompt(tmp_path, waves):
    model = build_model(tmp_path, stage="pretrain")
    features = list(model.encode(waves[:1]))
    batch = model.build_batch(features, [None], ["a calm piano piece"])
    n_audio = features[0].shape[0]
    target = model.tokenizer("a calm piano piece\n", add_special_tokens=False).input_ids
    assert batch.inputs_embeds.shape[1] == 1 + n_audio + len(target)  # BOS, audio, caption + "\n"
    assert model.config.max_txt_len == 32 and model.config.end_sym == "\n"


def test_decoded_stop_is_per_row(model):
    from musilingo_cli.model.musilingo import DecodedStop

    tok = model.tokenizer
    rows = [
        tok("It is rock.###", add_special_tokens=False).input_ids,
        tok("It is a calm song", add_special_tokens=False).input_ids,
    ]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    assert DecodedStop(tok, "###")(ids, None).tolist() == [True, False]


def test_stage1_generates_when_end_symbol_is_not_in_vocabulary(tmp_path, waves):
    model = build_model(tmp_path, stage="pretrain")  # the tests' tokenizer cannot spell "\n"
    features = list(model.encode(waves[:1]))
    [answer] = model.generate(features, [None], GenerationSettings.from_preset("greedy", max_new_tokens=4))
    assert isinstance(answer, str) and answer
