"""Offline NLTK data for the text metrics: WordNet (METEOR's synonyms) and punkt_tab
(`word_tokenize`'s sentence splitter).

WordNet is looked up in this order: NLTK's normal paths (`nltk.data.path`, `NLTK_DATA`), a
cache built earlier, a cache built now from Debian's `wordnet-base` (`/usr/share/wordnet`,
which lacks the `lexnames` file NLTK reads first, so we write it), `nltk.download`, and finally
a one-line DataError saying how to provide it.

punkt_tab English is looked up on NLTK's normal paths, else the copy bundled in this package
(`musilingo_cli/data/nltk_data`, from NLTK's data; its `ortho_context.tab` is empty, see
docs/eval.md) is used. Either way `word_tokenize` is the tokenizer: the profile never changes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import DataError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
BUNDLED_NLTK_DATA = Path(__file__).resolve().parents[2] / "resources" / "nltk_data"

# The files NLTK's WordNetCorpusReader opens (besides lexnames, which we write).
WORDNET_FILES = (
    "adj.exc",
    "adv.exc",
    "noun.exc",
    "verb.exc",
    "cntlist.rev",
    "data.adj",
    "data.adv",
    "data.noun",
    "data.verb",
    "index.adj",
    "index.adv",
    "index.noun",
    "index.verb",
)

# WordNet 3.0's `lexnames`: lexicographer file number, name, syntactic category.
# Debian's wordnet-base does not ship it; NLTK reads it to build Synset.lexname().
LEXNAMES = (
    "adj.all 3",
    "adj.pert 3",
    "adv.all 4",
    "noun.Tops 1",
    "noun.act 1",
    "noun.animal 1",
    "noun.artifact 1",
    "noun.attribute 1",
    "noun.body 1",
    "noun.cognition 1",
    "noun.communication 1",
    "noun.event 1",
    "noun.feeling 1",
    "noun.food 1",
    "noun.group 1",
    "noun.location 1",
    "noun.motive 1",
    "noun.object 1",
    "noun.person 1",
    "noun.phenomenon 1",
    "noun.plant 1",
    "noun.possession 1",
    "noun.process 1",
    "noun.quantity 1",
    "noun.relation 1",
    "noun.shape 1",
    "noun.state 1",
    "noun.substance 1",
    "noun.time 1",
    "verb.body 2",
    "verb.change 2",
    "verb.cognition 2",
    "verb.communication 2",
    "verb.competition 2",
    "verb.consumption 2",
    "verb.contact 2",
    "verb.creation 2",
    "verb.emotion 2",
    "verb.motion 2",
    "verb.perception 2",
    "verb.possession 2",
    "verb.social 2",
    "verb.stative 2",
    "verb.weather 2",
    "adj.ppl 3",
)

HOW_TO_PROVIDE = (
    "WordNet data not found: install Debian/Ubuntu `wordnet-base` (apt-get install wordnet-base) "
    "or run `python -m nltk.downloader wordnet` once with network"
)

_wordnet_source: str | None = None
_punkt_source: str | None = None


def lexnames_text() -> str:
    """The 45-line WordNet 3.0 `lexnames` file, tab-separated, as NLTK expects it."""
    rows = (
        f"{number:02d}\t{name}\t{category}" for number, (name, category) in enumerate(line.split() for line in LEXNAMES)
    )
    return "\n".join(rows) + "\n"


_SS_TYPE_NUMBER = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}
_SYNTAX_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def _read_lines(path: Path) -> list[str]:
    # WordNet files are ASCII; surrogateescape round-trips any odd byte unchanged.
    return path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()


def _parse_data_file(path: Path) -> dict[str, tuple[str, str, list[tuple[str, str]], str | None]]:
    """offset -> (ss_type, lex_filenum, [(lemma, lex_id)], satellite head offset or None)."""
    synsets = {}
    for line in _read_lines(path):
        if line.startswith("  "):  # the license header
            continue
        fields = line.split(" ")
        offset, lex_filenum, ss_type, w_cnt = fields[0], fields[1], fields[2], int(fields[3], 16)
        words = [(_SYNTAX_MARKER.sub("", fields[4 + 2 * i]).lower(), fields[5 + 2 * i]) for i in range(w_cnt)]
        p_at = 4 + 2 * w_cnt
        pointers = [fields[p_at + 1 + 4 * i : p_at + 5 + 4 * i] for i in range(int(fields[p_at]))]
        head = next((ptr[1] for ptr in pointers if ptr[0] == "&"), None) if ss_type == "s" else None
        synsets[offset] = (ss_type, lex_filenum, words, head)
    return synsets


def _sense_numbers(path: Path) -> dict[tuple[str, str], int]:
    """(lemma, synset offset) -> sense number, from an index.<pos> file (offsets are the last fields)."""
    numbers = {}
    for line in _read_lines(path):
        if line.startswith("  "):
            continue
        fields = line.split()
        offsets = fields[-int(fields[2]) :]
        for number, offset in enumerate(offsets, start=1):
            numbers[(fields[0], offset)] = number
    return numbers


def index_sense_text(source: Path) -> str:
    """Build WordNet's `index.sense` (sense key, offset, sense number, tag count) from the dict files.

    nltk >= 3.10 reads index.sense when WordNet loads; Debian ships it in `wordnet-sense-index`,
    not in `wordnet-base`. Keys follow senseidx(5WN): `lemma%ss_type:lex_filenum:lex_id:head_word:head_id`,
    where only adjective satellites carry the head (first word of the `&` head synset).
    """
    tag_counts = {}
    for line in _read_lines(source / "cntlist.rev"):
        key, _number, count = line.split()
        tag_counts[key] = count
    rows = []
    for pos in ("noun", "verb", "adj", "adv"):
        synsets = _parse_data_file(source / f"data.{pos}")
        numbers = _sense_numbers(source / f"index.{pos}")
        for offset, (ss_type, lex_filenum, words, head) in synsets.items():
            head_word = head_id = ""
            if head is not None:
                head_word, head_lex_id = synsets[head][2][0]
                head_id = f"{int(head_lex_id, 16):02d}"
            for lemma, lex_id in words:
                key = f"{lemma}%{_SS_TYPE_NUMBER[ss_type]}:{lex_filenum}:{int(lex_id, 16):02d}:{head_word}:{head_id}"
                rows.append(f"{key} {offset} {numbers[(lemma, offset)]} {tag_counts.get(key, 0)}")
    rows.sort()
    return "\n".join(rows) + "\n"


def default_cache_root() -> Path:
    """Where the built WordNet lives: `$MUSILINGO_NLTK_DATA`, else `$XDG_CACHE_HOME/musilingo/nltk_data`."""
    if os.environ.get("MUSILINGO_NLTK_DATA"):
        return Path(os.environ["MUSILINGO_NLTK_DATA"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "musilingo" / "nltk_data"


def build_wordnet_from_debian(cache_root: Path, source: Path = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet dict files into `<cache_root>/corpora/wordnet/` and write `lexnames`.

    Copies, never links: NLTK >= 3.10 refuses symlinks that leave the data root and files with
    several hard links. The copy is written beside and renamed, so a crash leaves no half corpus.
    """
    missing = [name for name in WORDNET_FILES if not (source / name).is_file()]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing[:3])}: {HOW_TO_PROVIDE}")
    target = cache_root / "corpora" / "wordnet"
    staging = cache_root / "corpora" / ".wordnet.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in WORDNET_FILES:
        shutil.copyfile(source / name, staging / name)
    (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    if (source / "index.sense").is_file():  # from wordnet-sense-index, when installed
        shutil.copyfile(source / "index.sense", staging / "index.sense")
    else:
        (staging / "index.sense").write_text(index_sense_text(source), encoding="utf-8", errors="surrogateescape")
    (staging / "SOURCE").write_text(
        f"copied from {source} by musilingo; lexnames (and index.sense if absent) generated\n"
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _cache_complete(cache_root: Path) -> bool:
    corpus = cache_root / "corpora" / "wordnet"
    return all((corpus / name).is_file() for name in (*WORDNET_FILES, "lexnames"))


def _add_path(root: Path) -> None:
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))


