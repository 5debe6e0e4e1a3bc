"""Handler tests: the UI's event functions called as plain Python on the tiny engine."""
import json
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import SETTINGS

from starling_demo.ui import choices, live, view
from starling_demo.ui import turns as events
from starling_demo.ui import analysis, evaluation
from starling_demo.device_lock import DeviceLock
from starling_demo.engine import Engine
from starling_demo.loading import LoadError
from starling_demo.ui import build_demo
from starling_demo.ui.cards import MAX_CARDS
from starling_demo.ui.render import chat_messages, trace_html

SCORE_SETTINGS = [SETTINGS[k] for k in ("rm", "readout", "rm2")]


RANKING = 5 + 2 * MAX_CARDS  # the ranking's place in a turn event's outputs, after the cards
SKIP = {"__type__": "update"}


def replay(frames):
    """What the page shows after each frame a handler yields: an output sent as gr.skip() stays as it was."""
    shown = None
    for frame in frames:
        shown = list(frame) if shown is None else [old if new == SKIP else new for old, new in zip(shown, frame)]
        yield shown


def send(engine, session, message, **overrides):
    """Run the chat handler to the end; returns what the page shows after each yielded frame."""
    settings = SETTINGS | overrides
    return list(replay(events.chat(engine, session, message, *settings.values())))


def session_of(outputs):
    return outputs[0]


def cards_of(outputs):
    """The text of each card (outputs 5 to RANKING are the text and badge of each card)."""
    return outputs[5:RANKING][0::2]


def assert_skipped(outputs, message=None):
    """Every output left alone; but with `message`, the message box (output 4) gets it back (the page empties the
    box as it sends)."""
    if message is not None:
        assert outputs[4] == message
        outputs = outputs[:4] + outputs[5:]
    assert all(isinstance(o, dict) and o.get("__type__") == "update" and len(o) == 1 for o in outputs)


@pytest.fixture(scope="module")
def first_turn(engine):
    return send(engine, view.new_session(), "Hello there")


def test_build_demo_names_the_api_endpoints(engine):
    names = {dep.api_name for dep in build_demo(engine).fns.values() if dep.api_visibility == "public"}
    assert {"chat", "regenerate", "score", "add_candidate", "use_candidate", "undo", "clear",
            "export_pairs", "export_nectar", "evaluate"} <= names


def test_send_streams_candidates_then_ranks_them(engine, first_turn, monkeypatch):
    monkeypatch.setattr(events, "FRAME_SECONDS", 0)
    streamed = [o for o in send(engine, view.new_session(), "Hello there") if "Generating" in o[2]]
    assert len(streamed) >= 5  # with no frame limit, one update per token step
    assert all("★ best" not in badge for o in streamed for badge in o[5:RANKING][1::2])
    assert "Scored 4 candidates" in first_turn[-1][2]
    turn = first_turn[-1][3]
    assert len(turn["candidates"]) == 4 and len(turn["rewards"]) == 4 and turn["seed"] == 7
    assert turn["chosen"] == turn["ranking"][0] and turn["picked_by"] == "best"
    ranking = first_turn[-1][RANKING]
    rewards = [float(r) for r in re.findall(r"data-reward='(-?[\d.]+)'", ranking)]
    assert rewards == [round(r, 4) for r in sorted(turn["rewards"], reverse=True)]
    assert f"data-candidate='{turn['chosen'] + 1}'" in ranking.split("</tr>")[1]
    bot = first_turn[-1][1][-1]
    assert bot["role"] == "assistant" and f"candidate {turn['chosen'] + 1} of 4" in bot["content"]


