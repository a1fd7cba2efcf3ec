"""`musilingo chat`: a conversation about music, and the prompt formats `serve` shares with it.

Two templates (docs/serve.md, "Prompt formats"):

- "default": the stage-2 format the model was trained on. The first turn is exactly the prompt
  `ask` builds, `###Human: <Audio>[audio]</Audio> {q} ###Assistant: `; each answer is followed by
  the end symbol `###` (as in training targets), and each later turn appends the template again,
  `###Human: {q} ###Assistant: ` (audio added later goes into the next question's turn).
- "demo": the official Gradio demo (../shared/reference/official-code.md 4.2): its system text,
  `###` separators, `Human`/`Assistant` roles, and its quirk that the audio is a Human turn of its
  own, so the first question becomes a second Human turn:
  `{system}###Human: <Audio>[audio]</Audio>###Human: {q}###Assistant:`.

Text between audio is tokenized as one segment without special tokens, after one BOS (as the
official code does), so a one-question prompt is token for token the one `ask` builds.
When a prompt outgrows the LLM's context the oldest exchanges are dropped, never the audio.
"""

from __future__ import annotations

import json
import queue
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.markup import escape

from musilingo_cli.core.console import stderr, warn
from musilingo_cli.core.errors import AudioError, ConfigError, MusilingoError, os_error_message
from musilingo_cli.core.journal import atomic_write_text
from musilingo_cli.data.batching import encode_clips, min_samples, prepare_clip
from musilingo_cli.data.inputs import check_audio_file
from musilingo_cli.model.config import AUDIO_HERE, AUDIO_SLOT
from musilingo_cli.model.context import check_prompt, context_length
from musilingo_cli.model.generation import GenerationSettings

TEMPLATES = ("default", "demo")
DEMO_SYSTEM = (
    "Give the following music: <Audio>AudioContent</Audio>. You will be able to see the music once I "
    "provide it to you. Please answer my questions."
)
DEMO_AUDIO = "<Audio><AudioHere></Audio>"


@dataclass
class Audio:
    """Encoded audio in a conversation: features [T', D] (or [L, T', D]) and where it came from."""

    features: Any
    name: str
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.features.shape[-2]


@dataclass
class Message:
    """One turn: role "user" (content a question, or Audio) or "assistant" (an answer)."""

    role: str
    content: str | Audio


@dataclass
class Prompt:
    """A rendered conversation: token ids (AUDIO_ID where audio goes) and the audio in order."""

    ids: list[int]
    audio: list[Audio]
    trimmed: bool = False


def check_template(template: str) -> str:
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}: choose {' or '.join(TEMPLATES)}")
    return template


def segments(messages: list[Message], template: str, model_config, system: str | None = None) -> list[str | Audio]:
    """The prompt as text and audio pieces (adjacent text joined), ending where the answer goes."""
    pieces: list[str | Audio] = []
    if template == "demo":
        pieces.append((system or DEMO_SYSTEM) + "###")
        for m in messages:
            if isinstance(m.content, Audio):
                pieces += ["Human: <Audio>", m.content, "</Audio>###"]
            else:
                pieces.append(f"{'Human' if m.role == 'user' else 'Assistant'}: {m.content}###")
        pieces.append("Assistant:")
        return _joined(pieces)
    if not model_config.prompt_template:
        raise ConfigError(
            "this is a stage-1 (captioning) model without a prompt template; chat needs a "
            "stage-2 model, or use --template demo"
        )
    pending: list[Audio] = []
    for m in messages:
        if isinstance(m.content, Audio):
            pending.append(m.content)
        elif m.role == "user":
            text = model_config.prompt_template.format(AUDIO_SLOT * len(pending) + m.content)
            parts = text.split(AUDIO_HERE)
            for k, audio in enumerate(pending):
                pieces += [parts[k], audio]
            pieces.append(parts[-1])
            pending = []
        else:
            pieces.append(m.content + model_config.end_sym)
    if pending:  # audio after the last question: it opens a question-less turn
        text = model_config.prompt_template.format(AUDIO_SLOT * len(pending)).split(AUDIO_HERE)
        for k, audio in enumerate(pending):
            pieces += [text[k], audio]
        pieces.append(text[-1])
    return _joined(pieces)


