"""NLTK's WordNet reader made fast for what METEOR reads, with the same answers.

`EnglishWordNet` is NLTK's `WordNetCorpusReader` (English only) with three changes:

- the load builds the same lemma index and satellite set from the whole files read at once, instead
  of line by line through NLTK's seekable Unicode reader (about 2 s of the 2.5 s load);
- it skips the WordNet-3.0-to-3.0 offset map NLTK builds for the multilingual OMW data, which
  English lookups never read;
- `synonym_names(word)` gives the lemma names of `synsets(word)` from each synset's data line,
  without building Synset objects (their pointers, frames and gloss).

tests/test_metric_engine.py checks the index, the satellites and the names against NLTK's own reader.
Imported lazily (it imports nltk): `musilingo --help` must not.
"""

from __future__ import annotations

import os
import re

from nltk.corpus.reader.wordnet import ADJ, ADJ_SAT, POS_LIST, WordNetCorpusReader, WordNetError

# _synset_from_pos_and_line's pattern: a lemma name with its syntactic marker, e.g. "big(a)"
_MARKED = re.compile(r"(.*?)(\([^()]*\))?$")


class EnglishWordNet(WordNetCorpusReader):
    """WordNetCorpusReader(root, None) for English lookups; see the module docstring."""

    def map_wn(self, version="wordnet"):
        return None

    def _text(self, fileid: str) -> str:
        with self.abspath(fileid).open() as f:
            return f.read().decode(self._ENCODING)

    def _scan_satellites(self):
        """NLTK's `_scan_satellites` over the whole of data.adj at once: the offsets of 's' synsets."""
        satellites = set()
        for line in self._text(f"data.{self._FILEMAP[ADJ]}").splitlines():
            if not line.strip() or line.startswith(" "):
                continue
            fields = line.split(None, 3)
            if len(fields) >= 3 and fields[2] == "s":
                satellites.add(int(fields[0]))
        self.satellite_offsets = satellites

    def _load_lemma_pos_offset_map(self):
        """NLTK's `_load_lemma_pos_offset_map` (lemma -> pos -> synset offsets, 's' from the
        satellites among the 'a' offsets) over whole index files. Lines are
        `lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...` (wndb(5WN)),
        checked as NLTK checks them."""
        index, satellites = self._lemma_pos_offset_map, self.satellite_offsets
        for suffix in self._FILEMAP.values():
            for number, line in enumerate(self._text(f"index.{suffix}").splitlines(), start=1):
                if line.startswith(" "):
                    continue
                fields = line.split()
                try:
                    count, at = int(fields[2]), 4 + int(fields[3])
                    offsets = list(map(int, fields[at + 2 : at + 2 + count]))
                    assert count > 0 and int(fields[at]) == count and len(offsets) == count
                except (AssertionError, ValueError, IndexError) as err:
                    raise WordNetError(f"file index.{suffix}, line {number}: {err!r}") from err
                entry = index[fields[0]]
                entry[fields[1]] = offsets
                if fields[1] == ADJ:
                    entry[ADJ_SAT] = [offset for offset in offsets if offset in satellites]

    def _data_file(self, pos):
        # NLTK keeps each data file open once read. A worker forked from a process that read one
        # inherits it with its file offset, shared with its siblings: two workers seeking and
        # reading at once read each other's lines, and NLTK then finds no synset at an offset
        # (None, or a warning). Each process opens its own.
        if getattr(self, "_files_pid", None) != os.getpid():
            self._data_file_map, self._files_pid = {}, os.getpid()
        return super()._data_file(pos)

    def _data_bytes(self, pos: str) -> bytes:
        """The whole data file of `pos` ('s' reads the adjectives' file), read once per reader."""
        pos = ADJ if pos == ADJ_SAT else pos
        cache = self.__dict__.setdefault("_whole_data", {})
        if pos not in cache:
            with self.abspath(f"data.{self._FILEMAP[pos]}").open() as f:
                cache[pos] = f.read()
        return cache[pos]

    def _names_at(self, pos: str, offset: int) -> list[str] | None:
        """The lemma names of the synset at `offset`, as `_synset_from_pos_and_line` reads them; None
        where NLTK would not build that synset the plain way (no synset there, or an odd line)."""
        data = self._data_bytes(pos)
        end = data.find(b"\n", offset)
        line = data[offset : end if end >= 0 else len(data)].decode(self._ENCODING)
        if line[:8] != f"{offset:08d}" or line.count("|") != 1:
            return None
        fields = line.split("|")[0].split()
        count = int(fields[3], 16)
        names = fields[4 : 4 + 2 * count : 2]
        return [_MARKED.match(name).group(1) if "(" in name else name for name in names]

    def synonym_names(self, word: str) -> tuple[str, ...] | None:
        """The distinct lemma names without "_" over `synsets(word)` (all parts of speech), in first-seen
        order; None where a synset would not come from a plain data line (callers then use synsets())."""
        lemma = word.lower()
        index = self._lemma_pos_offset_map
        names: dict[str, None] = {}
        for pos in POS_LIST:
            for form in self._morphy(lemma, pos, True):
                for offset in index[form].get(pos, []):
                    found = self._names_at(pos, offset)
                    if found is None:
                        return None
                    names.update((name, None) for name in found if name.find("_") < 0)
        return tuple(names)
