"""The command line on good and malformed input."""
import json
import os

import pytest

from starling_demo.cli import main
from test_templates import MULTI, SINGLE

GOOD = [
    {"messages": [{"role": "user", "content": "Hello"}], "candidates": ["Hi there!", "Go away.", "Hello 😀"]},
    {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
                  {"role": "user", "content": "How are you today?"}], "candidates": ["Fine."]},
]


def write(tmp_path, lines):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_render_prints_the_card_ids_without_loading_the_weights(tmp_path, capsys, monkeypatch):
    from starling_demo import engine

    monkeypatch.setattr(engine, "load_lm", lambda *args, **kwargs: pytest.fail("render loaded the LM's weights"))
    code, out, _ = run(capsys, "render", "--lm", "tiny", write(tmp_path, GOOD))
    assert code == 0 and [o["input_ids"] for o in out] == [SINGLE, MULTI]
    assert out[0]["text"] == "<s>GPT4 Correct User: Hello<|end_of_turn|>GPT4 Correct Assistant:"


def test_score_adds_rewards_in_candidate_order(tmp_path, capsys):
    from starling_demo.engine import Engine

    code, out, _ = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", write(tmp_path, GOOD))
    assert code == 0 and [len(o["rewards"]) for o in out] == [3, 1]
    assert out[0]["candidates"] == GOOD[0]["candidates"]
    expected = Engine("tiny", "tiny", "fp32", "cpu").score(GOOD[0]["messages"], GOOD[0]["candidates"]).rewards
    assert out[0]["rewards"] == pytest.approx(expected, abs=1e-5)


def test_score_in_rewardbench_format(tmp_path, capsys):
    from starling_demo.engine import Engine

    path = write(tmp_path, GOOD)
    code, out, _ = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", "--rm-format", "rewardbench",
                       path)
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    expected = engine.score(GOOD[0]["messages"], GOOD[0]["candidates"], rm_format="rewardbench").rewards
    assert code == 0 and out[0]["rewards"] == pytest.approx(expected, abs=1e-5)
    assert expected != pytest.approx(engine.score(GOOD[0]["messages"], GOOD[0]["candidates"]).rewards, abs=1e-3)
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["score", "--reward-model", "tiny", "--rm-format", "bench", path])
    assert "invalid choice: 'bench' (choose from 'rlhf', 'rewardbench')" in capsys.readouterr().err


def test_score_a_local_directory_needs_its_kind(tmp_path, capsys):
    from starling_demo.tiny import tiny_checkpoint

    folder = str(tiny_checkpoint("rm-34b"))
    code, _, err = run(capsys, "score", "--reward-model", folder, write(tmp_path, GOOD))
    assert code == 1 and "--reward-kind" in err
    code, out, _ = run(capsys, "score", "--reward-model", folder, "--reward-kind", "starling-rm-34b",
                       "--precision", "fp32", write(tmp_path, GOOD))
    assert code == 0 and len(out[0]["rewards"]) == 3


def test_generate_ranks_best_of_n(tmp_path, capsys):
    code, out, _ = run(capsys, "generate", "--lm", "tiny", "--n", "3", "--max-new-tokens", "5", "--precision", "fp32",
                       "--reward-model", "tiny", write(tmp_path, GOOD[:1]))
    record = out[0]
    assert code == 0 and len(record["candidates"]) == 3
    assert record["best"] == record["candidates"][record["ranking"][0]]
    assert max(record["rewards"]) == record["rewards"][record["ranking"][0]]


@pytest.mark.parametrize("bad, message", [
    ("{not json", "line 2: invalid JSON (Expecting property name"),
    ('["a list"]', "line 2: each line must be a JSON object"),
    ('{"messages": [], "candidates": ["a"]}', "line 2: 'messages' must be a non-empty list"),
    ('{"messages": [{"role": "user", "content": "a"}], "candidates": []}', "line 2: 'candidates' must be"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "candidates": ["c"]}',
     "line 2: the last message must be from the user"),
    ('{"messages": [{"role": "user", "content": 3}], "candidates": ["c"]}', "line 2: message 1 should be a user"),
])
def test_malformed_input_names_the_line_and_prints_nothing(tmp_path, capsys, bad, message):
    code, out, err = run(capsys, "score", "--reward-model", "tiny", write(tmp_path, [GOOD[0], bad]))
    assert code == 1 and out == [] and message in err


