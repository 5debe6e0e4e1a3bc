"""Hostile but ordinary input to the handlers: each gets one sentence and changes nothing; limits hold."""
import json
import os
from pathlib import Path

import gradio as gr
import pytest
from conftest import SETTINGS
from test_ui import assert_skipped, send, session_of

from starling_demo import engine as engine_module
from starling_demo import limits
from starling_demo.ui import analysis, evaluation, models as ui_models
from starling_demo.ui import choices, probing, server, view
from starling_demo.ui import turns as events
from starling_demo.engine import Engine
from starling_demo.loading import LoadError
from starling_demo.ui import build_demo, launch_kwargs

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def turn(engine):
    return session_of(send(engine, view.new_session(), "Hello there")[-1])


@pytest.fixture
def no_model_work(engine, monkeypatch):
    """Fail the test if a handler gets as far as generating or scoring."""
    def refuse(*args, **kwargs):
        raise AssertionError("model work was started for a bad input")

    for work in ("generate", "score", "probe", "attribute"):
        monkeypatch.setattr(engine, work, refuse)


def refused(handler, *args, match, message=None):
    """Run `handler` to its end; it must warn `match` once and leave every output alone (but give `message` back
    to the message box)."""
    with pytest.warns(UserWarning, match=match) as warned:
        result = handler(*args)
        outputs = list(result) if not isinstance(result, list) else [result]
    assert len(outputs) == 1 and len([w for w in warned if w.category is UserWarning]) == 1
    assert_skipped(outputs[0], message)


@pytest.mark.parametrize("setting, value, match", [
    ("temperature", NAN, "Temperature must be a number from 0 to 2, not nan"),
    ("temperature", INF, "Temperature must be"),
    ("top_p", NAN, "top_p must be a number from 0.05 to 1, not nan"),
    ("n", NAN, r"number of candidates \(N\) must be a whole number from 1 to 8"),
    ("n", 2.5, "must be a whole number"),
    ("n", 9, "from 1 to 8, not 9"),
    ("max_new_tokens", NAN, "Max new tokens"),
    ("max_new_tokens", -1024, "Max new tokens"),
    ("max_new_tokens", 2048, r"Max new tokens \(for tiny\) must be a whole number from 1 to 512, not 2048"),
    ("system", "b " * 5_000_000, "The system prompt has 9,999,999 characters; shorten it to at most 8,000"),
    ("system", "ok \ud800", r"The system prompt is not valid Unicode \(a lone surrogate \\ud800 at character 4\)"),
    ("lm", "no-such-model", "Unknown language model 'no-such-model'"),
    ("rm2", "no-such-rm", "Unknown reward model 'no-such-rm'"),
    ("rm_format", "bench", "Unknown reward-model format 'bench': use rlhf or rewardbench"),
])
def test_bad_settings_get_one_sentence_before_any_model_work(engine, turn, no_model_work, setting, value, match):
    settings = SETTINGS | {setting: value}
    refused(events.chat, engine, turn, "Hi", *settings.values(), match=match, message="Hi")


@pytest.mark.parametrize("message, match", [("Hi \ud800 there", "The message is not valid Unicode"),
                                            ("x" * 20_001, "The message has 20,001 characters")])
def test_bad_messages_are_refused_before_any_model_work(engine, turn, no_model_work, message, match):
    # A message with a lone surrogate cannot be shown: it is not given back.
    refused(events.chat, engine, turn, message, *SETTINGS.values(), match=match,
            message=message if message.isascii() else None)


def test_edited_and_own_candidates_are_checked(engine, turn, no_model_work):
    cards = [c for c in turn["turns"][-1]["candidates"]] + [""] * 4
    scoring = [SETTINGS[k] for k in ("rm", "readout", "rm2")]
    refused(events.rescore, engine, turn, *scoring, None, "\ud800", *cards[1:], match="Candidate 1 is not valid")
    refused(events.rescore, engine, turn, *scoring, None, "y" * 20_001, *cards[1:], match="Candidate 1 has 20,001")
    refused(events.add_candidate, engine, turn, "z" * 20_001, *scoring, None, *cards,
            match="Your candidate has 20,001 characters")
    past = cards[:6] + ["A seventh card.", ""]  # the turn has 4 candidates
    refused(events.rescore, engine, turn, *scoring, None, *past, match="Candidate 7: this turn has 4 candidates, "
            "so cards 5 to 8 must be left empty")
    refused(events.add_candidate, engine, turn, "Mine.", *scoring, None, *past, match="Candidate 7: this turn has 4")


