"""Command line: render LM prompts, score candidates, generate best-of-N, probe what moves the reward, judge
candidates blind, evaluate or convert a reward model."""
from __future__ import annotations

import argparse
import json
import math
import sys

from .backends import BACKENDS, ServerError
from .batching import BATCH_TOKENS, MAX_BATCH_TOKENS
from .detokenize import token_texts
from .edits import EDITS, custom_edit, pick_edits
from .engine import Engine, Settings
from .eval_command import add_eval_flags
from .generation import MAX_CANDIDATES
from .insight import ranking
from .judging import agreement, parse_ranking, tally
from .jsonl_input import MAX_LINE_BYTES, InputError, jsonl_records, progress_bar, read_jsonl
from .limits import check_text, max_new_tokens_for
from .loading import DEVICES, PRECISIONS, LoadError
from .presets import RM_KINDS
from .probes import aggregate
from .scoring import READOUTS, resolve_readout
from .templates import RM_FORMATS


def add_model_flags(parser: argparse.ArgumentParser, reward_required: bool) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="4bit")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="local: models run in this process; vllm: on the servers at --rm-url (and --lm-url)")
    parser.add_argument("--rm-url", help="with --backend vllm: the vLLM pooling server of the reward model")
    parser.add_argument("--reward-model", required=reward_required, help="RM preset name or local directory")
    parser.add_argument("--reward-kind", choices=RM_KINDS, help="layout of a local reward-model directory")
    parser.add_argument("--readout", choices=READOUTS,
                        help="where the reward is read (default: the model's card; last-token with --rm-format rewardbench)")
    parser.add_argument("--rm-format", choices=RM_FORMATS, default="rlhf",
                        help="reward-model input text: rlhf (as scored in Starling's RLHF) or rewardbench (to "
                             "reproduce RewardBench's numbers)")


def add_batch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-tokens", type=positive,
                        help="ids, padding included, in one batch of conversations scored together (default "
                             f"{BATCH_TOKENS:,}; on a GPU as many as half its free memory holds, up to "
                             f"{MAX_BATCH_TOKENS:,}): more is faster on a GPU and takes more memory")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m starling_demo", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score candidates: each line gets 'rewards' in candidate order")
    add_model_flags(score, reward_required=True)
    add_batch_flags(score)
    score.add_argument("--traces", action="store_true",
                       help="each line also gets 'traces': per candidate its reply tokens and the value at each")
    render = commands.add_parser("render", help="print the exact LM prompt text and ids (loads the LM's tokenizer "
                                 "and config only, never its weights)")
    render.add_argument("--lm", default="starling-lm-7b-beta")
    render.add_argument("--mode", choices=["gpt4", "code"], default="gpt4")
    render.add_argument("--system", default="")
    generate = commands.add_parser("generate", help="sample N candidates; with --reward-model, rank them")
    generate.add_argument("--lm", default="starling-lm-7b-beta")
    generate.add_argument("--n", type=int, default=4)
    generate.add_argument("--temperature", type=float, default=0.7)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--max-new-tokens", type=int, default=512)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--mode", choices=["gpt4", "code"], default="gpt4")
    generate.add_argument("--system", default="")
    generate.add_argument("--lm-url", help="with --backend vllm: the `vllm serve` URL of --lm")
    add_model_flags(generate, reward_required=False)
    evaluate = commands.add_parser("eval", help="accuracy on answers ranked best first or chosen/rejected (ours, "
                                                "RewardBench's or RewardBench 2's rows; JSONL, .json or .parquet), "
                                                "with length control and intervals")
    add_model_flags(evaluate, reward_required=True)
    add_batch_flags(evaluate)
    add_eval_flags(evaluate)
    probe = commands.add_parser("probe", help="each candidate's reward under a set of edits (and with --attribution "
                                              "each sentence left out); a last line aggregates per edit")
    add_model_flags(probe, reward_required=True)
    probe.add_argument("--edits", help=f"comma-separated edits (default: all): {', '.join(EDITS)}")
    probe.add_argument("--prefix", default="", help="your own edit: text put before each candidate")
    probe.add_argument("--suffix", default="", help="your own edit: text put after each candidate")
    probe.add_argument("--find", default="", help="your own edit: text to replace in each candidate")
    probe.add_argument("--replace", default="", help="your own edit: what replaces --find")
    probe.add_argument("--attribution", action="store_true",
                       help="also each candidate's reward with each sentence, list item or code block left out")
    judge = commands.add_parser("judge", help="rank each line's candidates yourself (from stdin), then see the "
                                              "reward model's ranking; a last line tallies the agreement")
    add_model_flags(judge, reward_required=True)
    for command in (score, render, generate, evaluate, probe, judge):
        command.add_argument("file", help="JSONL input, one conversation per line (a regular file: it is read twice)")
        command.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                             help=f"the longest line read (default {MAX_LINE_BYTES // 2**20} MiB): a longer one "
                                  "stops the run with its line number, so memory stays bounded")
    convert = commands.add_parser("convert-rm", help="convert a Starling RM to a LlamaForSequenceClassification "
                                                     "checkpoint for vLLM's pooling runner")
    convert.add_argument("source", help="RM preset name or local directory")
    convert.add_argument("destination", help="new folder for the converted checkpoint")
    convert.add_argument("--reward-kind", choices=RM_KINDS, help="layout of a local reward-model directory")
    return main