def test_frames_come_at_a_steady_pace_and_hold_values_not_property_updates(engine, monkeypatch):
    now = [0.0]
    pace = events.Pace(clock=lambda: now[0])
    due = []
    for t in (0.0, 0.05, 0.099, 0.1, 0.15, 0.31):
        now[0] = t
        due.append(pace.due())
    assert due == [True, False, False, True, False, True]
    crowded = events.Pace(clock=lambda: now[0], streaming=lambda: 8)  # 7 others streaming: 7/20 s apart
    due = []
    for t in (0.0, 0.1, 0.34, 0.36, 0.7, 0.72):
        now[0] = t
        due.append(crowded.due())
    assert due == [True, False, False, True, False, True]
    # Gradio rebuilds a component for every property update (gr.skip() too) in every frame: a frame holds
    # values only, but for the message box, which must keep what the visitor types meanwhile.
    # One streamed frame at most, whatever the machine's speed (the pace itself is checked on a fake clock above).
    monkeypatch.setattr(events, "FRAME_SECONDS", 3600)
    frames = list(events.chat(engine, view.new_session(), "Hello", *(SETTINGS | {"max_new_tokens": 40}).values()))
    updates = [i for frame in frames for i, output in enumerate(frame) if isinstance(output, dict)
               and output.get("__type__") == "update"]
    assert set(updates) == {4} and len(frames) < 10  # 40 token steps, a handful of frames


def test_a_turn_holds_the_device_once_from_its_first_token_to_its_reward(engine, monkeypatch):
    """So that no batch chunk (an evaluation's, a probe's) goes between its generation and its scoring."""
    holds = []

    class Counted(DeviceLock):
        def __enter__(self):
            holds.append("turn")
            return super().__enter__()

    monkeypatch.setattr(engine, "device_lock", Counted())
    outputs = send(engine, view.new_session(), "Hello", rm2="tiny")  # a second RM's scoring too
    assert "Scored 4 candidates" in outputs[-1][2] and outputs[-1][3]["rewards2"]
    assert holds == ["turn"]


def test_a_first_turn_says_which_model_is_loading_while_it_loads_before_it_generates():
    fresh = Engine("tiny", "tiny", "fp32", "cpu")
    statuses, loaded = [], []
    for outputs in replay(events.chat(fresh, view.new_session(), "Hello", *SETTINGS.values())):
        statuses.append(outputs[2])
        loaded.append((fresh.is_loaded("lm", "tiny"), fresh.is_loaded("rm", "tiny")))
    lm_loading = next(i for i, s in enumerate(statuses) if s.startswith("Loading language model"))
    rm_loading = next(i for i, s in enumerate(statuses) if s.startswith("Loading reward model"))
    assert loaded[lm_loading] == (False, False) and loaded[rm_loading] == (True, False)  # shown before loading
    # Both load before the turn holds the device (its first "Generating" line): other turns go on meanwhile.
    assert lm_loading < rm_loading and statuses[rm_loading + 1].startswith("Generating")
    assert loaded[rm_loading + 1] == (True, True) and "Scored 4 candidates" in statuses[-1]


def test_use_a_non_best_candidate_continues_with_it(engine, first_turn):
    session, turn = session_of(first_turn[-1]), first_turn[-1][3]
    other = turn["ranking"][-1]
    outputs = choices.use_candidate(session, other + 1)
    assert outputs[3]["chosen"] == other and outputs[3]["picked_by"] == "you"
    assert "picked by you" in outputs[1][-1]["content"]
    following = send(engine, session_of(outputs), "And then?")
    messages = following[-1][0]["turns"][-1]["messages"]
    assert messages[1] == {"role": "assistant", "content": turn["candidates"][other]}
    assert messages[-1] == {"role": "user", "content": "And then?"}


def test_own_and_edited_candidates_are_ranked(engine, first_turn):
    session = session_of(first_turn[-1])
    cards = cards_of(first_turn[-1])
    added = events.add_candidate(engine, session, "My own answer.", *SCORE_SETTINGS, None, *cards)
    turn = added[3]
    assert turn["candidates"][-1] == "My own answer." and len(turn["rewards"]) == 5
    assert 4 in turn["ranking"] and added[-1] == ""
    edited = cards_of(added)[:5]
    edited[0] = "A completely different first reply."
    rescored = events.rescore(engine, session_of(added), *SCORE_SETTINGS, None, *edited)
    assert rescored[3]["candidates"][0] == edited[0]
    assert rescored[3]["rewards"][0] != turn["rewards"][0] and rescored[3]["rewards"][1:] == turn["rewards"][1:]