def test_while_its_probe_runs_a_session_takes_no_turn_nor_scoring(engine, turn, no_model_work, monkeypatch):
    """A probe runs beside the turns' queue (`in_group("probe")`) and keeps the session it started from: a turn or a
    scoring that ended meanwhile would be undone, so they are refused until it ends."""
    request = gr.Request(session_hash="prober")
    monkeypatch.setattr(view, "RUNNING", {"prober"})
    monkeypatch.setattr(events, "RUNNING", view.RUNNING)
    cards = [c for c in turn["turns"][-1]["candidates"]] + [""] * 4
    scoring = [SETTINGS[k] for k in ("rm", "readout", "rm2")]
    refused(events.chat, engine, turn, "Next?", *SETTINGS.values(), request, match="Your probe or attribution is "
            "still running", message="Next?")
    refused(events.rescore, engine, turn, *scoring, request, *cards, match="Your probe or attribution is still")
    refused(events.add_candidate, engine, turn, "Mine.", *scoring, request, *cards, match="Your probe or attribution")


def test_the_probes_edit_names_are_checked(engine, turn, no_model_work):
    for names, match in ((["refusal", "bogus"], "Unknown edit 'bogus': choose from "), ("refusal", "must be a list"),
                         ([3], "must be a list of names")):
        with pytest.warns(UserWarning, match=match):
            assert probing.probe_candidates(engine, turn, "1", names) == [gr.skip()] * 4


@pytest.mark.parametrize("field, value, match", [
    ("prefix", "p" * 20_001, "The probe's prefix has 20,001 characters; shorten it to at most 20,000"),
    ("find", "\ud800", "The probe's find is not valid Unicode"),
    ("suffix", 3, "The probe's suffix must be text, not int"),
    ("replace", "r" * 19_999, "Your edit would make candidate 1 "),  # each space of the reply: 19,999 r
])
def test_the_probes_own_edit_is_bounded_before_it_is_built(engine, turn, no_model_work, field, value, match):
    own = {"prefix": None, "suffix": None, "find": " " if field == "replace" else None, "replace": None} | {field: value}
    with pytest.warns(UserWarning, match=match):
        outputs = probing.probe_candidates(engine, turn, "1", None, **own)
    assert outputs == [gr.skip()] * 4


def test_picking_and_insight_numbers_are_checked(turn):
    refused(choices.use_candidate, turn, NAN, match="There is no candidate nan: pick one of 1 to 4")
    with pytest.warns(UserWarning, match="α must be a number from 0 to 5, not nan"):
        assert analysis.insight_json(None, turn, NAN) == {"__type__": "update"}


def test_the_max_new_tokens_slider_follows_the_language_model(engine):
    slider = next(b for b in build_demo(engine).blocks.values() if getattr(b, "elem_id", None) == "max-tokens")
    assert slider.maximum == 512  # half of the tiny LM's 1,024 positions
    assert ui_models.max_tokens_range(engine, "tiny", 2000) == {"__type__": "update", "maximum": 512, "value": 512}


def test_a_failed_model_switch_leaves_the_loaded_models_in_place(engine, turn, tmp_path, monkeypatch):
    engine.lm()  # loaded: any reload below would fail the turn
    monkeypatch.setattr(engine_module, "load_lm", lambda *a, **k: (_ for _ in ()).throw(LoadError("no Hub")))
    with pytest.warns(UserWarning, match="no Hub"):
        statuses = list(ui_models.load_model(engine, "lm", str(tmp_path)))
    assert statuses[-1] == f"Could not load {tmp_path}, so nothing changed: no Hub"
    assert engine.loaded("lm") == ["tiny"]
    assert "Scored 4 candidates" in send(engine, turn, "Still there?")[-1][2]


