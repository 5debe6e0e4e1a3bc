"""Command line: render LM prompts, score candidates, generate best-of-N, evaluate a reward model."""
from __future__ import annotations

import argparse
import json
import sys

from .engine import Engine, Settings
from .evaluation import report_table
from .generation import MAX_CANDIDATES
from .insight import ranking
from .loading import DEVICES, PRECISIONS, LoadError
from .presets import RM_KINDS
from .scoring import READOUTS
from .templates import RM_FORMATS, check_conversation


class InputError(ValueError):
    """A malformed input line."""


def read_jsonl(path: str, need_candidates: bool) -> list[dict]:
    """Every record of `path`, validated before any model work, so a bad line stops the run at once."""
    records = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise InputError("each line must be a JSON object")
                check_conversation(record.get("messages"))
                candidates = record.get("candidates")
                if need_candidates and (not isinstance(candidates, list) or not candidates
                                        or not all(isinstance(c, str) for c in candidates)):
                    raise InputError("'candidates' must be a non-empty list of strings")
            except (json.JSONDecodeError, ValueError) as error:
                raise InputError(f"{path}, line {number}: {error}") from None
            records.append(record)
    return records


def add_model_flags(parser: argparse.ArgumentParser, reward_required: bool) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="4bit")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--reward-model", required=reward_required, help="RM preset name or local directory")
    parser.add_argument("--reward-kind", choices=RM_KINDS, help="layout of a local reward-model directory")
    parser.add_argument("--readout", choices=READOUTS,
                        help="where the reward is read (default: the model's card; last-token with --rm-format rewardbench)")
    parser.add_argument("--rm-format", choices=RM_FORMATS, default="rlhf",
                        help="reward-model input text: rlhf (as scored in Starling's RLHF) or rewardbench (to "
                             "reproduce RewardBench's numbers)")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m starling_demo", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="score candidates: each line gets 'rewards' in candidate order")
    add_model_flags(score, reward_required=True)
    render = commands.add_parser("render", help="print the exact LM prompt text and ids")
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
    add_model_flags(generate, reward_required=False)
    evaluate = commands.add_parser("eval", help="pairwise accuracy on candidates ranked best first")
    add_model_flags(evaluate, reward_required=True)
    for command in (score, render, generate, evaluate):
        command.add_argument("file", help="JSONL input, one conversation per line")
    return main


def run(args: argparse.Namespace, out) -> None:
    engine = Engine(lm_name=getattr(args, "lm", None) or "starling-lm-7b-beta",
                    rm_name=getattr(args, "reward_model", None) or "starling-rm-7b-alpha",
                    precision=getattr(args, "precision", "4bit"), device=getattr(args, "device", "auto"),
                    rm_kind=getattr(args, "reward_kind", None))
    if args.command == "eval":
        from .evaluation import evaluate

        with open(args.file, encoding="utf-8") as file:
            result = evaluate(engine, file.read(), readout=args.readout, rm_format=args.rm_format)
        for error in result["errors"]:
            print(f"skipped {error}", file=sys.stderr)
        print(json.dumps({"report": result["report"], "table": report_table(result["report"]),
                          "skipped": result["errors"]}, ensure_ascii=False), file=out)
        return
    records = read_jsonl(args.file, need_candidates=args.command == "score")
    for record in records:
        if args.command == "render":
            settings = Settings(mode=args.mode, system=args.system, max_new_tokens=0)
            prompt, _ = engine.prompt(record["messages"], settings)
            result = {"text": prompt.text, "input_ids": prompt.ids}
        elif args.command == "score":
            result = record | {"rewards": engine.score(record["messages"], record["candidates"],
                                                       readout=args.readout, rm_format=args.rm_format).rewards}
        else:
            settings = Settings(args.n, args.temperature, args.top_p, args.max_new_tokens, args.seed, args.mode,
                                args.system)
            *_, final = engine.generate(record["messages"], settings)
            result = record | {"candidates": final.texts, "finish_reasons": final.finished, "seed": final.seed}
            if args.reward_model:
                rewards = engine.score(record["messages"], final.texts, readout=args.readout,
                                       rm_format=args.rm_format).rewards
                result |= {"rewards": rewards, "ranking": ranking(rewards), "best": final.texts[ranking(rewards)[0]]}
        print(json.dumps(result, ensure_ascii=False), file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "generate" and not 1 <= args.n <= MAX_CANDIDATES:
        print(f"error: --n must be between 1 and {MAX_CANDIDATES}", file=sys.stderr)
        return 2
    try:
        run(args, sys.stdout)
    except (InputError, LoadError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
