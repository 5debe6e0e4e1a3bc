"""benchmarks/gpu.sh runs on a lent GPU only now and then: here, that its shell parses and that every benchmark it
runs takes the flags it gives, so that a renamed flag is caught before it costs device time."""
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.sh"


def calls() -> list[list[str]]:
    """The words of each `bench NAME SECONDS MODULE FLAGS...` line of the script, the default rows filled in."""
    lines = [line.split("#")[0].replace("${EVAL_ROWS:-120}", "120") for line in SCRIPT.read_text().splitlines()]
    return [shlex.split(line) for line in lines if re.match(r"\s*bench [\w-]+ \d+ ", line)]


def commands() -> list[tuple[str, list[str]]]:
    """(module, flags) of each benchmark the script runs."""
    return [(call[3], call[4:]) for call in calls()]


def test_the_script_parses_and_runs_five_benchmarks_within_eight_minutes():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    limits = [int(call[2]) for call in calls()]
    assert len(limits) == 5 and sum(limits) <= 480


class Parsed(Exception):
    pass


@pytest.mark.parametrize("module, flags", commands(), ids=lambda value: value if isinstance(value, str) else None)
def test_each_benchmark_takes_the_flags_the_script_gives(monkeypatch, module, flags):
    benchmark = importlib.import_module(f"benchmarks.{module}")
    parse_args = benchmark.parse_args

    def parse_then_stop(*args, **kwargs):
        parse_args(*args, **kwargs)  # an unknown flag exits with argparse's error
        raise Parsed

    monkeypatch.setattr(benchmark, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [module, "--device", "cpu", *flags])
    with pytest.raises(Parsed):
        benchmark.main()
