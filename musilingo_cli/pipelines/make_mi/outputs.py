"""make-mi's outputs, rebuilt from the journal alone: the MI items per kind in the official schema
(music_instruct_{short,long}.json and their _train/_test splits), rejects.jsonl with a reason per
pair, and summary.json; every file is written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from musilingo_cli.core.journal import atomic_write_text, read_jsonl
from musilingo_cli.pipelines.make_mi.config import KINDS, MakeMIConfig
from musilingo_cli.pipelines.make_mi.cost import estimate_cost
from musilingo_cli.pipelines.make_mi.runner import REQUESTS_FILE, State, billed_tokens


def assemble(records: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], State]:
    """MI items per kind and rejects, rebuilt from journal records (no request needed)."""
    state = State()
    for record in records:
        state.add(record)
    items: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    rejects: list[dict[str, Any]] = []
    for unit in sorted(state.generated):
        gen = state.generated[unit]
        base = {
            "ytid": gen["id"],
            "kind": gen["kind"],
            "model": gen["model"],
            "prompt": gen["prompt"],
            "prompt_sha256": gen["prompt_sha256"],
        }
        for bad in gen.get("bad_items", []):
            rejects.append({**base, "reason": bad["reason"], "item": bad["item"]})
        filt = state.filtered.get(unit)
        if filt is None:
            continue
        verdicts = {v["index"]: v for v in filt["verdicts"]}
        rules = {r["index"]: r["reason"] for r in filt["rules"]}
        for i, pair in enumerate(gen["pairs"]):
            verdict = verdicts.get(i)
            if i in rules or verdict is None or not verdict["faithful"]:
                reason = rules.get(i) or "filter_negative"
                extra = {"filter_reason": verdict["reason"]} if verdict else {}
                rejects.append({**base, **pair, "reason": reason, **extra})
                continue
            items[gen["kind"]].append(_mi_item(gen, pair, i, filt))
    for unit, fail in sorted(state.failed.items()):
        rejects.append(
            {
                "ytid": unit[0],
                "kind": unit[1],
                "reason": f"failed_{fail['stage']}:{fail['reason']}",
                "detail": fail["detail"],
            }
        )
    return items, rejects, state


def _mi_item(gen: dict[str, Any], pair: dict[str, str], index: int, filt: dict[str, Any]) -> dict[str, Any]:
    item = {
        "question": pair["question"],
        "answer": pair["answer"],
        "ytid": gen["id"],
        "is_audioset_eval": bool(gen["is_audioset_eval"]),
    }
    meta = gen.get("meta") or {}
    for key in ("start_s", "end_s", "sampling_rate"):
        if key in meta:
            item[key] = meta[key]
    item.update(
        {
            "caption": gen["caption"],
            "kind": gen["kind"],
            "pair_index": index,
            "model": gen["model"],
            "prompt": gen["prompt"],
            "prompt_sha256": gen["prompt_sha256"],
            "filter_prompt": filt["filter_prompt"],
            "filter_prompt_sha256": filt["filter_prompt_sha256"],
        }
    )
    return item


def write_outputs(out: Path, config: MakeMIConfig, skipped_empty: int = 0) -> dict[str, Any]:
    """Write music_instruct_{kind}[_train|_test].json, rejects.jsonl and summary.json atomically."""
    items, rejects, state = assemble(read_jsonl(out / "journal.jsonl"))
    files = []
    for kind in KINDS:
        if not items[kind] and kind not in config.kinds:
            continue
        files.append(_write_json(out / f"music_instruct_{kind}.json", {"QA": items[kind]}))
        for split, is_eval in (("train", False), ("test", True)):
            part = [it for it in items[kind] if it["is_audioset_eval"] == is_eval]
            files.append(_write_json(out / f"music_instruct_{kind}_{split}.json", {"QA": part}))
    atomic_write_text(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    summary = _summary(config, items, rejects, state, skipped_empty, billed_tokens(out / REQUESTS_FILE))
    summary["files"] = [str(f) for f in files] + [str(out / "rejects.jsonl"), str(out / "summary.json")]
    _write_json(out / "summary.json", summary)
    return summary


def _summary(config, items, rejects, state: State, skipped_empty: int, billed: dict[str, int] | None) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for r in rejects:
        if not r["reason"].startswith("failed_"):
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    generated = sum(len(g["pairs"]) + len(g.get("bad_items", [])) for g in state.generated.values())
    # Tokens: every reply logged in requests.jsonl (a unit killed mid-retry was billed but never
    # journaled); a request that never got a reply, or a reply without usage, may have been billed
    # too, so the cost is then a lower bound. Journals from before requests.jsonl: the journal's sum.
    tokens = dict(state.tokens) if billed is None else {k: billed[k] for k in ("prompt_tokens", "completion_tokens")}
    unknown = None if billed is None else billed["unknown"]
    cost = estimate_cost(config, tokens["prompt_tokens"], tokens["completion_tokens"])
    return {
        "captions_skipped_empty": skipped_empty,
        "units_done": len(state.filtered),
        "units_failed": len(state.failed),
        "failed": [
            {"ytid": u[0], "kind": u[1], "stage": f["stage"], "reason": f["reason"]}
            for u, f in sorted(state.failed.items())
        ],
        "pairs_generated": generated,
        "pairs_kept": {kind: len(v) for kind, v in items.items()},
        "pairs_rejected": sum(by_reason.values()),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "tokens": tokens,
        "requests_without_usage": unknown,
        "cost_is_lower_bound": unknown is None or unknown > 0,
        "estimated_cost_usd": cost,
        "model": config.model,
    }


def _write_json(path: Path, obj: Any) -> Path:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")
    return path