def test_stop_ends_generation_and_scores_the_partial_candidates(engine, monkeypatch):
    monkeypatch.setattr(events, "FRAME_SECONDS", 0)  # a frame per token step, so Stop comes after the first
    visitor = SimpleNamespace(session_hash="visitor")
    settings = SETTINGS | {"max_new_tokens": 200}
    steps = replay(events.chat(engine, view.new_session(), "Tell a long story.", *settings.values(), visitor))
    for outputs in steps:
        if outputs[3].get("candidates"):  # the first token step
            events.request_stop(False, visitor)
            break
    final = list(steps)[-1]
    assert final[2].startswith("Stopped early. Scored 4 candidates")
    badges = final[5:RANKING][1::2][:4]
    assert all("cut short by Stop" in badge for badge in badges)
    assert max(final[3]["lengths"]) < 100 and final[3]["chosen"] is not None
    assert view.RUNNING == set() and view.STOP_REQUESTS == set()


def test_stop_is_kept_for_a_turn_the_page_asked_for_and_ignored_when_none_is(engine):
    visitor = SimpleNamespace(session_hash="early visitor")
    events.request_stop(False, visitor)  # nothing asked for or running: a later turn must not stop
    assert view.STOP_REQUESTS == set()
    events.request_stop(True, visitor)  # pressed before the page's turn reached the server
    frames = list(view.page_frames(events.chat)(engine, view.new_session(), "Hi", *SETTINGS.values(), visitor))
    assert frames[-1][2].startswith("Stopped early. Scored 4 candidates")
    assert view.STOP_REQUESTS == set()  # spent with the turn


def test_the_conversation_cannot_change_under_a_running_turn(engine, first_turn):
    visitor = SimpleNamespace(session_hash="busy visitor")
    session = session_of(first_turn[-1])
    steps = events.chat(engine, session, "Go on.", *SETTINGS.values(), visitor)
    next(steps)  # the turn has started
    for action in (lambda: choices.undo(session, visitor), lambda: choices.clear(session, visitor),
                   lambda: choices.use_candidate(session, 2, visitor)):
        with pytest.warns(UserWarning, match="still being generated or scored"):
            assert_skipped(action())
    assert "Scored 4 candidates" in list(steps)[-1][2]
    assert choices.undo(session, visitor)[0] == {"turns": []}  # once it is over, the actions work again


def test_undo_while_candidates_are_rescored_is_refused(engine, first_turn, monkeypatch):
    visitor, session, refused = SimpleNamespace(session_hash="scoring visitor"), session_of(first_turn[-1]), []
    score = engine.score

    def score_then_undo(*args, **kwargs):
        refused.append(choices.undo(session, visitor))  # the visitor presses Undo while the RM runs
        return score(*args, **kwargs)

    monkeypatch.setattr(engine, "score", score_then_undo)
    with pytest.warns(UserWarning, match="still being generated or scored"):
        outputs = events.rescore(engine, session, *SCORE_SETTINGS, visitor, *first_turn[-1][3]["candidates"])
    assert_skipped(refused[0])
    assert "Scored 4 candidates" in outputs[2] and len(outputs[0]["turns"]) == 1


def test_the_message_box_is_left_alone_and_refilled_on_refusal_or_failure(engine, first_turn, monkeypatch):
    # The page empties the box as it sends; a turn never writes to it, so what is typed meanwhile stays.
    frames = list(events.chat(engine, view.new_session(), "Hello", *SETTINGS.values()))  # as sent
    assert all(o[4] == {"__type__": "update"} for o in frames)
    with pytest.warns(UserWarning):
        refused = send(engine, view.new_session(), "Hello", temperature="hot")
    assert refused[-1][4] == "Hello"

    def no_hub(*args, **kwargs):
        raise LoadError("The Hugging Face Hub cannot be reached.")
        yield

    monkeypatch.setattr(engine, "generate", no_hub)
    with pytest.warns(UserWarning):
        failed = send(engine, session_of(first_turn[-1]), "Keep me")
    assert failed[-1][4] == "Keep me"


