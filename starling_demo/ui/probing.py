"""The probe panels: a turn's candidates under the probe edits, the session's mean change per edit, and a
candidate's reward with each sentence left out; their handlers and their HTML."""
from __future__ import annotations

import copy
import html
import time

import gradio as gr

from .. import insight
from ..edits import EDITS, custom_edit, custom_length, pick_edits
from ..engine import Engine
from ..host_memory import release_freed_memory
from ..probes import aggregate
from ..limits import MAX_MESSAGE_CHARS, check_text
from ..templates import check_rm_format
from .analysis import scored_turn
from .blind import JUDGE_FIRST, conversation_number, hidden, tallied_turns
from .cards import candidate_choices
from .colour import value_colour
from .inputs import candidate_index, models
from .models import PROBLEMS, explain
from .view import BUSY, RUNNING, busy, current_turn

PROBE_NOTE = ("Each edit below changes the candidate, and the reward model scores every variant with the candidate "
              "in batched passes that encode the conversation once. **Δ** is the variant's reward minus the "
              "candidate's. Over the session, each edit's mean Δ comes with a 95% bootstrap interval.")
ATTRIBUTION_NOTE = ("Leave each sentence out: the reward of the reply without it, every variant in batched passes. "
                    "Green: the reward drops without it (it earns reward); red: the reward rises without it. Code "
                    "blocks and list items count as one unit each.")
NO_PROBES = "<p class='muted'>Pick a candidate and the edits, then press “Run probes”.</p>"
NO_AGGREGATE = "<p class='muted'>Probe some candidates: each edit's mean change over them shows here.</p>"
NO_ATTRIBUTION = "<p class='muted'>Press “Leave each sentence out” to see which sentences earn the reward.</p>"
ALL_EDITS = list(EDITS)
EDIT_CHOICES = [(f"{edit.name}: {edit.description}", edit.name) for edit in EDITS.values()]


def delta_cell(delta: float, scale: float, title: str = "") -> str:
    tip = f" title='{html.escape(title, quote=True)}'" if title else ""
    return f"<td class='delta' style='background:{value_colour(delta, scale)}'{tip}>{delta:+.3f}</td>"


def probe_html(entries: list[dict]) -> str:
    """The probed candidates' Δ reward per edit, a column per candidate, rows by their mean Δ, highest first.

    >>> entry = {"candidate": 0, "reward": 1.0, "edits": [{"edit": "repeat", "description": "twice", "text": "a a",
    ...          "changed": True, "reward": 1.5, "delta": 0.5}]}
    >>> "+0.500" in probe_html([entry]) and "#1 (1.000)" in probe_html([entry])
    True
    """
    names = [edit["edit"] for edit in entries[0]["edits"]]
    by_name = [{edit["edit"]: edit for edit in entry["edits"]} for entry in entries]
    scale = max((abs(edit["delta"]) for entry in entries for edit in entry["edits"]), default=0.0) or 1.0

    def mean(name: str) -> float:
        return sum(edits[name]["delta"] for edits in by_name) / len(by_name)

    head = "".join(f"<th>Δ #{entry['candidate'] + 1} ({entry['reward']:.3f})</th>" for entry in entries)
    rows = []
    for name in sorted(names, key=lambda name: -mean(name)):
        cells = "".join(delta_cell(edits[name]["delta"], scale, f"reward {edits[name]['reward']:.3f}: "
                                   f"{edits[name]['text'][:300]}") if edits[name]["changed"] else
                        "<td class='muted' title='the edit leaves this candidate as it was'>no change</td>"
                        for edits in by_name)
        rows.append(f"<tr><th>{html.escape(name)}</th><td class='what'>"
                    f"{html.escape(by_name[0][name]['description'])}</td>{cells}</tr>")
    return (f"<table class='probes'><tr><th>edit</th><th>what it does</th>{head}</tr>{''.join(rows)}</table>"
            "<p class='muted'>Hover a cell for the variant's reward and text.</p>")


def aggregate_html(rows: list[dict], label: str) -> str:
    """Each edit's mean Δ over the session's probed candidates with its 95% bootstrap interval, highest first."""
    if not rows:
        return NO_AGGREGATE
    scale = max(abs(row["mean"]) for row in rows) or 1.0
    body = "".join(
        f"<tr><th>{html.escape(row['edit'])}</th><td class='what'>{html.escape(row['description'])}</td>"
        f"{delta_cell(row['mean'], scale)}<td>"
        + ("—" if row["low"] is None else f"[{row['low']:+.3f}, {row['high']:+.3f}]")
        + f"</td><td>{row['n']}</td></tr>"
        for row in rows)
    return (f"<table class='probes aggregate'><caption>{html.escape(label)}</caption><tr><th>edit</th>"
            f"<th>what it does</th><th>mean Δ</th><th>95% interval</th><th>candidates</th></tr>{body}</table>")