def test_unknown_model_and_bad_n(tmp_path, capsys):
    code, out, err = run(capsys, "score", "--reward-model", "starling-rm-1t", write(tmp_path, GOOD))
    assert code == 1 and out == [] and "Unknown reward model 'starling-rm-1t'" in err
    code, _, err = run(capsys, "generate", "--lm", "tiny", "--n", "9", write(tmp_path, GOOD))
    assert code == 2 and "between 1 and 8" in err


def test_eval_reports_accuracy_and_skips_malformed_rows_by_line(tmp_path, capsys):
    rows = [{"messages": [{"role": "user", "content": "Hi"}], "candidates": ["Hello!", "Hey", "Go away"],
             "subset": "chat"},
            {"messages": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5", "subset": "math"},
            '{"messages": [{"role": "user", "content": "x"}], "candidates": ["only one"]}']
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", write(tmp_path, rows))
    report = out[0]["report"]
    assert code == 0 and report["overall"]["n"] == 2 and set(report["subsets"]) == {"chat", "math"}
    assert 0.0 <= report["overall"]["accuracy"] <= 1.0
    assert "line 3" in err and out[0]["skipped"][0].startswith("line 3")


def test_lone_surrogate_names_the_line_and_prints_nothing(tmp_path, capsys):
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\ud800"},
                        {"role": "user", "content": "?"}], "candidates": ["a"]}
    path = write(tmp_path, [GOOD[0], bad])  # json.dumps writes the "\ud800" escape, which json.loads accepts
    code, out, err = run(capsys, "render", "--lm", "tiny", path)
    assert code == 1 and out == [] and f"{path}, line 2: message 2's content is not valid Unicode" in err
    code, out, err = run(capsys, "score", "--reward-model", "tiny",
                         write(tmp_path, [GOOD[0], {**GOOD[0], "candidates": ["a", "b\udc80"]}]))
    assert code == 1 and out == [] and "line 2: candidate 2 is not valid Unicode (a lone surrogate \\udc80" in err
    path = write(tmp_path, [GOOD[0], {**GOOD[0], "id": "\ud800"}])  # any field: score prints the record back
    code, out, err = run(capsys, "score", "--reward-model", "tiny", path)
    assert code == 1 and out == [] and "line 2: a field is not valid Unicode" in err
    code, out, err = run(capsys, "render", "--lm", "tiny", "--system", "\udcff", path)  # how argv holds byte 0xff
    assert code == 2 and out == [] and "--system is not valid Unicode" in err


@pytest.mark.parametrize("argv", [["render"], ["generate", "--max-new-tokens", "5", "--precision", "fp32"]])
def test_too_long_message_names_the_line_and_prints_nothing(tmp_path, capsys, argv):
    long = {"messages": [{"role": "user", "content": "word " * 5000}]}  # the tiny LM's context is 1024
    path = write(tmp_path, [GOOD[0], long])
    code, out, err = run(capsys, *argv, "--lm", "tiny", path)
    assert code == 1 and out == [] and f"{path}, line 2: The message is 5017 tokens long" in err


def test_bytes_that_are_not_utf8_name_the_line(tmp_path, capsys):
    good = (json.dumps(GOOD[0]) + "\n").encode()
    path = tmp_path / "in.jsonl"
    path.write_bytes(good * 2 + good.replace(b"Hello", b"H\xe9llo"))  # Latin-1, not UTF-8
    for argv in (["render", "--lm", "tiny"], ["eval", "--reward-model", "tiny", "--precision", "fp32"]):
        code, out, err = run(capsys, *argv, str(path))
        assert code == 1 and out == [] and f"{path}, line 3: not UTF-8 text (byte 0xe9 at column 45)" in err


def test_a_byte_order_mark_is_accepted(tmp_path, capsys):
    plain = write(tmp_path, GOOD)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + open(plain, "rb").read())
    for argv in (["render", "--lm", "tiny"], ["eval", "--reward-model", "tiny", "--precision", "fp32"]):
        assert run(capsys, *argv, str(bom))[:2] == run(capsys, *argv, plain)[:2]