def test_a_second_reward_model_that_fails_leaves_the_turn_scored(engine, monkeypatch):
    def rm(name=None):
        if name == "tiny-34b":
            raise LoadError("Starling-RM-34B is gated: accept its licence and set HF_TOKEN.")
        return Engine.rm(engine, name)

    monkeypatch.setattr(engine, "rm", rm)
    with pytest.warns(UserWarning, match="Not compared with tiny-34b: Starling-RM-34B is gated"):
        outputs = send(engine, view.new_session(), "Hello", rm2="tiny-34b")
    assert "Scored 4 candidates" in outputs[-1][2] and outputs[-1][3]["rewards2"] is None


def test_undo_regenerate_and_clear(engine, first_turn):
    session = session_of(first_turn[-1])
    assert choices.undo(session)[0] == {"turns": []}
    again = list(replay(events.regenerate(engine, session, *(SETTINGS | {"seed": "8"}).values())))
    turns = again[-1][0]["turns"]
    assert len(turns) == 1 and turns[0]["messages"][-1]["content"] == "Hello there" and turns[0]["seed"] == 8
    assert choices.clear(session)[0] == {"turns": []}


@pytest.mark.parametrize("message, seed, problem", [("   ", "7", "empty"), ("x" * 20_001, "7", "shorten it"),
                                                     ("Hi", "abc", "seed must be"), ("Hi", "²", "seed must be"),
                                                     ("Hi", "-5", "seed must be"), ("Hi", str(2**64), "seed must be")])
def test_bad_messages_warn_and_change_nothing(engine, first_turn, message, seed, problem):
    with pytest.warns(UserWarning, match=problem):
        outputs = send(engine, session_of(first_turn[-1]), message, seed=seed)
    assert len(outputs) == 1
    assert_skipped(outputs[0], message)


def test_running_out_of_gpu_memory_says_what_to_lower(engine, first_turn, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield

    monkeypatch.setattr(engine, "generate", out_of_memory)
    session = session_of(first_turn[-1])
    with pytest.warns(UserWarning, match="ran out of memory: lower the number of candidates"):
        outputs = send(engine, session, "Hi")
    assert outputs[-1][0] is session and "Nothing changed" in outputs[-1][2]


def test_load_error_warns_and_keeps_the_conversation(first_turn):
    broken = Engine("tiny", "tiny", "no-such-precision", "cpu")
    session = session_of(first_turn[-1])
    with pytest.warns(UserWarning, match="Unknown precision"):
        outputs = send(broken, session, "Hi")
    assert outputs[-1][0] is session


def test_actions_without_a_turn_warn(engine):
    empty = view.new_session()
    with pytest.warns(UserWarning, match="send a message first|Send a message first|Nothing to undo"):
        for outputs in (events.rescore(engine, empty, *SCORE_SETTINGS, None), choices.use_candidate(empty, 1),
                        choices.undo(empty), events.add_candidate(engine, empty, "mine", *SCORE_SETTINGS, None)):
            assert_skipped(outputs)
    with pytest.warns(UserWarning, match="Nothing to export"):
        analysis.export_pairs(empty)


def test_markup_is_escaped_everywhere():
    attack = "<img src=x onerror=alert(1)><script>window.__xss=1</script>"
    turn = {"messages": [{"role": "user", "content": attack}], "candidates": [attack], "chosen": 0}
    rendered = json.dumps(chat_messages([turn])) + trace_html([attack], [0.5])
    assert "<img" not in rendered and "<script" not in rendered and "&lt;img" in rendered


def test_panels_and_exports_describe_the_turn(engine, first_turn):
    session = session_of(first_turn[-1])
    outputs = analysis.panels(engine, session, "2", 1.0)
    trace_view, wins, bias, lm_input = outputs[1], outputs[3], outputs[5], outputs[9]
    assert trace_view.count("class='tok'") == first_turn[-1][3]["lengths"][1]
    assert f"Reward <b>{first_turn[-1][3]['rewards'][1]:.3f}</b>, read at index 2047" in trace_view
    assert wins.count("<td") == 16 and "Plackett-Luce" in outputs[4]
    assert "Spearman" in bias and "α = 1" in bias
    assert lm_input.startswith("<s>GPT4 Correct User: Hello there<|end_of_turn|>")
    with open(analysis.export_pairs(session), encoding="utf-8") as f:
        assert len(f.readlines()) == 3  # best against each of the other three
    with open(analysis.export_nectar(session), encoding="utf-8") as f:
        record = json.loads(f.read())
    assert record["num_responses"] == 4 and sorted(a["rank"] for a in record["answers"]) == [1, 2, 3, 4]


def test_second_reward_model_is_compared(engine):
    outputs = send(engine, view.new_session(), "Compare", rm2="tiny-34b", max_new_tokens=4)
    turn = outputs[-1][3]
    assert turn["rm2"] == "tiny-34b" and len(turn["rewards2"]) == 4
    assert "Kendall" in analysis.panels(engine, outputs[-1][0], None, 0.5)[7]


def test_batch_evaluation_reports_accuracy_and_bad_lines(engine, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away.",
             "subset": "chat"},
            {"messages": [{"role": "user", "content": "2+2?"}], "candidates": ["4", "5", "22"]},
            "not json"]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows), encoding="utf-8")
    *_, (report, errors, status, accuracy, margins, rows_file) = evaluation.evaluate_file(
        engine, str(path), "tiny", "card", progress=lambda *a, **k: None)
    # Groups with a ranking of three get best-of-K beside pairwise accuracy (the ranking's own, first).
    assert list(report["subset"]) == ["all rows", "all rows", "chat", "(no subset)", "(no subset)"]
    assert list(report["rows"]) == [2, 2, 1, 1, 1]
    assert list(report["accuracy of"]) == ["pairwise", "best-of-K", "pairwise", "pairwise", "best-of-K"]
    assert accuracy.chart == margins.chart == "line"  # the chart kind Gradio styles with the page's theme
    records = [json.loads(line) for line in open(rows_file, encoding="utf-8")]
    assert [(r["line"], r["subset"], len(r["rewards"])) for r in records] == [(1, "chat", 2), (2, "all", 3)]
    assert errors.startswith("line 3: invalid JSON") and "Evaluated 2 rows" in status


