"""`musilingo serve` over real HTTP: the server runs in a subprocess on 127.0.0.1 with a tiny
checkpoint, the real `openai` client talks to it. Greedy answers are compared with `ask`'s for
the same files and questions, and with transformers' own `generate` for a two-turn prompt."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from audio_helpers import write_corrupt, write_music
from serve_helpers import start_server, tiny_checkpoint

from musilingo_cli.model.generation import postprocess
from musilingo_cli.model.live_batch import embed_rows
from musilingo_cli.model.loader import load_model
from musilingo_cli.pipelines.ask import AskConfig
from musilingo_cli.pipelines.ask import run as ask_run
from musilingo_cli.pipelines.chat import Message, encode_file, render

KEY = "test-key-not-a-secret"
QUESTIONS = ["What genre is this?", "Describe the audio in detail.", "What instruments are playing?"]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    ckpt = tiny_checkpoint(root)
    files = []
    for k, seconds in enumerate([3, 7, 11, 5]):
        files.append(root / f"clip{k}.wav")
        write_music(files[-1], seconds, 24000, seed=20 + k)
    write_music(root / "long.wav", 25, 24000, seed=9)
    server = start_server(
        ckpt,
        "--max-audio-seconds",
        "20",
        "--max-body-mb",
        "2.5",
        "--allowed-local-media-path",
        str(root),
        env={"MUSILINGO_API_KEY": KEY},
        log=root / "server.log",
    )
    records = []
    ask_run(
        AskConfig(
            inputs=[str(f) for f in files],
            questions=QUESTIONS,
            model=str(ckpt),
            preset="greedy",
            max_new_tokens=MAX_TOKENS,
            device="cpu",
            workers=2,
            on_record=records.append,
        )
    )
    expected = {(r["audio"], r["question"]): r["answer"] for r in records}
    assert len(expected) == len(files) * len(QUESTIONS) and len(set(expected.values())) > 1
    yield {"root": root, "ckpt": ckpt, "files": files, "expected": expected, "server": server}
    server.stop()
    assert KEY not in (root / "server.log").read_text()  # the key is never logged


@pytest.fixture(scope="module")
def client(setup):
    return openai.OpenAI(base_url=setup["server"].url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def audio_part(path: Path, fmt: str = "wav") -> dict:
    return {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(Path(path).read_bytes()).decode(), "format": fmt},
    }


def ask_about(path: Path, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question}, audio_part(path)]}]


def test_one_shot_answer_equals_ask_and_usage_counts_audio_tokens(setup, client):
    path, question = setup["files"][1], QUESTIONS[0]
    reply = client.chat.completions.create(
        model="musilingo", messages=ask_about(path, question), temperature=0, max_tokens=MAX_TOKENS
    )
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == setup["expected"][(str(path), question)]
    model = load_model(str(setup["ckpt"]))
    audio = encode_file(model, str(path))
    row, _ = model.token_row(audio.tokens, question, None)
    assert audio.tokens > 0 and reply.usage.prompt_tokens == len(row)  # audio tokens are prompt tokens
    assert 0 < reply.usage.completion_tokens <= MAX_TOKENS


def test_line_wrapped_base64_is_heard_as_the_same_audio(setup, client):
    """What the fast strict decoder (pybase64) refuses goes to the standard library's lenient path:
    MIME-style line breaks (base64.encodebytes) give the same answer as plain base64."""
    path, question = setup["files"][0], QUESTIONS[0]
    wrapped = base64.encodebytes(Path(path).read_bytes()).decode()
    part = {"type": "input_audio", "input_audio": {"data": wrapped, "format": "wav"}}
    reply = client.chat.completions.create(
        model="musilingo",
        messages=[{"role": "user", "content": [{"type": "text", "text": question}, part]}],
        temperature=0,
        max_tokens=MAX_TOKENS,
    )
    assert reply.choices[0].message.content == setup["expected"][(str(path), question)]


def test_streamed_chunks_join_to_the_same_answer(setup, client):
    path, question = setup["files"][2], QUESTIONS[1]
    stream = client.chat.completions.create(
        model="musilingo",
        messages=ask_about(path, question),
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == setup["expected"][(str(path), question)]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_two_turns_with_audio_in_the_first_equal_transformers_generate(setup, client):
    path = setup["files"][0]
    first = ask_about(path, QUESTIONS[0])
    one = client.chat.completions.create(model="musilingo", messages=first, temperature=0, max_tokens=MAX_TOKENS)
    answer = one.choices[0].message.content
    second = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": QUESTIONS[2]}]
    two = client.chat.completions.create(model="musilingo", messages=second, temperature=0, max_tokens=MAX_TOKENS)

    model = load_model(str(setup["ckpt"]))
    audio = encode_file(model, str(path))
    prompt = render(
        model,
        [
            Message("user", audio),
            Message("user", QUESTIONS[0]),
            Message("assistant", answer),
            Message("user", QUESTIONS[2]),
        ],
    )
    embeds, mask = embed_rows(model, [(prompt.ids, [audio.features])])
    out = model._transformers_generate(embeds, mask, _greedy())
    reference = postprocess(model.tokenizer.decode(out[0], skip_special_tokens=True), model.config.end_sym)
    assert two.choices[0].message.content == reference
    assert two.usage.prompt_tokens == len(prompt.ids) > one.usage.prompt_tokens + one.usage.completion_tokens - 5


def _greedy():
    from musilingo_cli.model.generation import GenerationSettings

    return GenerationSettings.from_preset("greedy", max_new_tokens=MAX_TOKENS)


@pytest.mark.parametrize(
    "part,needle",
    [
        ("garbage", "messages.0.content.1: not an audio file"),
        ("not-base64", "messages.0.content.1.input_audio.data is not valid base64"),
        ("format", "input_audio.format 'xyz' is not supported"),
        ("http", "only data: and file:// URLs"),
    ],
)
def test_bad_audio_is_400_naming_the_part(setup, client, part, needle):
    if part == "garbage":
        write_corrupt(setup["root"] / "bad.wav")
        content = audio_part(setup["root"] / "bad.wav")
    elif part == "not-base64":
        content = {"type": "input_audio", "input_audio": {"data": "!!! not base64 !!!", "format": "wav"}}
    elif part == "format":
        content = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "xyz"}}
    else:
        content = {"type": "audio_url", "audio_url": {"url": "http://example.com/a.wav"}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="musilingo", messages=[{"role": "user", "content": [{"type": "text", "text": "Genre?"}, content]}]
        )
    assert err.value.status_code == 400
    assert needle in err.value.body["message"] and "Traceback" not in err.value.response.text


def test_bad_request_fields_are_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="musilingo", messages=[{"role": "user", "content": "hi"}], temperature=7)
    assert err.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="musilingo", messages=[{"role": "assistant", "content": "hi"}])
    assert "last message must be the user's question" in err.value.body["message"]


def test_over_long_audio_and_over_large_body_are_413(setup, client):
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="musilingo", messages=ask_about(setup["root"] / "long.wav", "Genre?"))
    assert err.value.status_code == 413 and "--max-audio-seconds 20" in err.value.body["message"]
    huge = {"type": "input_audio", "input_audio": {"data": "A" * (3 * 1024 * 1024), "format": "wav"}}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="musilingo", messages=[{"role": "user", "content": [huge]}])
    assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"


def test_wrong_or_missing_key_is_401(setup):
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=setup["server"].url + "/v1", api_key=key or "-", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.models.list()
        assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    assert setup["server"].health()["status"] == "ok"  # /health needs no key


def test_32_concurrent_clients_all_get_asks_answers(setup, client):
    jobs = [(f, q, k % 3 == 0) for k, (f, q) in enumerate((f, q) for f in setup["files"] for q in QUESTIONS)]
    jobs = (jobs * 3)[:32]

    def one(job):
        path, question, stream = job
        if not stream:
            return (
                client.chat.completions.create(
                    model="musilingo", messages=ask_about(path, question), temperature=0, max_tokens=MAX_TOKENS
                )
                .choices[0]
                .message.content
            )
        chunks = client.chat.completions.create(
            model="musilingo", messages=ask_about(path, question), temperature=0, max_tokens=MAX_TOKENS, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, jobs))
    assert answers == [setup["expected"][(str(p), q)] for p, q, _ in jobs]


def test_client_leaving_mid_stream_frees_its_slot_and_others_are_answered(setup, client):
    before = setup["server"].health()["cancelled"]
    stream = client.chat.completions.create(
        model="musilingo",
        messages=ask_about(setup["files"][3], QUESTIONS[0]),
        temperature=0,
        max_tokens=400,
        stream=True,
        extra_body={"min_tokens": 400},
    )
    next(iter(stream))
    next(iter(stream))
    others: list[str] = []
    worker = threading.Thread(
        target=lambda: others.extend(
            client.chat.completions.create(
                model="musilingo", messages=ask_about(f, QUESTIONS[1]), temperature=0, max_tokens=MAX_TOKENS
            )
            .choices[0]
            .message.content
            for f in setup["files"][:2]
        )
    )
    worker.start()
    stream.close()  # the client goes away mid-answer
    worker.join(timeout=300)
    assert others == [setup["expected"][(str(f), QUESTIONS[1])] for f in setup["files"][:2]]
    deadline = time.monotonic() + 60
    while setup["server"].health()["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    health = setup["server"].health()
    assert health["cancelled"] == before + 1 and health["running"] == 0


def test_models_and_page(setup, client):
    assert [m.id for m in client.models.list().data] == ["musilingo"]
    import urllib.request

    with urllib.request.urlopen(setup["server"].url + "/") as page:
        html = page.read().decode()
    assert '<input id="audio" type="file"' in html and "/v1/chat/completions" in html


def test_a_full_server_answers_503_and_serves_the_rest(setup, tmp_path):
    server = start_server(setup["ckpt"], "--max-batch", "1", "--max-waiting", "0", log=tmp_path / "server.log")
    try:
        busy = openai.OpenAI(base_url=server.url + "/v1", api_key="-", max_retries=0, timeout=120)

        def one(path):
            try:
                busy.chat.completions.create(
                    model="musilingo",
                    messages=ask_about(path, QUESTIONS[0]),
                    max_tokens=300,
                    extra_body={"min_tokens": 300},
                )
                return 200
            except openai.APIStatusError as err:
                assert err.body["code"] == "queue_full" and "Traceback" not in err.response.text
                return err.status_code

        with ThreadPoolExecutor(8) as pool:  # eight arrive together; one slot, no queue
            codes = list(pool.map(one, (setup["files"] * 2)[:8]))
        assert set(codes) == {200, 503}
        assert server.health()["completed"] == codes.count(200)
    finally:
        server.stop()


def test_audio_urls_data_and_allowed_local_files(setup, client):
    path, question = setup["files"][2], QUESTIONS[2]
    data_url = "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()
    for url in (data_url, path.as_uri()):
        messages = [
            {
                "role": "user",
                "content": [{"type": "audio_url", "audio_url": {"url": url}}, {"type": "text", "text": question}],
            }
        ]
        reply = client.chat.completions.create(
            model="musilingo", messages=messages, temperature=0, max_tokens=MAX_TOKENS
        )
        assert reply.choices[0].message.content == setup["expected"][(str(path), question)]
    outside = [
        {
            "role": "user",
            "content": [
                {"type": "audio_url", "audio_url": {"url": "file:///etc/hostname"}},
                {"type": "text", "text": question},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="musilingo", messages=outside)
    assert "outside the allowed local media path" in err.value.body["message"]


def test_seeded_sampling_repeats_and_text_only_questions_are_answered(setup, client):
    path = setup["files"][1]

    def sample(seed):
        return (
            client.chat.completions.create(
                model="musilingo",
                messages=ask_about(path, QUESTIONS[1]),
                temperature=1.0,
                top_p=0.9,
                seed=seed,
                max_tokens=MAX_TOKENS,
            )
            .choices[0]
            .message.content
        )

    with ThreadPoolExecutor(4) as pool:  # decoded side by side, each with its own generator
        first, again, other = pool.map(sample, [7, 7, 8])
    assert first == again != other
    text_only = client.chat.completions.create(
        model="musilingo", temperature=0, max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "Name a genre."}]
    )
    assert text_only.usage.prompt_tokens > 1 and text_only.choices[0].finish_reason in ("stop", "length")


def test_an_empty_key_in_the_environment_is_refused(monkeypatch):
    """A set but empty MUSILINGO_API_KEY (a failed `$(cat key)`) must not quietly serve without a key."""
    from musilingo_cli.core.errors import ConfigError
    from musilingo_cli.pipelines.serve import read_api_key

    monkeypatch.setenv("MUSILINGO_API_KEY", " ")
    with pytest.raises(ConfigError, match="MUSILINGO_API_KEY is set but empty"):
        read_api_key(None)
    monkeypatch.setenv("MUSILINGO_API_KEY", "sesame")
    assert read_api_key(None) == "sesame"
    monkeypatch.delenv("MUSILINGO_API_KEY")
    assert read_api_key(None) is None
