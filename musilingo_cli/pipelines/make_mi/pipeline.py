"""Music Instruct (MI) data from captions, as in the paper (Section 2.2): a chat model writes
question-answer pairs for each caption (generation prompt), a second prompt judges each pair
faithful to the caption or not, negatives and outliers are dropped, and the rest is written in
the official MI JSON schema.

    captions -> [generate] -> journal "generated" -> [rules + filter] -> journal "filtered"
             -> music_instruct_{kind}.json, rejects.jsonl, summary.json   (rebuilt from the journal)

Every API result is journaled (fsynced) the moment it arrives, so a crash loses at most the
requests in flight: a rerun skips finished (caption, kind) units and, for a unit whose pairs were
generated but not yet filtered, sends only the filter request. The final files are derived from
the journal alone and written atomically.

The parts: config.py (MakeMIConfig), prompts.py (prompt files), replies.py (parsing replies, the
outlier rules), runner.py (journal state, worker threads, the requests), outputs.py (MI files from
the journal), cost.py (prices, dry run). This module holds `run`, which ties them together.
"""

from __future__ import annotations

from typing import Any

from filelock import FileLock, Timeout

from musilingo_cli.core.errors import MusilingoError
from musilingo_cli.core.journal import Journal
from musilingo_cli.data.captions import read_captions
from musilingo_cli.pipelines.make_mi.config import MakeMIConfig, check_config
from musilingo_cli.pipelines.make_mi.cost import dry_run_report
from musilingo_cli.pipelines.make_mi.outputs import write_outputs
from musilingo_cli.pipelines.make_mi.prompts import load_prompt
from musilingo_cli.pipelines.make_mi.runner import State, execute, journal_key, plan

LOCK_FILE = ".make-mi.lock"


def run(config: MakeMIConfig) -> dict[str, Any]:
    """Generate, filter and write MI files; returns the summary (also written to summary.json).

    With `dry_run`, returns the prompts and the estimate and sends nothing.
    """
    check_config(config)
    caption_set = read_captions(config.captions, config.id_column, config.caption_column, config.split_column)
    captions = caption_set.captions[: config.limit] if config.limit else caption_set.captions
    prompts = {kind: load_prompt(getattr(config, f"prompt_{kind}")) for kind in config.kinds}
    filter_prompt = load_prompt(config.filter_prompt)
    if config.dry_run:
        return dry_run_report(config, captions, prompts, filter_prompt, caption_set.skipped_empty)

    config.out.mkdir(parents=True, exist_ok=True)
    # One run per output folder: a second one would send (and pay for) every request again. The
    # lock (flock) is released by the kernel when a run dies, even by kill -9.
    lock = FileLock(config.out / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MusilingoError(
            f"another make-mi run is writing to {config.out} (it holds {config.out / LOCK_FILE}); "
            "wait for it to finish or pass another --out"
        ) from None
    try:
        with Journal(config.out / "journal.jsonl", journal_key) as journal:
            state = State()
            for record in journal.records:
                state.add(record)
            todo = plan(captions, config, state)
            execute(config, todo, state, journal, prompts, filter_prompt)
        return write_outputs(config.out, config, skipped_empty=caption_set.skipped_empty)
    finally:
        lock.release()