@pytest.mark.parametrize("content, problem", [(b"\xff\xfe not utf-8", "not UTF-8"),
                                              (None, "Upload a JSONL, JSON or Parquet file")])
def test_batch_evaluation_of_a_bad_file_says_what_to_do(engine, tmp_path, content, problem):
    path = None
    if content is not None:
        path = tmp_path / "bad.jsonl"
        path.write_bytes(content)
    with pytest.warns(UserWarning, match=problem):
        *_, (report, errors, status, *pictures_and_rows) = evaluation.evaluate_file(
            engine, path and str(path), "tiny", "card", progress=lambda *a, **k: None)
    assert report.empty and status.startswith("Nothing evaluated") and problem in status
    assert pictures_and_rows == [None, None, None]


def test_the_page_gets_a_frame_per_status_and_pulls_the_cards_meanwhile(engine, first_turn):
    session = session_of(first_turn[-1])
    before = session["turns"][-1]["candidates"]
    cards = before + [""] * (MAX_CARDS - len(before))
    steps = view.page_frames(events.chat)(engine, session, "Go on", *SETTINGS.values(), None, *cards)
    first, generating = next(steps), next(steps)  # "Generating…", then with the seed once the first step is out
    key = re.search(r"data-live='([\w-]+)'", first[-1]).group(1)
    assert first[-1] == generating[-1] == live.placeholder(4, key)
    pulled = live.live_cards([key, []])  # the live cards ask for all; then for what changed since
    assert not pulled["done"] and [card[0] for card in pulled["cards"]] == [1, 2, 3, 4]
    assert live.live_cards([key, [card[3] for card in pulled["cards"]]])["cards"] == []
    frames = [first, generating, *steps]
    assert live.live_cards([key, []]) == live.DONE  # the turn has ended: nothing to pull
    texts = [view.PAGE_FRAME.index(i) for i in view.TEXTS]
    buttons = len(view.PAGE_FRAME)  # then Send, Regenerate and the 8 "Use this reply", the message, the live cards
    assert all(len(frame) == view.OUTPUTS - 2 + 2 + MAX_CARDS + 2 for frame in frames)
    assert not any(isinstance(output, dict) and "ranking" in output for frame in frames for output in frame)
    *streamed, last = frames
    statuses = [frame[2] for frame in streamed]
    assert len(set(statuses)) == len(statuses) <= 3  # generating, then scoring: no frame per token step
    assert all([frame[i] for i in texts] == cards for frame in streamed)  # as the page sent them
    assert all(frame[buttons:-2] == list(view.BUSY_LABELS) for frame in streamed)  # values: nothing to redraw
    assert all(frame[-2] == "" for frame in frames)  # the page emptied the box; nothing to give back
    assert all(frame[-1] == first[-1] for frame in streamed) and last[-1] == ""  # the turn's own cards come back
    scored = session_of(last)["turns"][-1]["candidates"]
    assert [last[i] for i in texts][:4] == scored and scored != before
    # The frame that says "Scored" also turns the buttons back on, the chosen card's saying so.
    assert "Scored 4 candidates" in last[2] and last[buttons] == {"__type__": "update", "value": "Send",
                                                                   "interactive": True}
    chosen = session_of(last)["turns"][-1]["chosen"]
    assert last[buttons + 2 + chosen]["value"] == "✔ Continuing"
    with pytest.warns(UserWarning, match="temperature|Temperature"):
        refused = list(view.page_frames(events.chat)(engine, session, "Keep me", *(SETTINGS | {"temperature": "hot"})
                                                     .values(), None, *cards))
    assert len(refused) == 1 and refused[0][-2:] == ["Keep me", ""]  # back to the box; the waiting cards go
    # The buttons and the ranking as they were before the page asked (it showed them busy and empty meanwhile).
    assert refused[0][buttons]["interactive"] is True and "rank-row" in refused[0][view.PAGE_FRAME.index(RANKING)]
    assert [refused[0][i] for i in texts] == cards
    assert live.TURNS == {}


