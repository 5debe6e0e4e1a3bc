"""Launch the Starling demo: real models in 4-bit on a GPU, else the tiny offline presets on CPU."""
from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before anything initialises CUDA
    import spaces
except ImportError:
    spaces = None

import argparse
import importlib.util
import os
import socket
from urllib.parse import urlparse

from starling_demo.backends import BACKENDS
from starling_demo.engine import Engine, default_allowed
from starling_demo.host_memory import map_large_allocations
from starling_demo.loading import LoadError, device_memory, resolve_device
from starling_demo.presets import LM_PRESETS, RM_PRESETS
from starling_demo.ui import build_demo, launch_kwargs

REAL = {"lm": "starling-lm-7b-beta", "rm": "starling-rm-7b-alpha", "precision": "4bit", "device": "auto"}
TINY = {"lm": "tiny", "rm": "tiny", "precision": "fp32", "device": "cpu"}
SERVED_TURNS_AT_ONCE = 16  # a vLLM server batches them; past this, visitors queue in the app
TINY_BANNER = ("**Offline demo:** {reason}, so this runs the tiny random models: "
               "replies are noise; the wiring is real.")


def has_gpu() -> bool:
    import torch

    return bool(os.environ.get("SPACES_ZERO_GPU")) or torch.cuda.is_available()


def hub_available(repo: str) -> bool:
    """Whether `repo` is cached, or the Hub answers within two seconds (and offline mode is off)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=2).close()
        return True
    except OSError:
        return False


def pick_defaults() -> tuple[dict, str | None]:
    """Real Starling models when a GPU and the Hub (or a cache) are there; else the tiny presets and why."""
    if not has_gpu():
        return TINY, "no GPU was found"
    if not hub_available(LM_PRESETS[REAL["lm"]].repo):
        return TINY, "the Hugging Face Hub is unreachable and nothing is cached"
    return REAL, None


def banner(args: argparse.Namespace, reason: str | None) -> str | None:
    """The notice at the top of the page whenever a tiny model runs, saying why."""
    if "tiny" not in (args.lm, args.rm):
        return None
    return TINY_BANNER.format(reason=reason or "the tiny presets were chosen")


def parse_args(defaults: dict, argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lm", default=env("STARLING_LM", defaults["lm"]), help="LM preset or local directory")
    parser.add_argument("--rm", default=env("STARLING_RM", defaults["rm"]), help="RM preset or local directory")
    parser.add_argument("--precision", default=env("STARLING_PRECISION", defaults["precision"]),
                        choices=["4bit", "bf16", "fp32"])
    parser.add_argument("--device", default=env("STARLING_DEVICE", defaults["device"]), choices=["auto", "cpu", "cuda"])
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", default=env("GRADIO_SHARE", "") in ("1", "true", "True"))
    parser.add_argument("--backend", default=env("STARLING_BACKEND", "local"), choices=BACKENDS,
                        help="local: the models run in this process; vllm: the launched LM and/or RM run on vLLM "
                             "servers (--lm-url, --rm-url) that batch many visitors' requests")
    parser.add_argument("--lm-url", default=env("STARLING_LM_URL") or None,
                        help="with --backend vllm: the `vllm serve` URL of --lm, e.g. http://127.0.0.1:8000")
    parser.add_argument("--rm-url", default=env("STARLING_RM_URL") or None,
                        help="with --backend vllm: the URL of --rm converted by `python -m starling_demo convert-rm` "
                             "and served with --runner pooling")
    parser.add_argument("--turns-at-once", type=int, default=int(env("STARLING_TURNS_AT_ONCE", "0")),
                        help="visitors' turns that run at the same time (default: 1 with the local backend, "
                             f"{SERVED_TURNS_AT_ONCE} when a server runs the LM or RM)")
    parser.add_argument("--cpu-threads", type=int, default=int(env("STARLING_CPU_THREADS", "0")),
                        help="threads for the models' work on the CPU (default, when they run on it: one fewer than "
                             "PyTorch would take, leaving a core to the web server)")
    parser.add_argument("--allow-lms", default=env("STARLING_ALLOW_LMS", ""),
                        help="comma-separated LM presets visitors may switch to, or 'all' (default: only --lm)")
    parser.add_argument("--allow-rms", default=env("STARLING_ALLOW_RMS", ""),
                        help="comma-separated RM presets visitors may choose, or 'all' (default: --rm and the "
                             "second RMs that fit in memory beside the launched models)")
    parser.add_argument("--client-header", default=env("STARLING_CLIENT_HEADER", "X-Forwarded-For" if env("SPACE_ID")
                                                          else ""),
                        help="behind a proxy you trust, the header in which it reports the client's address; its "
                             "last public address is the client the per-client limits count (default: "
                             "X-Forwarded-For on a Hugging Face Space, else none: the connection's own address)")
    parser.add_argument("--mcp", action="store_true", default=env("STARLING_MCP", "") in ("1", "true", "True"),
                        help="also serve the stateless tools (score_candidates, generate_candidates, probe_candidate, "
                             "attribute_reply) as an MCP server at /gradio_api/mcp/, for agents; needs "
                             "pip install 'gradio[mcp]'")
    return parser.parse_args(argv)


def allowed_models(args: argparse.Namespace, engine: Engine) -> dict[str, tuple[str, ...]]:
    """What visitors may choose on this server: the launched models, plus --allow-lms/--allow-rms, or by
    default the second RMs that fit. A visitor's switch changes the model for everyone, hence the limit."""
    allowed = default_allowed(engine, device_memory(args.device))
    for kind, flag, presets in (("lm", args.allow_lms, LM_PRESETS), ("rm", args.allow_rms, RM_PRESETS)):
        names = list(presets) if flag.strip() == "all" else [n.strip() for n in flag.split(",") if n.strip()]
        unknown = [name for name in names if name not in presets]
        if unknown:
            raise SystemExit(f"--allow-{kind}s: unknown preset {unknown[0]!r}; use {', '.join(presets)} or 'all'.")
        if names:
            allowed[kind] = tuple(dict.fromkeys([allowed[kind][0], *names]))
    return allowed