_reader = None  # the loaded reader (wordnet_reader)


def _load_wordnet() -> None:
    """Load WordNet now, so failures surface here, once (see wordnet_reader)."""
    global _reader
    import warnings

    import nltk

    from musilingo_cli.pipelines.evaluate.english_wordnet import EnglishWordNet  # lazy: it imports nltk

    root = nltk.data.find("corpora/wordnet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not used
        _reader = EnglishWordNet(root, None)


def wordnet_reader():
    """The loaded English WordNet reader METEOR uses (ensure_wordnet first; DataError if none)."""
    if _reader is None:
        ensure_wordnet()
    return _reader


def _try_normal_paths() -> bool:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    return True


def _try_download(cache_root: Path) -> bool:
    """nltk.download into the cache; skipped when the user asked for offline operation."""
    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("MUSILINGO_OFFLINE"):
        return False
    import nltk

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # nltk's urlopen has no timeout; a blocked network must not hang
    try:
        return bool(nltk.download("wordnet", download_dir=str(cache_root), quiet=True, raise_on_error=True))
    except Exception:  # noqa: BLE001 - any failure here means "not available this way"
        return False
    finally:
        socket.setdefaulttimeout(previous)


def locate_wordnet(
    cache_root: Path,
    *,
    debian_dir: Path = DEBIAN_WORDNET,
    search_normal_paths: bool = True,
    allow_download: bool = True,
) -> str:
    """Put WordNet on `nltk.data.path` without loading it; return where it is, or raise DataError."""
    if search_normal_paths and _try_normal_paths():
        return "nltk_data"
    if _cache_complete(cache_root):
        _add_path(cache_root)
        return f"cache {cache_root}"
    if (debian_dir / "data.noun").is_file():
        build_wordnet_from_debian(cache_root, debian_dir)
        _add_path(cache_root)
        return f"debian wordnet-base via {cache_root}"
    if allow_download and _try_download(cache_root):
        _add_path(cache_root)
        return f"nltk.download into {cache_root}"
    raise DataError(HOW_TO_PROVIDE)


def ensure_wordnet(cache_root: Path | None = None, **routes: Any) -> str:
    """Make `nltk.corpus.wordnet` loadable and load it; return where it came from.

    Order: NLTK's normal paths, a complete cache, Debian's wordnet-base copied into the cache,
    nltk.download, else DataError (`routes` switch single routes off, see locate_wordnet).
    Loads once per process (wordnet_reader): the first call costs a few seconds.
    """
    global _wordnet_source
    if _wordnet_source is not None:
        return _wordnet_source
    source = locate_wordnet(Path(cache_root) if cache_root is not None else default_cache_root(), **routes)
    try:
        _load_wordnet()
    except (LookupError, OSError, ValueError) as err:
        raise DataError(f"WordNet from {source} does not load ({str(err).splitlines()[0]}): {HOW_TO_PROVIDE}") from None
    _wordnet_source = source
    return source


def ensure_punkt() -> str:
    """Make `nltk.word_tokenize` work offline; return where punkt_tab English came from."""
    global _punkt_source
    if _punkt_source is not None:
        return _punkt_source
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        _punkt_source = "nltk_data"
    except LookupError:
        # Appended, not prepended: a full punkt_tab installed later still wins.
        if str(BUNDLED_NLTK_DATA) not in nltk.data.path:
            nltk.data.path.append(str(BUNDLED_NLTK_DATA))
        nltk.data.find("tokenizers/punkt_tab/english/")
        _punkt_source = "bundled (empty ortho_context)"
    return _punkt_source