def test_live_cards_show_a_reply_and_its_progress_and_never_a_reward():
    turn = {"candidates": ["## Hi\n\n<b>x</b>", "b"], "token_counts": [5, 1], "finished": ["stop", None],
            "settings": {"n": 2}}
    key = live.watch(turn)
    try:
        first = live.live_cards([key, ["4 None"]])
        assert [card[0] for card in first["cards"]] == [1, 2]
        number, badge, reply, progress = first["cards"][0]
        assert "5 LM tokens · done" in badge and progress == "5 stop"
        assert reply.startswith("<h2>Hi</h2>") and "&lt;b&gt;x" in reply  # rendered, markup as text
        assert live.live_cards([key, ["5 stop", "1 None"]])["cards"] == []
        # A collapsed card whose first lines are filled takes its badge alone.
        assert [card[2] is None for card in live.live_cards([key, [], [2]])["cards"]] == [True, False]
        turn.update(rewards=[0.25, 0.75], hidden=True, lengths=[3, 1])  # scoring has begun, blind
        again = live.live_cards([key, []])
        assert len(again["cards"]) == 2 and not re.search(r"0\.25|0\.75|reward|rank \d", str(again))
    finally:
        live.unwatch(key)
    assert live.live_cards([key, [[]], [[1], {}]]) == live.DONE  # unwatched; and no shape of input breaks it
    for asked in (None, "key", [], [3, 4], {"key": key}):
        assert live.live_cards(asked) == live.DONE


def judged(session):
    """`session` with its last turn judged as if blind: its best first (no model runs)."""
    import copy

    turn = session["turns"][-1]
    return copy.deepcopy(session) | {"turns": [*session["turns"][:-1], turn | {
        "blind": True, "human": turn["ranking"] if "ranking" in turn else [turn["chosen"]],
        "judgement": {"ranked": 1, "top1": True, "pairs": 3, "agreed_pairs": 3, "pairwise": 1.0,
                      "kendall_tau": None}}]}