def test_a_server_offers_only_its_allowed_models(tmp_path):
    shared = Engine("tiny", "tiny", "fp32", "cpu", allowed={"lm": ("tiny",), "rm": ("tiny",)})
    refused(events.chat, shared, view.new_session(), "Hi", *(SETTINGS | {"rm2": "tiny-34b"}).values(), message="Hi",
            match="The reward model 'tiny-34b' is not offered on this server: choose one of tiny")
    with pytest.warns(UserWarning, match="not offered"):
        assert "not offered" in list(ui_models.load_model(shared, "lm", str(tmp_path)))[-1]
    lm = next(b for b in build_demo(shared).blocks.values() if getattr(b, "elem_id", None) == "lm")
    assert lm.choices == [("tiny", "tiny")] and not lm.interactive and lm.info == "Set by the server."


def write_rows(path: Path, count: int, extra: str = "") -> str:
    row = {"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go."}
    path.write_text(extra + "\n".join(json.dumps(row) for _ in range(count)) + "\n", encoding="utf-8")
    return str(path)


def evaluated(engine, path):
    return list(evaluation.evaluate_file(engine, path, "tiny", "card", progress=lambda *a, **k: None))


@pytest.mark.parametrize("limit, value, count, match", [
    ("MAX_UPLOAD_BYTES", 2**20, 16_000, r"The file has 1.4 MB; this server takes at most 1 MB"),
    ("MAX_EVAL_ROWS", 3, 4, "The file has 4 rows; this server scores at most 3 per file"),
])
def test_evaluation_files_over_the_limits_are_refused_with_what_to_do(engine, tmp_path, monkeypatch, no_model_work,
                                                                      limit, value, count, match):
    monkeypatch.setattr(evaluation, limit, value)
    with pytest.warns(UserWarning, match=match):
        outputs = evaluated(engine, write_rows(tmp_path / "big.jsonl", count))
    assert "python -m starling_demo eval" in outputs[-1][2] and outputs[-1][0].empty


def test_evaluation_lines_over_the_limit_are_listed_and_a_bom_is_accepted(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "MAX_LINE_CHARS", 200)
    path = write_rows(tmp_path / "rows.jsonl", 2, extra="\ufeff")
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps({"messages": [{"role": "user", "content": "x" * 300}], "chosen": "a", "rejected": "b"}))
    long_line = Path(path).read_text(encoding="utf-8").split("\n")[-1]
    report, errors, status, *_ = evaluated(engine, path)[-1]
    assert list(report["rows"]) == [2] and errors == f"line 3: {len(long_line)} characters; a row may have at most 200"


def test_a_file_that_is_not_utf8_names_the_line(engine, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "\xff"}\n')
    with pytest.warns(UserWarning, match=r"not UTF-8 text \(line 2\)"):
        evaluated(engine, str(path))


def test_evaluation_scores_in_batches_and_stops_when_closed(engine, tmp_path, monkeypatch):
    batches = []
    monkeypatch.setattr(engine, "shared_batch_tokens", lambda rm=None: 64)  # a few of these short rows per batch
    monkeypatch.setattr(engine, "values", lambda rm, groups, *args: batches.append(len(groups)) or
                        Engine.values(engine, rm, groups, *args))
    run = evaluation.evaluate_file(engine, write_rows(tmp_path / "rows.jsonl", 30), "tiny", "card",
                                   progress=lambda *a, **k: None)
    assert next(run)[2] == f"Scoring with **tiny**: {batches[0]} of 30 rows…"
    assert len(batches) == 1 and 1 < batches[0] < 30
    run.close()  # what Gradio does on cancel or disconnect
    assert len(batches) == 1