def _joined(pieces: list[str | Audio]) -> list[str | Audio]:
    out: list[str | Audio] = []
    for p in pieces:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif not isinstance(p, str) or p:
            out.append(p)
    return out


def render(
    model,
    messages: list[Message],
    template: str = "default",
    system: str | None = None,
    max_new_tokens: int = 0,
    context: int | None = None,
) -> Prompt:
    """Token ids of the conversation, oldest exchanges dropped (never audio) until the prompt and
    `max_new_tokens` fit `context` (default: the LLM's, model/context.context_length).

    Raises PromptTooLong (model/context.check_prompt, as `ask` words it) when the audio and the last
    question alone do not fit."""
    from musilingo_cli.model.musilingo import AUDIO_ID

    context = context or context_length(model.llm)
    messages, trimmed = list(messages), False
    while True:
        ids, audio = [model.tokenizer.bos_token_id] if model.tokenizer.bos_token_id is not None else [], []
        for piece in segments(messages, template, model.config, system):
            if isinstance(piece, Audio):
                ids += [AUDIO_ID] * piece.tokens
                audio.append(piece)
            else:
                ids += model.tokenizer(piece, add_special_tokens=False).input_ids
        if context is None or len(ids) + max_new_tokens <= context:
            return Prompt(ids, audio, trimmed)
        oldest = _oldest_exchange(messages)
        if oldest is None:  # nothing left to drop but the audio and the question: ask's one-line refusal
            audio_tokens = sum(a.tokens for a in audio)
            check_prompt(context, audio_tokens, len(ids) - audio_tokens, max_new_tokens, sum(a.seconds for a in audio))
        del messages[oldest]
        trimmed = True


def _oldest_exchange(messages: list[Message]) -> int | None:
    """Index of the oldest text message that is not the last question (an answer or a question)."""
    for i, m in enumerate(messages[:-1]):
        if not isinstance(m.content, Audio):
            return i
    return None


def encode_file(
    model, path: str, chunk_seconds: float = 30.0, max_seconds: float | None = None, batch_size: int = 8
) -> Audio:
    """Decode, chunk and encode one file exactly as `ask` does; raises AudioError."""
    clip = prepare_clip(str(path), model.encoder.sample_rate, chunk_seconds, max_seconds, min_samples(model))
    return Audio(encode_clips(model.encode, [clip], batch_size)[0], Path(path).name, clip.seconds_used)


# --- the terminal conversation -----------------------------------------------------------------


@dataclass
class ChatConfig:
    """Everything `musilingo chat` needs (model, device and generation options as `ask`'s)."""

    audio: str
    model: str | None = None
    encoder: str | None = None
    llm: str | None = None
    device: str | None = None
    dtype: str | None = None
    encoder_dtype: str | None = None
    preset: str = "official"
    max_new_tokens: int | None = None
    seed: int = 0
    chunk_seconds: float = 30.0
    max_seconds: float | None = None
    template: str = "default"
    lines: Iterable[str] | None = None  # None: standard input
    interactive: bool | None = None  # None: standard input is a terminal
    out: TextIO = field(default_factory=lambda: sys.stdout)


class Chat:
    """A conversation with one model: questions in, answers streamed to `on_delta`."""

    def __init__(
        self,
        model,
        engine,
        settings: GenerationSettings,
        template: str = "default",
        seed: int = 0,
        chunk_seconds: float = 30.0,
        max_seconds: float | None = None,
    ):
        self.model, self.engine, self.settings = model, engine, settings
        self.template, self.seed = check_template(template), seed
        self.chunk_seconds, self.max_seconds = chunk_seconds, max_seconds
        self.messages: list[Message] = []
        self.told_trim = False
        self.last_prompt: Prompt | None = None

    def add_audio(self, path: str) -> Audio:
        audio = encode_file(self.model, path, self.chunk_seconds, self.max_seconds)
        self.messages.append(Message("user", audio))
        return audio

    def reset(self) -> None:
        """Forget the exchanges; the audio stays."""
        self.messages = [m for m in self.messages if isinstance(m.content, Audio)]

    def ask(self, question: str, on_delta: Callable[[str], None] = lambda d: None) -> str:
        """Answer `question` with the history so far; the answer joins the history."""
        from musilingo_cli.model.live_batch import Request

        messages = self.messages + [Message("user", question)]
        prompt = render(self.model, messages, self.template, max_new_tokens=self.settings.max_new_tokens)
        if prompt.trimmed and not self.told_trim:
            warn("the conversation outgrew the LLM's context: the oldest exchanges are left out (the audio stays)")
            self.told_trim = True
        self.last_prompt = prompt
        events: queue.Queue = queue.Queue()
        self.engine.submit(
            Request(
                prompt.ids,
                [a.features for a in prompt.audio],
                self.settings,
                events.put,
                seed=self.seed + len(self.messages),
            )
        )
        while True:
            event = events.get()
            if event.delta:
                on_delta(event.delta)
            if event.done:
                break
        if event.error:
            raise MusilingoError(event.error)
        self.messages += [Message("user", question), Message("assistant", event.text)]
        return event.text

    def to_json(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "settings": self.settings.to_dict(),
            "messages": [
                {"role": m.role, "audio": m.content.name}
                if isinstance(m.content, Audio)
                else {"role": m.role, "content": m.content}
                for m in self.messages
            ],
        }