def test_a_missing_file_or_a_folder_is_named(tmp_path, capsys):
    missing = tmp_path / "none.jsonl"
    code, out, err = run(capsys, "render", "--lm", "tiny", str(missing))
    assert code == 1 and out == [] and err == f"error: cannot read {missing}: no such file or directory\n"
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", str(tmp_path))
    assert code == 1 and out == [] and err == (f"error: {tmp_path} is not a regular file (a pipe, a device or a "
                                               "folder): save the input to a file and give its path.\n")


def test_a_pipe_a_device_or_a_line_past_the_cap_stop_at_once_with_a_sentence(tmp_path, capsys):
    """A FIFO with no writer would hang, /dev/zero never ends and a gigabyte line would be held whole: each stops
    the run with one sentence before any model work, the memory bounded by --max-line-bytes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        code, out, err = run(capsys, "score", "--reward-model", "tiny", str(path))
        assert code == 1 and out == [] and err == (f"error: {path} is not a regular file (a pipe, a device or a "
                                                   "folder): save the input to a file and give its path.\n")
    long = write(tmp_path, [GOOD[0], {"messages": [{"role": "user", "content": "x" * 5000}], "candidates": ["a"]}])
    code, out, err = run(capsys, "score", "--reward-model", "tiny", "--max-line-bytes", "4096", long)
    assert code == 1 and out == [] and err == f"error: {long}, line 2: longer than 4,096 bytes; raise " \
                                              "--max-line-bytes to read it.\n"
    raised = ["--max-line-bytes", "8192"]
    assert run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", *raised, long)[0] == 0


def test_a_row_nested_too_deep_is_named_by_its_line(tmp_path, capsys):
    deep = "[" * 100_000 + "]" * 100_000  # Python's own parser would raise RecursionError
    path = write(tmp_path, [GOOD[0], deep])
    code, out, err = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", path)
    assert code == 1 and out == [] and err == (f"error: {path}, line 2: arrays and objects nested 100,000 deep; a "
                                               "row may nest at most 32\n")
    row = {"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away"}
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", write(tmp_path, [row, deep]))
    assert code == 0 and out[0]["report"]["overall"]["n"] == 1
    assert out[0]["skipped"] == ["line 2: arrays and objects nested 100,000 deep; a row may nest at most 32"]


def test_eval_skips_a_row_whose_candidate_is_not_valid_unicode(tmp_path, capsys):
    rows = [{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away"},
            {"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "\ud800"}]
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", write(tmp_path, rows))
    assert code == 0 and out[0]["report"]["overall"]["n"] == 1
    assert out[0]["skipped"][0].startswith("line 2: candidate 2 is not valid Unicode (a lone surrogate \\ud800")


def test_a_reply_longer_than_the_context_is_the_flags_problem(tmp_path, capsys):
    code = main(["generate", "--lm", "tiny", "--device", "cpu", "--precision", "fp32", "--max-new-tokens", "5000",
                 write(tmp_path, GOOD)])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.endswith("error: --max-new-tokens 5000 leaves no room for a prompt in the "
                                               "model's 1,024 positions: use at most 512.\n")


def test_probe_prints_each_line_then_the_aggregate(tmp_path, capsys):
    from starling_demo.edits import EDITS
    from starling_demo.engine import Engine

    code, out, err = run(capsys, "probe", "--reward-model", "tiny", "--precision", "fp32", "--edits",
                         "refusal,repeat", "--suffix", " Thanks!", "--attribution", write(tmp_path, GOOD))
    assert code == 0 and len(out) == 3 and "error" not in err
    first = out[0]
    assert first["candidates"] == GOOD[0]["candidates"] and len(first["probes"]) == 3
    assert [e["edit"] for e in first["probes"][0]["edits"]] == ["repeat", "refusal", "custom"]
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    refusal = engine.score(GOOD[0]["messages"], [EDITS["refusal"].apply("Hi there!")]).rewards[0]
    assert first["probes"][0]["edits"][1]["reward"] == pytest.approx(refusal, abs=1e-4)
    assert [u["text"] for u in first["attribution"][1]] == ["Go away."]
    aggregate = out[2]
    assert aggregate["lines"] == 2 and aggregate["candidates"] == 4
    refusals = [line["probes"][k]["edits"][1]["delta"] for line in out[:2] for k in range(len(line["probes"]))]
    row = next(r for r in aggregate["aggregate"] if r["edit"] == "refusal")
    assert row["n"] == 4 and row["mean"] == pytest.approx(sum(refusals) / 4) and row["low"] <= row["mean"]


@pytest.mark.parametrize("argv, message", [
    (["--edits", "repeat,shout"], "Unknown edit 'shout'"),
    (["--replace", "x"], "Give the text to find as well as its replacement"),
])
def test_probe_flags_are_checked_before_any_work(tmp_path, capsys, argv, message):
    code, out, err = run(capsys, "probe", "--reward-model", "tiny", *argv, write(tmp_path, GOOD))
    assert code == 2 and out == [] and message in err


def test_probe_and_judge_on_a_malformed_line_deep_in_the_file_print_nothing(tmp_path, capsys):
    path = write(tmp_path, [GOOD[0]] * 5 + ['{"messages": [{"role": "user", "content": "a"}], "candidates": "b"}'])
    for command in ("probe", "judge"):
        code, out, err = run(capsys, command, "--reward-model", "tiny", path)
        assert code == 1 and out == [] and f"{path}, line 6: 'candidates' must be a non-empty list" in err


def test_judge_reads_rankings_then_reveals_and_tallies(tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("3 3\n2 1 3\ns\n"))  # a mistake, re-asked; then a skip
    rows = [GOOD[0], GOOD[0], GOOD[0]]
    code, out, err = run(capsys, "judge", "--reward-model", "tiny", "--precision", "fp32", write(tmp_path, rows))
    assert code == 0 and len(out) == 2
    judged, tally = out
    assert judged["human_ranking"] == [1, 0, 2] and len(judged["rewards"]) == 3
    assert judged["agreement"]["pairs"] == 3 and "appears twice" in err and "[2] Go away." in err
    assert err.index("[1] Hi there!") < err.index("The reward model ranks")  # shown before they are scored
    assert tally["tally"]["turns"] == 1 and tally["tally"]["pairs"] == 3
    assert tally["tally"]["pairwise"] == judged["agreement"]["pairwise"]


def many_rows(count=120):
    """`count` conversations of varied lengths, each with an "id": pairs and 4-candidate rows, a system message in
    some, a few of them over 2,048 RM tokens."""
    rows = []
    for i in range(count):
        words = ("word " * 2500) if i % 40 == 7 else " ".join(f"w{i}x{k}" for k in range(1 + (i * 7) % 60))
        messages = [{"role": "user", "content": f"Question {i}: {words}"}]
        if i % 6 == 2:
            messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, *messages]
        if i % 5 == 1:
            messages = [{"role": "system", "content": f"Be brief ({i})."}, *messages]
        n = 4 if i % 3 == 0 else 2
        candidates = [f"Answer {i}.{k}: " + "yes " * ((i + 3 * k) % 25) for k in range(n)]
        rows.append({"id": i, "messages": messages, "candidates": candidates})
    return rows


def test_score_in_batches_keeps_file_order_and_equals_scoring_each_line_alone(tmp_path, capsys):
    rows = many_rows()
    assert sum(len(row["messages"][-1]["content"].split()) > 2000 for row in rows) == 3
    path = write(tmp_path, rows)
    code, batched, err = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", path)
    assert code == 0 and "rows" not in err  # stderr is no terminal here: no progress bar
    code_alone, alone, _ = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32",
                               "--batch-tokens", "1", path)
    assert code_alone == 0 and [o["id"] for o in batched] == [o["id"] for o in alone] == list(range(len(rows)))
    for out, row in zip(batched, rows):
        assert out["candidates"] == row["candidates"] and len(out["rewards"]) == len(row["candidates"])
    for out, one in zip(batched, alone):
        assert out["rewards"] == pytest.approx(one["rewards"], abs=1e-4)
    assert "traces" not in batched[0]


def test_a_malformed_row_deep_in_the_file(tmp_path, capsys):
    rows = [{"id": i, "messages": [{"role": "user", "content": f"Question {i} " + "why " * (i % 30)}],
             "chosen": f"Good answer {i}.", "rejected": f"Bad {i}"} for i in range(120)]
    rows[99] = {**rows[99], "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                "subset": "bad"}
    rows[100] = {**rows[100], "subset": "after"}
    pairs = [{k: v for k, v in row.items() if k not in ("chosen", "rejected")}
             | {"candidates": [row["chosen"], row["rejected"]]} for row in rows]
    path = write(tmp_path, pairs)
    code, out, err = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", path)
    assert code == 1 and out == [] and f"error: {path}, line 100: " in err
    not_a_string = [*pairs[:99], {**pairs[99], "messages": pairs[0]["messages"], "candidates": ["a", 3]}, *pairs[100:]]
    code, out, err = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32",
                         write(tmp_path, not_a_string))
    assert code == 1 and out == [] and "line 100: 'candidates' must be a non-empty list of strings" in err
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", write(tmp_path, rows))
    assert code == 0 and len(out) == 1
    skipped = out[0]["skipped"]
    assert len(skipped) == 1 and skipped[0].startswith("line 100: ") and "skipped line 100: " in err
    report = out[0]["report"]
    assert "line 101" not in err and report["overall"]["n"] == len(rows) - 1
    assert set(report["subsets"]) == {"all", "after"} and report["subsets"]["after"]["n"] == 1


def test_score_traces_give_each_reply_token_and_its_value(tmp_path, capsys):
    rows = [{**GOOD[0], "candidates": ["Hi there!", "  Go away.  ", "Hello 😀 — naïve café", "x\ny"]}, GOOD[1]]
    path = write(tmp_path, rows)
    code, out, _ = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", "--traces", path)
    assert code == 0 and len(out) == 2
    for record, row in zip(out, rows):
        assert len(record["traces"]) == len(row["candidates"])
        for trace, candidate in zip(record["traces"], row["candidates"]):
            assert trace["tokens"] and "".join(trace["tokens"]).strip() == candidate.strip()
            assert len(trace["values"]) == len(trace["tokens"])
            assert all(isinstance(v, float) for v in trace["values"])
    code, plain, _ = run(capsys, "score", "--reward-model", "tiny", "--precision", "fp32", path)
    assert code == 0 and all("traces" not in record for record in plain)
    assert [r["rewards"] for r in plain] == [pytest.approx(r["rewards"], abs=1e-5) for r in out]


def test_eval_shows_a_progress_bar_on_a_terminal_only(tmp_path, capsys):
    import errno
    import fcntl
    import os
    import pathlib
    import pty
    import struct
    import subprocess
    import sys
    import termios

    rows = [{"messages": [{"role": "user", "content": f"Question {i}"}], "chosen": "Yes.", "rejected": "No"}
            for i in range(7)]
    path = write(tmp_path, rows)
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", path)
    assert code == 0 and out[0]["report"]["overall"]["n"] == 7 and "rows/s" not in err and "7/7" not in err
    root = pathlib.Path(__file__).resolve().parent.parent
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "starling_demo", "eval", "--reward-model", "tiny", "--precision", "fp32",
             "--device", "cpu", path],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)  # the child holds its own copy: EOF (EIO on Linux) comes when it exits
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError as error:
                if error.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    stdout, _ = process.communicate(timeout=120)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert process.returncode == 0, terminal
    assert json.loads(stdout)["report"]["overall"]["n"] == 7
    bars = [text.strip() for text in terminal.replace("\n", "\r").split("\r") if text.startswith("Scoring")]
    assert bars and bars[-1].startswith("Scoring: 100%") and "| 7/7 [" in bars[-1] and "rows/s]" in bars[-1], terminal


@pytest.mark.parametrize("command", ["score", "eval"])
@pytest.mark.parametrize("value", ["0", "x", "-3", "2.5"])
def test_batch_tokens_must_be_a_whole_number_of_at_least_one(tmp_path, capsys, command, value):
    with pytest.raises(SystemExit) as exit:
        main([command, "--reward-model", "tiny", "--batch-tokens", value, write(tmp_path, GOOD)])
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and out == "" and "--batch-tokens: must be a whole number of at least 1" in err
