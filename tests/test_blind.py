"""Blind judging and probes in the UI: no reward leaves the server before the person's ranking, then the reveal,
the tally, the exports; probes and attribution through the handlers and the API; Clear keeps the tallies."""
import copy
import json
import re
import uuid

import httpx
import pytest
from conftest import SETTINGS
from gradio_client import Client
from test_sharing import join
from test_ui import RANKING, replay

from starling_demo.ui import analysis, blind, choices, probing, view
from starling_demo.ui import turns as events
from starling_demo.ui.blind import judging_json
from starling_demo.ui.cards import MAX_CARDS

STATUS, TURN = 2, 3  # in a handler's outputs (the API's drop the session)


def blind_turn(engine, session=None, message="Which bird sings best?"):
    frames = list(replay(events.chat(engine, session or view.new_session(), message, *SETTINGS.values(),
                                     blind=True)))
    return frames


def replay_chat(engine, message, session=None):
    """The session after a (not blind) turn."""
    return list(replay(events.chat(engine, session or view.new_session(), message, *SETTINGS.values())))[-1][0]


def reward_strings(rewards):
    """How a reward could show on the page or in JSON: full precision, 4 and 3 decimals."""
    return [s for r in rewards for s in (repr(r), f"{r:.4f}", f"{r:.3f}")]


def shows(secrets, text: str) -> bool:
    """Whether `text` holds one of `secrets` as a number of its own, not inside another (a queue estimate of
    10.1234 s is not a reward of 0.123)."""
    return any(re.search(rf"(?<![\d.]){re.escape(secret)}(?![\d])", text) for secret in secrets)


def test_a_blind_turn_shows_no_reward_until_judged(engine):
    frames = blind_turn(engine)
    session = frames[-1][0]
    rewards = session["turns"][-1]["rewards"]
    assert len(rewards) == 4 and session["turns"][-1].get("chosen") is None
    secrets = reward_strings(rewards)
    for frame in frames:  # everything but the session, which Gradio keeps on the server
        page = json.dumps(frame[1:], ensure_ascii=False)
        assert not shows(secrets, page)
    last = frames[-1]
    assert "rewards hidden" in last[STATUS] and last[TURN]["rewards"] is None and last[TURN]["hidden"]
    assert last[TURN]["ranking"] is None and "stay hidden" in last[RANKING]
    assert all("reward hidden until you judge" in badge for badge in last[5:RANKING][1::2][:4])
    panels = analysis.panels(engine, session, None, 0.5)
    assert not shows(secrets, json.dumps(str(panels)))
    assert "Judge first" in panels[1]
    with pytest.warns(UserWarning, match="Judge first"):
        analysis.insight_json(engine, session, 0.5)
    with pytest.warns(UserWarning, match="No turn judged yet"):
        analysis.export_judged(session)
    with pytest.warns(UserWarning, match="Judge first"):  # probes would reveal the rewards
        assert probing.probe_candidates(engine, session, "1", None, "", "", "", "", "tiny", "card") == [
            {"__type__": "update"}] * 4
    with pytest.warns(UserWarning, match="not judged yet"):
        list(events.chat(engine, session, "Next?", *SETTINGS.values(), blind=True))