def run(config: ChatConfig, model=None) -> int:
    """The conversation loop; returns the number of answers given."""
    from musilingo_cli.model.live_batch import Engine
    from musilingo_cli.pipelines.ask import resolve_and_load

    check_template(config.template)
    check_audio_file(config.audio)  # a typo is one line before a model (maybe gigabytes) loads
    _, model = resolve_and_load(config, model)
    settings = GenerationSettings.from_preset(config.preset, max_new_tokens=config.max_new_tokens)
    engine = Engine(model, max_batch=1)
    try:
        chat = Chat(model, engine, settings, config.template, config.seed, config.chunk_seconds, config.max_seconds)
        chat.add_audio(config.audio)
        return _loop(chat, config)
    finally:
        engine.close()


def _loop(chat: Chat, config: ChatConfig) -> int:
    """Answers and commands line by line. Piped (not interactive), a line that failed still lets the
    rest run, and the command then ends with a MusilingoError (exit 1) so that scripts notice."""
    interactive = sys.stdin.isatty() if config.interactive is None else config.interactive
    lines = iter(config.lines if config.lines is not None else sys.stdin)
    out, answers, failed = config.out, 0, 0
    if interactive:
        stderr.print(f"chatting about {config.audio}: /audio FILE switches, /add FILE adds, /reset, /save FILE, /quit")
    while True:
        if interactive:
            out.write("you> ")
            out.flush()
        line = next(lines, None)
        if line is None:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            outcome = _command(chat, line)
            if outcome == "quit":
                break
            failed += outcome == "error"
            continue
        try:
            if interactive:
                out.write("musilingo> ")
                chat.ask(line, on_delta=lambda d: (out.write(d), out.flush()))
                out.write("\n")
            else:
                out.write(" ".join(chat.ask(line).split()) + "\n")
            out.flush()
            answers += 1
        except MusilingoError as err:
            stderr.print(f"[red]error:[/red] {err}", markup=True, highlight=False)
            failed += 1
    if failed and not interactive:
        raise MusilingoError(f"{failed} of the piped lines failed (each error is shown above); {answers} answered")
    return answers


def _command(chat: Chat, line: str) -> str | None:
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    try:
        if name == "/quit":
            return "quit"
        if name in ("/audio", "/add") and arg:
            if name == "/audio":
                chat.messages = []
            audio = chat.add_audio(arg)
            stderr.print(f"{'now about' if name == '/audio' else 'added'} {arg} ({audio.seconds:.1f} s)")
        elif name == "/reset":
            chat.reset()
            stderr.print("conversation cleared (the audio stays)")
        elif name == "/save" and arg:
            atomic_write_text(arg, json.dumps(chat.to_json(), ensure_ascii=False, indent=2) + "\n")
            stderr.print(f"conversation saved to {arg}")
        else:
            stderr.print(
                f"[red]error:[/red] {escape(line)} is not a command here; "
                "commands: /audio FILE, /add FILE, /reset, /save FILE, /quit",
                highlight=False,
            )
            return "error"
    except AudioError as err:
        stderr.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        return "error"
    except OSError as err:  # /save into a folder that is not there, or one we may not write to
        stderr.print(f"[red]error:[/red] {escape(os_error_message(err))}", highlight=False)
        return "error"
    return None