def test_clear_all_is_named_and_refused_under_a_running_turn(engine, first_turn):
    names = {dep.api_name for dep in build_demo(engine).fns.values() if dep.api_visibility == "public"}
    assert "clear_all" in names
    visitor = SimpleNamespace(session_hash="busy clearing visitor")
    session = judged(session_of(first_turn[-1]))
    steps = events.chat(engine, session, "Go on.", *SETTINGS.values(), visitor)
    next(steps)  # the turn has started
    for action in (choices.clear, choices.clear_all):
        with pytest.warns(UserWarning, match="still being generated or scored"):
            assert_skipped(action(session, visitor))
    list(steps)
    assert choices.clear_all(session, visitor)[0] == {"turns": []}


def test_clear_keeps_a_bounded_record_and_says_what_it_dropped(engine, first_turn, monkeypatch):
    monkeypatch.setattr(choices, "MAX_CLEARED", 2)
    session = judged(session_of(first_turn[-1]))
    assert "traces" in session["turns"][0] and "reply_ids" in session["turns"][0]
    statuses = []
    for _ in range(3):  # three conversations of one judged turn each
        outputs = choices.clear(session)
        statuses.append(outputs[2])
        session = {**outputs[0], "turns": session["turns"]}
    assert [t["conversation"] for t in session["cleared"]] == [2, 3]  # the oldest went
    assert "tally (2 judged turns)" in statuses[-1] and statuses[-1].endswith(
        "The oldest 1 cleared turn was dropped: a session keeps the last 2.")
    assert "dropped" not in statuses[1]
    assert all("traces" not in t and "reply_ids" not in t for t in session["cleared"])
    # A conversation with nothing judged or probed leaves nothing, and Clear says nothing of tallies.
    assert choices.clear(session_of(first_turn[-1]))[2] == "Cleared the conversation."


def test_regenerate_keeps_the_cleared_turns(engine, first_turn):
    kept = choices.clear(judged(session_of(first_turn[-1])))[0]
    session = send(engine, kept, "Hello again")[-1][0]
    assert session["cleared"] == kept["cleared"]  # a new turn keeps them
    again = list(replay(events.regenerate(engine, session, *SETTINGS.values())))[-1][0]
    assert again["cleared"] == kept["cleared"]


def eval_file(tmp_path, count):
    row = {"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go."}
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(row) for _ in range(count)), encoding="utf-8")
    return str(path)


def test_the_page_empties_the_last_report_as_evaluate_is_pressed_and_restores_the_buttons_after(engine, tmp_path):
    visitor = SimpleNamespace(session_hash="evaluating-visitor")
    report, errors, status, accuracy, margins, rows, evaluate, cancel = evaluation.starting("tiny", visitor)
    assert report.empty and list(report.columns) == list(evaluation.REPORT_HEADERS) and errors == ""
    assert accuracy is margins is rows is None  # nothing of the previous file
    assert status == "Scoring with **tiny**: starting…"
    assert evaluate == SKIP | {"interactive": False, "value": evaluation.RUNNING}
    assert cancel == SKIP | {"interactive": True}
    frames = list(evaluation.evaluate_file(engine, eval_file(tmp_path, 5), "tiny", "card",
                                           progress=lambda *a, **k: None, request=visitor))
    assert all(frame[0].empty and frame[1] == "" for frame in frames[:-1])  # values, not property updates
    assert "Evaluated 5 rows" in frames[-1][2]
    status, evaluate, cancel = evaluation.finished(frames[-1][2], visitor)
    assert status == SKIP  # the evaluation's own last frame says how it ended
    assert evaluate == SKIP | {"interactive": True, "value": evaluation.EVALUATE}
    assert cancel == SKIP | {"interactive": False}
    assert visitor.session_hash not in evaluation.RUNS