def run(args: argparse.Namespace, out) -> None:
    if args.command == "convert-rm":
        from .convert import convert_rm

        print(json.dumps(convert_rm(args.source, args.destination, args.reward_kind)), file=out)
        return
    engine = Engine(lm_name=getattr(args, "lm", None) or "starling-lm-7b-beta",
                    rm_name=getattr(args, "reward_model", None) or "starling-rm-7b-alpha",
                    precision=getattr(args, "precision", "4bit"), device=getattr(args, "device", "auto"),
                    rm_kind=getattr(args, "reward_kind", None), backend=getattr(args, "backend", "local"),
                    lm_url=getattr(args, "lm_url", None), rm_url=getattr(args, "rm_url", None))
    if getattr(args, "reward_model", None) and engine.url("rm"):  # connecting loads nothing
        _, note = resolve_readout(engine.rm(), args.readout, args.rm_format)
        if note:
            print(f"note: {note}", file=sys.stderr)
    if args.command == "eval":
        from .eval_command import run_eval

        return run_eval(engine, args, out)
    if args.command == "score":
        return score_lines(engine, args, out)
    records = read_jsonl(args.file, args.command in ("probe", "judge"), args.max_line_bytes)
    if args.command == "probe":
        return probe_lines(engine, args, records, probe_edits(args), out)
    if args.command == "judge":
        return judge_lines(engine, args, records, out)
    prompts = []
    if args.command in ("render", "generate"):
        settings = (Settings(mode=args.mode, system=args.system, max_new_tokens=0) if args.command == "render" else
                    Settings(args.n, args.temperature, args.top_p, args.max_new_tokens, args.seed, args.mode,
                             args.system))
        # Whether a prompt fits takes the LM's tokenizer and context: every line's is checked before any output.
        # First, so that a model that cannot load is not blamed on line 1; render needs no weights.
        engine.tokenizer("lm") if args.command == "render" else engine.lm()
        if settings.max_new_tokens >= engine.context():  # the flag's problem, not any line's
            raise InputError(f"--max-new-tokens {settings.max_new_tokens} leaves no room for a prompt in the "
                             f"model's {engine.context():,} positions: use at most "
                             f"{max_new_tokens_for(engine.context())}.")
        for number, record in records:
            try:
                prompts.append(engine.prompt(record["messages"], settings)[0])
            except ValueError as error:
                raise InputError(f"{args.file}, line {number}: {error}") from None
    for i, (_, record) in enumerate(records):
        if args.command == "render":
            result = {"text": prompts[i].text, "input_ids": prompts[i].ids}
        else:
            *_, final = engine.generate(record["messages"], settings)
            result = record | {"candidates": final.texts, "finish_reasons": final.finished, "seed": final.seed}
            if args.reward_model:
                rewards = engine.score(record["messages"], final.texts, readout=args.readout,
                                       rm_format=args.rm_format).rewards
                result |= {"rewards": rewards, "ranking": ranking(rewards), "best": final.texts[ranking(rewards)[0]]}
        print(json.dumps(result, ensure_ascii=False), file=out, flush=True)


def score_lines(engine: Engine, args: argparse.Namespace, out) -> None:
    """Each record of the file with its "rewards" (and with --traces its "traces"), in file order, from batched
    passes over the file read as a stream. The file is checked whole first, so a bad line stops the run before
    any output."""
    for _ in jsonl_records(args.file, True, args.max_line_bytes):
        pass
    tokenizer = engine.tokenizer("rm") if args.traces else None
    with progress_bar(args.file, "Scoring", args.max_line_bytes) as bar:
        for ready, done in engine.score_stream(jsonl_records(args.file, True, args.max_line_bytes),
                                               readout=args.readout, rm_format=args.rm_format, traces=args.traces,
                                               budget=args.batch_tokens,
                                               conversation=lambda line: (line[1]["messages"], line[1]["candidates"])):
            for (number, record), scores in ready:
                if isinstance(scores, ValueError):  # not expected: the file was checked above
                    raise InputError(f"{args.file}, line {number}: {scores}")
                result = record | {"rewards": scores.rewards}
                if args.traces:
                    result["traces"] = [{"tokens": token_texts(tokenizer, ids), "values": values}
                                        for ids, values in zip(scores.reply_ids, scores.traces)]
                print(json.dumps(result, ensure_ascii=False), file=out, flush=True)
            bar.update(done - bar.n)