def test_probes_and_evaluations_give_their_memory_back_also_when_stopped(engine, turn, tmp_path, monkeypatch):
    """The freed heap of a long scoring job goes back to the system when the job ends, however it ends: glibc would
    keep its peak (a server's RSS stayed 189 MiB up after an attack of largest probes, `bench_load`)."""
    released = []
    for module in (probing, evaluation):
        monkeypatch.setattr(module, "release_freed_memory", lambda: released.append(1))
    probing.probe_candidates(engine, turn, "1", ["refusal"], rm="tiny", readout="card")
    assert released == [1]
    evaluated(engine, write_rows(tmp_path / "rows.jsonl", 3))
    assert released == [1, 1]
    run = evaluation.evaluate_file(engine, write_rows(tmp_path / "rows.jsonl", 30), "tiny", "card",
                                   progress=lambda *a, **k: None)
    next(run)
    run.close()  # cancelled
    assert released == [1, 1, 1]


def test_exports_leave_no_folders_behind(turn):
    first = Path(analysis.export_pairs(turn)).parent
    os.utime(first, (0, 0))  # as if exported long ago: Gradio has long since copied it
    second = Path(analysis.export_pairs(turn)).parent
    assert not first.exists() and second.parent == analysis.EXPORTS


def test_the_server_settings_limit_uploads_and_keep_no_analytics(engine):
    demo = build_demo(engine)
    assert launch_kwargs()["max_file_size"] == limits.MAX_UPLOAD_BYTES
    assert demo.analytics_enabled is False and demo.delete_cache == (900, 3600)


def test_readme_states_the_limits():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Limits"):readme.index("### On a Hugging Face Space")]
    values = [f"{limits.MAX_MESSAGE_CHARS:,} characters", f"{limits.MAX_SYSTEM_CHARS:,} characters",
              f"{limits.MAX_UPLOAD_BYTES // 2**20} MB, {limits.MAX_EVAL_ROWS:,} rows, "
              f"{limits.MAX_LINE_CHARS:,} characters",
              f"{limits.MAX_REQUEST_BYTES // 2**20} MB", f"batches of at most {limits.SHARED_BATCH_TOKENS['cuda']:,} tokens on a GPU and "
              f"{limits.SHARED_BATCH_TOKENS['cpu']:,} on a CPU",
              f"{limits.MAX_JOBS_PER_VISITOR['gpu']} turn or scoring jobs (one running, one waiting), "
              f"{limits.MAX_JOBS_PER_VISITOR['probe']} probe or attribution and "
              f"{limits.MAX_JOBS_PER_VISITOR['eval']} evaluation",
              f"{limits.MAX_JOBS_PER_CLIENT['gpu']} turn or scoring jobs, {limits.MAX_JOBS_PER_CLIENT['probe']} "
              f"probes and {limits.MAX_JOBS_PER_CLIENT['eval']} evaluations from one address", f"hold at most {limits.MAX_JOBS_PER_CLIENT['gpu']} turns",
              f"a body that stalls for {server.BODY_SECONDS} s is refused with 408",
              f"{limits.JOB_REQUEST_BURST} at once, then {limits.JOB_REQUESTS_PER_SECOND} a second: a later one waits "
              f"for its turn, and one that would wait over {limits.PACE_SECONDS} s waits {limits.PACE_SECONDS} s",
              f"prefix, suffix, find and replacement {limits.MAX_MESSAGE_CHARS:,} characters each, and the reply it "
              f"would make at most {limits.MAX_MESSAGE_CHARS:,}",
              f"forgotten {limits.SESSION_SECONDS // 3600} hours after its last change; the server keeps at most "
              f"{limits.MAX_SESSIONS:,}", f"and {limits.MAX_SESSIONS_PER_CLIENT} of one address's"]
    assert [value for value in values if value not in section] == []


def test_sessions_expire_and_are_bounded_in_number(engine):
    """A session is forgotten SESSION_SECONDS after its last change (Gradio deletes expired state every second), and
    the server holds at most MAX_SESSIONS: about 7 MB each at most, not 10,000 kept for ever."""
    demo = build_demo(engine)
    [session] = [block for block in demo.blocks.values() if isinstance(block, gr.State) and block.elem_id is None
                 and isinstance(block.value, dict) and "turns" in block.value]
    assert session.time_to_live == limits.SESSION_SECONDS
    assert launch_kwargs()["state_session_capacity"] == limits.MAX_SESSIONS