def session_aggregate(session: dict) -> tuple[list[dict], str]:
    """`probes.aggregate` over the session's probed candidates (those of conversations cleared since included:
    Clear keeps them) scored like the latest probe (same RM, read-out and text format: other rewards are not
    comparable), and a caption saying over what."""
    current = conversation_number(session)
    entries = [entry | {"cleared": turn["conversation"] != current} for turn in tallied_turns(session)
               for entry in (turn.get("probes") or {}).values()]
    if not entries:
        return [], ""
    latest = max(entries, key=lambda entry: entry["at"])
    same = [e for e in entries if (e["rm"], e["readout"], e["rm_format"]) ==
            (latest["rm"], latest["readout"], latest["rm_format"])]
    earlier = sum(e["cleared"] for e in same)
    label = (f"Over {len(same)} probed candidate{'s' * (len(same) != 1)} of this session"
             + (f" ({earlier} in cleared conversations)" if earlier else "") + f", scored by {latest['rm']} "
             f"({latest['readout']} read-out, {latest['rm_format']} text); an interval needs 2 or more; an edit that "
             "changed none of them is not listed.")
    return aggregate([{"candidates": same}]), label


def probe_count(session: dict) -> int:
    """How many probed candidates the session holds, those of cleared conversations included."""
    return sum(len(turn.get("probes") or {}) for turn in tallied_turns(session))


def kept_probes(turn: dict) -> dict:
    """What the session aggregate needs of `turn`'s probes once its conversation is cleared: each entry without
    its variants' texts.

    >>> kept_probes({"probes": {"0": {"candidate": 0, "at": 1.0, "edits": [{"edit": "repeat", "text": "a a",
    ...     "changed": True, "delta": 0.5}]}}})
    {'probes': {'0': {'candidate': 0, 'at': 1.0, 'edits': [{'edit': 'repeat', 'changed': True, 'delta': 0.5}]}}}
    >>> kept_probes({"candidates": ["a"]})
    {}
    """
    if not turn.get("probes"):
        return {}
    return {"probes": {k: entry | {"edits": [{key: value for key, value in edit.items() if key != "text"}
                                             for edit in entry["edits"]]} for k, entry in turn["probes"].items()}}


def turn_to_probe(engine: Engine, session: dict, rm: str, rm_format: str, request: gr.Request | None) -> dict:
    """The current turn, if it may be probed now with `rm` and `rm_format`; else ValueError saying what to do."""
    turn = scored_turn(session)
    if not turn:
        raise ValueError(JUDGE_FIRST if hidden(current_turn(session)) else
                         "Nothing to probe yet: send a message and let its candidates be scored first.")
    if busy(request):  # a turn that ends while the probe runs would be lost when the probe's session is kept
        raise ValueError(BUSY)
    models(engine, rm=rm)
    check_rm_format(rm_format)
    return turn


def on_rm(engine: Engine, rm: str, work):
    """`work()` with reward model `rm` loaded (the engine takes the device for each of its passes); None, with a
    warning saying why, if the model fails. The memory its passes freed is given back after it: a server
    otherwise keeps the largest probe's peak for good."""
    try:
        engine.rm(rm)
        return work()
    except PROBLEMS as error:
        gr.Warning(explain(error))
        return None
    finally:
        release_freed_memory()