def test_judging_reveals_the_rms_ranking_beside_yours(engine):
    session = blind_turn(engine)[-1][0]
    rewards = session["turns"][-1]["rewards"]
    with pytest.warns(UserWarning, match="appears twice"):
        choices.judge(session, ["2", "2"])
    revealed = choices.judge(session, ["3", "1"])
    turn = revealed[0]["turns"][-1]
    assert turn["human"] == [2, 0] and turn["chosen"] == 2 and turn["picked_by"] == "you"
    assert revealed[STATUS].startswith("Revealed:") and revealed[TURN]["rewards"] == rewards
    assert revealed[TURN]["judgement"]["ranked"] == 2 and revealed[TURN]["judgement"]["pairs"] == 5
    assert "<th>your rank</th>" in revealed[RANKING] and "your rank 1" in revealed[5 + 2 * 2 + 1]
    with pytest.warns(UserWarning, match="already shown"):
        choices.judge(revealed[0], ["1"])
    # A second blind turn, judged by picking the best with "Use this reply".
    second = blind_turn(engine, revealed[0], "And which one flies fastest?")[-1][0]
    picked = choices.use_candidate(second, 4)
    assert picked[0]["turns"][-1]["human"] == [3] and picked[STATUS].startswith("Revealed:")
    facts = judging_json(picked[0])
    assert facts["tally"]["turns"] == 2 and [t["turn"] for t in facts["turns"]] == [1, 2]
    assert facts["tally"]["pairs"] == 5 + 3
    with open(analysis.export_judged(picked[0]), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 8 and {r["human_ranking"][0] for r in records} == {2, 3}
    with open(analysis.export_nectar(picked[0]), encoding="utf-8") as f:
        nectar = [json.loads(line) for line in f]
    assert [a["human_rank"] for a in nectar[0]["answers"]] == [2, None, 1, None]


def test_the_page_gets_no_reward_before_the_ranking(app_url):
    """The server's own messages, as the page reads them, for a blind turn and then for its judging."""
    session = uuid.uuid4().hex
    data = [None, "Which bird sings best?", *SETTINGS.values(), *[""] * MAX_CARDS, True]

    def messages(api_name, data):
        join(app_url, api_name, data, session).raise_for_status()
        with httpx.stream("GET", f"{app_url}gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line.removeprefix("data:"))
                    yield message
                    if message["msg"] == "process_completed":
                        return

    hidden = list(messages("chat", data))
    assert hidden[-1]["success"] and "rewards hidden" in hidden[-1]["output"]["data"][2]
    revealed = list(messages("judge", [None, "2 4 1 3", *[""] * MAX_CARDS]))
    turn = revealed[-1]["output"]["data"][3]
    assert turn["human"] == [1, 3, 0, 2] and len(turn["rewards"]) == 4
    secrets = reward_strings(turn["rewards"])
    sent = json.dumps(hidden)
    assert not shows(secrets, sent) and re.search(r'"rewards": null', sent)
    assert shows(secrets, json.dumps(revealed))  # the check can see a reward when one is sent


def test_probes_and_attribution_through_the_api(app_url):
    client = Client(app_url, verbose=False)
    turn = client.predict("Tell me about starlings.", **SETTINGS, api_name="/chat")[2]
    table, summary, figures = client.predict("2", ["refusal", "lowercase"], "Sure! ", "", "", "", "tiny",
                                                "card", "rlhf", api_name="/probe")
    (probed,) = figures["candidates"]
    assert probed["candidate"] == 1 and probed["reward"] == pytest.approx(turn["rewards"][1], abs=1e-4)
    assert [e["edit"] for e in probed["edits"]] == ["refusal", "lowercase", "custom"]
    assert probed["edits"][2]["text"] == "Sure! " + turn["candidates"][1]
    assert "table class='probes'" in table and "Over 1 probed candidate" in summary
    everything = client.predict(number="all", rm="tiny", readout="card", api_name="/probe")[2]  # every edit
    assert len(everything["candidates"]) == 4 and len(everything["candidates"][0]["edits"]) == 10
    assert {row["edit"] for row in everything["aggregate"]} >= {"refusal", "repeat"}
    assert next(r for r in everything["aggregate"] if r["edit"] == "refusal")["n"] == 4
    coloured, result = client.predict("1", "tiny", "card", "rlhf", api_name="/attribute")
    assert result["candidate"] == 0 and result["reward"] == pytest.approx(turn["rewards"][0], abs=1e-4)
    assert coloured.count("class='unit") == len(result["units"])
    client.close()


def test_the_readme_script_for_blind_judging_and_probes_runs(app_url, capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    script = readme.split("Blind judging and probes, as a script:\n\n```python\n")[1].split("```")[0]
    client = Client(app_url, verbose=False)
    scope = {"client": client}
    exec(script, scope)
    client.close()
    assert scope["turn"]["human"] == [1, 3, 0, 2] and scope["figures"]["aggregate"]
    assert len(scope["figures"]["candidates"]) == 4 and scope["attribution"]["candidate"] == 0
    assert "'turns': 1" in capsys.readouterr().out


def judged_records(session):
    with open(analysis.export_judged(session), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_clear_keeps_the_judging_tally_and_the_judged_export_until_clear_all(engine):
    first = choices.judge(blind_turn(engine)[-1][0], ["3", "1"])[0]
    session = choices.use_candidate(blind_turn(engine, first, "And which one flies fastest?")[-1][0], 4)[0]
    tally, records = judging_json(session)["tally"], judged_records(session)
    outputs = choices.clear(session)
    kept = outputs[0]
    assert kept["turns"] == [] and outputs[1] == [] and outputs[4] == ""
    assert outputs[STATUS] == ("Cleared the conversation. Your blind-judging tally (2 judged turns) is kept: press "
                               "“Clear all” to reset it too.")
    facts = judging_json(kept)
    assert facts["tally"] == tally and [(t["conversation"], t["turn"]) for t in facts["turns"]] == [(1, 1), (1, 2)]
    text, table = blind.tally_view(kept)
    assert "Over **2** judged turns (2 of them in cleared conversations)" in text and len(table) == 2
    assert blind.judge_panel(kept)[1] == text
    assert judged_records(kept) == records  # /export_judged still has them
    with pytest.warns(UserWarning, match="Nothing to export yet"):  # the pairs are the conversation's: empty
        analysis.export_pairs(kept)
    # Only what the tally and the judged export need is kept: no traces, token ids or settings.
    assert all(set(turn) <= {"conversation", "turn", *blind.JUDGED_KEYS, "probes"} for turn in kept["cleared"])
    assert copy.deepcopy(kept) == kept

    # A turn judged in the new conversation joins the tally and the judged export; the pairs have it alone.
    third = choices.judge(blind_turn(engine, kept, "What do starlings eat?")[-1][0], ["2", "1", "4", "3"])[0]
    facts = judging_json(third)
    assert facts["tally"]["turns"] == 3 and [(t["conversation"], t["turn"]) for t in facts["turns"]] == [
        (1, 1), (1, 2), (2, 1)]
    assert "Over **3** judged turns (2 of them in cleared conversations)" in blind.tally_view(third)[0]
    both = judged_records(third)
    assert both[: len(records)] == records and len(both) == len(records) + 6
    with open(analysis.export_pairs(third), encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f]
    assert pairs and all(p["messages"][-1]["content"] == "What do starlings eat?" for p in pairs)
    assert choices.undo(third)[0]["cleared"] == kept["cleared"]  # Undo drops that turn, not the cleared ones
    again = choices.clear(third)
    assert judging_json(again[0])["tally"]["turns"] == 3 and "tally (3 judged turns)" in again[STATUS]

    reset = choices.clear_all(again[0])
    assert reset[0] == view.new_session() and reset[STATUS] == ("Cleared the conversation and the session's "
                                                                "blind-judging tally and probe results.")
    assert judging_json(reset[0])["tally"]["turns"] == 0 and blind.tally_view(reset[0])[0] == blind.NOT_JUDGED
    with pytest.warns(UserWarning, match="No turn judged yet"):
        analysis.export_judged(reset[0])


def test_clear_keeps_the_probe_aggregate_until_clear_all(engine):
    session = replay_chat(engine, "Tell me about starlings.")
    probed = probing.probe_candidates(engine, session, "all", ["refusal", "lowercase"], "", "", "", "", "tiny",
                                      "card")
    rows, label = probing.session_aggregate(probed[0])
    assert rows and "Over 4 probed candidates of this session," in label
    outputs = choices.clear(probed[0])
    kept = outputs[0]
    assert outputs[STATUS] == ("Cleared the conversation. Your probe results (4 probed candidates) are kept: press "
                               "“Clear all” to reset them too.")
    assert probing.session_aggregate(kept) == (rows, label.replace("this session,",
                                                                   "this session (4 in cleared conversations),"))
    entries = kept["cleared"][0]["probes"].values()
    assert all("text" not in edit for entry in entries for edit in entry["edits"])  # the variants' texts go
    panels = probing.probe_panels(kept)
    assert panels[1] == probing.NO_PROBES and "4 in cleared conversations" in panels[2]

    # Probes of the new conversation, scored alike, join the aggregate.
    second = replay_chat(engine, "And about their songs?", kept)
    more = probing.probe_candidates(engine, second, "1", ["refusal", "lowercase"], "", "", "", "", "tiny", "card")
    rows, label = probing.session_aggregate(more[0])
    assert "Over 5 probed candidates of this session (4 in cleared conversations)" in label
    assert next(row for row in rows if row["edit"] == "refusal")["n"] == 5
    both = choices.clear(more[0])
    assert "probe results (5 probed candidates) are kept" in both[STATUS] and "tally" not in both[STATUS]

    reset = choices.clear_all(both[0])[0]
    assert probing.session_aggregate(reset) == ([], "") and probing.probe_panels(reset)[2] == probing.NO_AGGREGATE


def test_clear_and_clear_all_through_the_api(app_url):
    client = Client(app_url, verbose=False)
    client.predict("Which bird sings best?", **SETTINGS, blind=True, api_name="/chat")
    client.predict("2 4 1 3", api_name="/judge")
    assert client.predict(api_name="/judging")["tally"]["turns"] == 1
    _, status, *_ = client.predict(api_name="/clear")
    assert "Your blind-judging tally (1 judged turn) is kept" in status
    facts = client.predict(api_name="/judging")
    assert facts["tally"]["turns"] == 1 and facts["turns"][0]["conversation"] == 1
    with open(client.predict(api_name="/export_judged"), encoding="utf-8") as f:
        assert len(f.readlines()) == 6
    _, status, *_ = client.predict(api_name="/clear_all")
    assert status.startswith("Cleared the conversation and the session's blind-judging tally")
    assert client.predict(api_name="/judging")["tally"]["turns"] == 0
    client.close()