def probe_edits(args: argparse.Namespace) -> list:
    """The edits `probe` runs: --edits (default all) and the own edit of --prefix/--suffix/--find/--replace."""
    return pick_edits(args.edits and args.edits.split(","), custom_edit(args.prefix, args.suffix, args.find,
                                                                        args.replace))


def probe_lines(engine: Engine, args: argparse.Namespace, records: list[tuple[int, dict]], edits: list,
                out) -> None:
    """A line per record: each candidate's reward under each edit (and, with --attribution, with each unit left
    out); then one line with the mean change per edit over all candidates, with its bootstrap interval."""
    runs = []
    for _, record in records:
        options = dict(readout=args.readout, rm_format=args.rm_format)
        run_ = engine.probe(record["messages"], record["candidates"], edits, **options)
        # The variant texts follow from the edits; their descriptions are in the aggregate line.
        probes = [candidate | {"edits": [{k: v for k, v in edit.items() if k not in ("text", "description")}
                                         for edit in candidate["edits"]]} for candidate in run_["candidates"]]
        result = record | {"probes": probes, "readout": run_["readout"]}
        if args.attribution:
            result["attribution"] = [engine.attribute(record["messages"], text, **options)["units"]
                                     for text in record["candidates"]]
        print(json.dumps(result, ensure_ascii=False), file=out, flush=True)
        runs.append(run_)
    print(json.dumps({"aggregate": aggregate(runs), "lines": len(records),
                      "candidates": sum(len(run_["candidates"]) for run_ in runs)}, ensure_ascii=False), file=out)


def ask_ranking(count: int) -> list[int] | str | None:
    """The person's ranking of `count` candidates, read from stdin and asked again after a mistake: 0-based,
    best first; "s" to skip the line; None to stop (q, or the end of the input)."""
    while True:
        print("Your ranking, best first (e.g. 2 1 3; one number: the best only; s skips, q stops): ", end="",
              file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer or answer.strip() == "q":
            return None
        if answer.strip() == "s":
            return "s"
        try:
            return parse_ranking(answer, count)
        except ValueError as error:
            print(error, file=sys.stderr)


def judge_lines(engine: Engine, args: argparse.Namespace, records: list[tuple[int, dict]], out) -> None:
    """Blind judging in a terminal: each record's candidates are shown (on stderr) without rewards, the person's
    ranking is read from stdin, and only then are they scored. A line per judged record, then the tally."""
    judgements = []
    for number, record in records:
        candidates = record["candidates"]
        print(f"\n── line {number}: {record['messages'][-1]['content']}", file=sys.stderr)
        for k, text in enumerate(candidates, 1):
            print(f"[{k}] {text}", file=sys.stderr)
        order = ask_ranking(len(candidates))
        if order is None:
            break
        if order == "s":
            continue
        rewards = engine.score(record["messages"], candidates, readout=args.readout, rm_format=args.rm_format).rewards
        judgement = agreement(order, rewards)
        judgements.append(judgement)
        print("The reward model ranks: " + " > ".join(f"{i + 1} ({rewards[i]:.3f})" for i in ranking(rewards)) +
              f" · same best: {'yes' if judgement['top1'] else 'no'}", file=sys.stderr)
        print(json.dumps(record | {"human_ranking": order, "rewards": rewards, "ranking": ranking(rewards),
                                   "agreement": judgement}, ensure_ascii=False), file=out, flush=True)
    print(json.dumps({"tally": tally(judgements)}), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "generate" and not 1 <= args.n <= MAX_CANDIDATES:
        print(f"error: --n must be between 1 and {MAX_CANDIDATES}", file=sys.stderr)
        return 2
    if args.command == "probe":
        try:  # the flags' problems, before any model work
            probe_edits(args)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    try:
        # An argument byte that is not UTF-8 arrives as a lone surrogate.
        check_text("--system", getattr(args, "system", ""), math.inf)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        run(args, sys.stdout)
    except (InputError, LoadError, ServerError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