def edit_text(label: str, value) -> str:
    """A field of the probe's own edit, checked: text (None: empty) of at most MAX_MESSAGE_CHARS, valid Unicode."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"The probe's {label} must be text, not {type(value).__name__}.")
    return check_text(f"The probe's {label}", value or "", MAX_MESSAGE_CHARS)


def probe_edits(names, prefix, suffix, find, replace, texts: dict[str, str]) -> list:
    """The edits a probe runs: `names` from EDITS (None: all), then your own edit (prefix/suffix, find/replace).
    Checked before any edit is built, with a ValueError saying what is wrong: a field that is not text or is over
    the limits, or an own edit that would make one of `texts` (by label) longer than MAX_MESSAGE_CHARS."""
    own = [edit_text(label, value) for label, value in (("prefix", prefix), ("suffix", suffix), ("find", find),
                                                        ("replacement", replace))]
    if names is not None and not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise ValueError(f"The edits must be a list of names from {', '.join(EDITS)} (or null for all).")
    for label, text in texts.items():  # before the edit builds it: 100 matches of a 400 KB replacement would be 40 MB
        if (length := custom_length(text, *own)) > MAX_MESSAGE_CHARS:
            raise ValueError(f"Your edit would make {label} {length:,} characters long; at most "
                             f"{MAX_MESSAGE_CHARS:,} are scored: shorten the replacement, the prefix or the suffix.")
    edits = pick_edits(names, custom_edit(*own))
    if not edits:
        raise ValueError("Tick at least one edit, or write your own, then run the probes.")
    return edits


def probe_candidates(engine: Engine, session: dict, number: str | None, names: list[str] | None = ALL_EDITS,
                     prefix: str | None = None, suffix: str | None = None, find: str | None = None,
                     replace: str | None = None, rm: str | None = None,
                     readout: str | None = None, rm_format: str = "rlhf", request: gr.Request = None):
    """Probe candidate `number` (1-based; "all": every candidate) of the current turn with the edits `names`
    and your own edit (prefix/suffix, find/replace), scored by `rm` (default: the launched one) at `readout`
    (default: its card's). Outputs: the session, the candidates' table, the session's aggregate, and the figures
    as JSON."""
    rm = rm or engine.rm_name
    try:
        turn = turn_to_probe(engine, session, rm, rm_format, request)
        count = len(turn["candidates"])
        picked = list(range(count)) if str(number).strip().lower() == "all" else [candidate_index(number, count)]
        edits = probe_edits(names, prefix, suffix, find, replace,
                            {f"candidate {k + 1}": turn["candidates"][k] for k in picked})
    except ValueError as error:
        gr.Warning(str(error))
        return [gr.skip()] * 4
    visitor = getattr(request, "session_hash", None)
    RUNNING.add(visitor)
    try:
        run = on_rm(engine, rm, lambda: engine.probe(turn["messages"], [turn["candidates"][k] for k in picked], edits,
                                                     rm, readout, rm_format))
    finally:
        RUNNING.discard(visitor)
    if run is None:
        return [gr.skip()] * 4
    work = copy.deepcopy(session)
    probed = current_turn(work).setdefault("probes", {})
    for k, entry in zip(picked, run["candidates"]):
        entry["candidate"] = k
        probed[str(k)] = entry | {"rm": rm, "readout": run["readout"], "rm_format": rm_format, "at": time.time()}
    rows, label = session_aggregate(work)
    figures = {"readout": run["readout"], "readout_note": run["readout_note"], "rm": rm, "rm_format": rm_format,
               "candidates": run["candidates"], "aggregate": rows}
    return [work, probe_html(run["candidates"]), aggregate_html(rows, label), figures]


def attribution_html(candidate: str, result: dict) -> str:
    """The reply with each unit on a background coloured by the reward it earns (`drop`); hover for the figures."""
    units = result["units"]
    if not units:
        return "<p class='muted'>This reply has no sentences to leave out.</p>"
    scale = max(abs(unit["drop"]) for unit in units) or 1.0
    parts, at = [], 0
    for unit in units:
        parts.append(html.escape(candidate[at: unit["start"]]))
        tip = f"without it: reward {unit['reward_without']:.3f} (drop {unit['drop']:+.3f})"
        parts.append(f"<span class='unit {unit['kind']}' style='background:{value_colour(unit['drop'], scale)}' "
                     f"title='{html.escape(tip, quote=True)}'>{html.escape(candidate[unit['start']: unit['end']])}"
                     "</span>")
        at = unit["end"]
    parts.append(html.escape(candidate[at:]))
    top = max(units, key=lambda unit: unit["drop"])
    return (f"<div class='attribution'>{''.join(parts)}</div><p class='muted'>Reward {result['reward']:.3f}; the "
            f"unit that earns the most is “{html.escape(top['text'][:80])}” (drop {top['drop']:+.3f}).</p>")


def attribute_candidate(engine: Engine, session: dict, number: str | None = None, rm: str | None = None,
                        readout: str | None = None, rm_format: str = "rlhf", request: gr.Request = None):
    """The reward of candidate `number` (1-based; default: the best) with each sentence, list item or code block
    left out, scored like `probe_candidates`. Outputs: the session (which keeps it with the turn), the coloured
    reply, the figures as JSON."""
    rm = rm or engine.rm_name
    try:
        turn = turn_to_probe(engine, session, rm, rm_format, request)
        count = len(turn["candidates"])
        k = insight.ranking(turn["rewards"])[0] if number in (None, "") else candidate_index(number, count)
    except ValueError as error:
        gr.Warning(str(error))
        return [gr.skip()] * 3
    result = on_rm(engine, rm, lambda: engine.attribute(turn["messages"], turn["candidates"][k], rm, readout,
                                                        rm_format))
    if result is None:
        return [gr.skip()] * 3
    work = copy.deepcopy(session)
    current_turn(work)["attribution"] = result = result | {"candidate": k}
    return [work, attribution_html(turn["candidates"][k], result), result]


def probe_panels(session: dict, pick: str | None = None) -> list:
    """The probe tab's candidate choice ("all", then each candidate best first with its rank and reward, as the other
    pickers; `pick` kept if the turn has it), table and aggregate, and the attribution, as the session now holds
    them."""
    turn = scored_turn(session)
    choices = [("all", "all"), *candidate_choices(turn)] if turn else []
    entries = sorted((turn.get("probes") or {}).values(), key=lambda e: e["candidate"]) if turn else []
    attribution = turn.get("attribution") if turn else None
    rows, label = session_aggregate(session)
    values = [value for _, value in choices]
    return [gr.update(choices=choices, value=pick if pick in values else "all" if turn else None),
            probe_html(entries) if entries else NO_PROBES, aggregate_html(rows, label),
            attribution_html(turn["candidates"][attribution["candidate"]], attribution) if attribution else
            NO_ATTRIBUTION]