def turns_at_once(args: argparse.Namespace) -> int:
    """How many visitors' turns run at the same time: one on an in-process device, many when a server batches."""
    if args.turns_at_once < 0:
        raise ValueError(f"--turns-at-once must be at least 1 (or 0 for the default), not {args.turns_at_once}.")
    return args.turns_at_once or (SERVED_TURNS_AT_ONCE if args.backend != "local" else 1)


def cpu_threads(args: argparse.Namespace, device: str) -> int | None:
    """Threads for PyTorch's work on the CPU, or None to leave its default. With the models on the CPU, one fewer
    than its default (one per core): on all of them, every other thing the server does (answering requests,
    streaming, a probe preparing its texts) stalls the model's parallel regions, whose threads wait for the one that
    lost its core (on 2 cores a tiny turn took 2.9-6.9x as long beside one busy process, 0.94-1.43x with a core
    left: benchmarks/bench_threads.py)."""
    import torch

    if args.cpu_threads < 0:
        raise ValueError(f"--cpu-threads must be at least 1 (or 0 for the default), not {args.cpu_threads}.")
    if args.cpu_threads:
        return args.cpu_threads
    return max(1, torch.get_num_threads() - 1) if device == "cpu" else None


def on_zero_gpu(engine: Engine) -> Engine:
    """Run generation, scoring and probes inside ZeroGPU allocations; `spaces.GPU` is a no-op elsewhere."""
    if spaces is not None and engine.backend == "local":
        if os.environ.get("SPACES_ZERO_GPU"):
            # A GPU call runs in a forked process: a model first loaded there would be lost when it ends.
            engine.lm()
            engine.rm()
        engine.generate = spaces.GPU(duration=120)(engine.generate)
        for name in ("score", "values", "probe", "attribute"):
            setattr(engine, name, spaces.GPU(duration=60)(getattr(engine, name)))
    return engine


def is_tiny(kind: str, name: str) -> bool:
    preset = (LM_PRESETS if kind == "lm" else RM_PRESETS).get(name)
    return preset is not None and preset.repo.startswith("tiny:")