def test_a_cancelled_or_failed_evaluation_says_how_many_rows_were_scored(engine, tmp_path, monkeypatch):
    visitor = SimpleNamespace(session_hash="cancelling-visitor")
    monkeypatch.setattr(engine, "shared_batch_tokens", lambda rm=None: 64)  # a few rows per batch
    evaluation.starting("tiny", visitor)
    assert evaluation.finished("Scoring with **tiny**: starting…", visitor)[0] == (
        "Stopped before any row was scored; nothing reported.")  # cancelled while queued
    evaluation.starting("tiny", visitor)
    run = evaluation.evaluate_file(engine, eval_file(tmp_path, 30), "tiny", "card", progress=lambda *a, **k: None,
                                   request=visitor)
    done = int(re.search(r": (\d+) of 30", next(run)[2]).group(1))
    run.close()  # what Gradio's cancel does
    assert evaluation.finished(f"Scoring with **tiny**: {done} of 30 rows…", visitor)[0] == (
        f"Cancelled after {done} of 30 rows; nothing reported.")
    batches = []

    def failing(rm, groups, *args):
        batches.append(len(groups))
        if len(batches) == 2:
            raise RuntimeError("the device fell over")
        return Engine.values(engine, rm, groups, *args)

    monkeypatch.setattr(engine, "values", failing)
    evaluation.starting("tiny", visitor)
    run = evaluation.evaluate_file(engine, eval_file(tmp_path, 30), "tiny", "card", progress=lambda *a, **k: None,
                                   request=visitor)
    next(run)
    with pytest.raises(RuntimeError):
        next(run)
    assert evaluation.finished("Scoring with **tiny**: …", visitor)[0] == (
        f"Stopped by an error after {batches[0]} of 30 rows; nothing reported.")
    assert visitor.session_hash not in evaluation.RUNS


def test_the_probe_picker_says_rank_and_reward_with_all_first(engine, first_turn):
    from starling_demo.ui import probing
    from starling_demo.ui.cards import candidate_choices

    session = session_of(first_turn[-1])
    turn = session["turns"][-1]
    pick = probing.probe_panels(session)[0]
    assert pick["choices"] == [("all", "all"), *candidate_choices(turn)] and pick["value"] == "all"
    labels = [label for label, _ in pick["choices"][1:]]
    best = str(turn["rewards"].index(max(turn["rewards"])) + 1)
    assert labels[0] == f"#{best} · rank 1 · {max(turn['rewards']):.3f}" and all(" · rank " in x for x in labels)
    assert sorted(value for _, value in pick["choices"][1:]) == ["1", "2", "3", "4"]  # /probe's values as before
    assert probing.probe_panels(session, "3")[0]["value"] == "3"
    assert probing.probe_panels(session, "9")[0]["value"] == "all"
    assert probing.probe_panels(view.new_session())[0]["choices"] == []


def test_the_length_bias_plot_colours_each_kind_and_lists_the_best_first(engine, first_turn):
    session = session_of(first_turn[-1])
    text, plot = analysis.bias_panel(session, 0.5)
    frame, legend, colours = plot["value"], plot["colors_in_legend"], plot["color_map"]
    assert sorted(legend) == sorted(set(frame["role"])) == sorted(colours) and 1 <= len(legend) <= 3
    assert legend[0].startswith("RM's best") and (len(legend) < 3 or legend[-1] == "others")
    kinds = dict(zip(frame["role"], frame["kind"]))
    assert {role: analysis.LENGTH_COLOURS[kinds[role]] for role in legend} == colours
    assert len(set(analysis.LENGTH_COLOURS.values())) == 4
    assert analysis.bias_panel(view.new_session(), 0.5)[1] is None


def test_judgements_export_to_their_own_file_in_the_blind_judging_tab(engine):
    demo = build_demo(engine)
    [dep] = [dep for dep in demo.fns.values() if dep.api_name == "export_judged"]
    assert [o.elem_id for o in dep.outputs] == ["export-judged-file"] and dep.api_visibility == "public"
    endpoint = demo.get_api_info()["named_endpoints"]["/export_judged"]
    assert endpoint["parameters"] == [] and [r["component"] for r in endpoint["returns"]] == ["File"]
    files = {dep.api_name: [o.elem_id for o in dep.outputs] for dep in demo.fns.values()
             if dep.api_name in ("export_pairs", "export_nectar")}
    assert files == {"export_pairs": ["export-file"], "export_nectar": ["export-file"]}