def startup_lines(args: argparse.Namespace, reason: str | None, allowed: dict[str, tuple[str, ...]],
                  device: str) -> list[str]:
    """What the terminal says before anything loads: the models, on what (`device` is `args.device` resolved),
    why tiny ones run, and what visitors may switch to. `reason` is pick_defaults()'s."""
    served = {kind: url for kind, url in (("lm", args.lm_url), ("rm", args.rm_url)) if args.backend != "local" and url}
    where = {kind: f"on {args.backend} at {served[kind]}" if kind in served else f"({args.precision}, {device})"
             for kind in ("lm", "rm")}
    lines = ["Starling demo", f"  language model: {args.lm} {where['lm']}", f"  reward model:   {args.rm} {where['rm']}"]
    tiny = [f"--{kind} {name}" for kind, name in (("lm", args.lm), ("rm", args.rm)) if is_tiny(kind, name)]
    if tiny:
        lines.append(f"  {reason}: the tiny random models run instead; replies are noise" if reason else
                     f"  the tiny presets were chosen ({', '.join(tiny)}): random models; replies are noise")
    if any(kind not in served and not is_tiny(kind, name) for kind, name in (("lm", args.lm), ("rm", args.rm))):
        note = "a GPU was found: the real models run on it" if device == "cuda" else \
            "the real models run on the CPU, slowly"
        lines.append(f"  {note}; each loads on first use, downloaded first if it is not cached")
    lines.append(f"  visitors may choose: LMs {', '.join(allowed['lm'])}; RMs {', '.join(allowed['rm'])}")
    return lines


def url_line(local_url: str, share_url: str | None, share: bool = False) -> str:
    """Where to open the app, once it is up; `share` is whether a public link was asked for."""
    local = local_url.rstrip("/")
    if share_url:
        return f"Open {local} in a browser, or the public link {share_url} from anywhere (Ctrl+C stops)"
    if share:
        return f"Open {local} in a browser (no public link could be made, see above; Ctrl+C stops)"
    return f"Open {local} in a browser (python app.py --share for a public link; Ctrl+C stops)"


def main() -> None:
    # Models served elsewhere are the real ones by default: this machine needs no GPU for them.
    defaults, reason = (REAL, None) if parse_args(REAL).backend != "local" else pick_defaults()
    args = parse_args(defaults)
    try:
        engine = Engine(args.lm, args.rm, args.precision, args.device, backend=args.backend, lm_url=args.lm_url,
                        rm_url=args.rm_url)
        engine.allowed = allowed_models(args, engine)
        device = resolve_device(args.device)
        at_once = turns_at_once(args)
        threads = cpu_threads(args, device)
    except (LoadError, ValueError) as error:  # e.g. --device cuda without a GPU, an unknown preset
        raise SystemExit(f"Cannot start: {error}") from None
    if args.mcp and importlib.util.find_spec("mcp") is None:
        raise SystemExit("Cannot start: --mcp needs the mcp package: pip install 'gradio[mcp]', then start again.")
    map_large_allocations()  # so that a burst of large requests or batches does not keep its memory
    lines = startup_lines(args, reason, engine.allowed, device)
    if threads:
        import torch

        lines.append(f"  the models' CPU work: {threads} thread{'s' * (threads > 1)} of {torch.get_num_threads()} "
                     "(--cpu-threads)")
        torch.set_num_threads(threads)
    print("\n".join(lines), flush=True)
    demo = build_demo(on_zero_gpu(engine), banner(args, reason), at_once, args.client_header or None)
    try:  # quiet: Gradio's own banner would suggest `share=True` in `launch()`, not this app's --share
        _, local_url, share_url = demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                                              quiet=True, prevent_thread_lock=True, mcp_server=args.mcp,
                                              **launch_kwargs())
    except OSError as error:
        if "Cannot find empty port" not in str(error):
            raise
        raise SystemExit(f"Cannot start: port {args.port} on {args.host} is in use or cannot be used; "
                         "choose another with --port (or GRADIO_SERVER_PORT).") from None
    print(url_line(local_url, share_url, args.share), flush=True)
    if args.mcp:
        print(f"MCP server (the tools for agents): {local_url}gradio_api/mcp/", flush=True)
    demo.block_thread()  # until Ctrl+C, which closes the server


if __name__ == "__main__":
    main()
