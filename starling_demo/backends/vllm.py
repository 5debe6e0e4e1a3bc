"""The vLLM backend: generation on a `vllm serve` LM, reward values from a vLLM pooling server, over HTTP.

Prompts and reward inputs go as the exact token ids the project builds, never as text, and come back as ids,
decoded here with the project's tokenizer. Requests of all visitors are batched by the server.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from ..batching import BATCH_TOKENS
from ..generation import Candidates
from . import ServerError
from ..loading import LoadError, lm_tokenizer, rm_tokenizer
from ..presets import LMPreset, RMPreset
from ..value_passes import Values, per_group

# Connecting may wait for a busy server; a read waits for the next token or a whole scoring pass.
TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=60.0, pool=600.0)
# Text whose ids must be the same here and on the server: the templates' markers, accents, digits, code.
PROBE = {"lm": "GPT4 Correct User: Héllo, wörld! 12 345<|end_of_turn|>GPT4 Correct Assistant: def f(x):\n\treturn x",
         "rm": "[INST] Héllo, wörld! 12 345 [/INST] <|im_start|>user\ndef f(x):\n\treturn x<|im_end|>"}


def _check(response: httpx.Response, url: str) -> None:
    if response.is_success:
        return
    try:
        detail = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        detail = response.text[:300]
    raise ServerError(f"The vLLM server at {url} answered {response.status_code}: {detail}")


@dataclass
class Server:
    """One vLLM server: its URL, the model it serves and how long its inputs may be."""

    url: str
    model: str
    max_model_len: int
    client: httpx.Client = field(repr=False)

    def post(self, path: str, body: dict) -> dict:
        response = self.client.post(path, json={"model": self.model} | body)
        _check(response, self.url)
        return response.json()


def open_server(url: str, kind: str) -> Server:
    """The server at `url`, asked which model it serves; LoadError if it cannot be reached or serves none."""
    url = url.rstrip("/")
    what = "language model" if kind == "lm" else "reward model"
    client = httpx.Client(base_url=url, timeout=TIMEOUT)
    try:
        response = client.get("/v1/models")
        _check(response, url)
        served = response.json()["data"][0]
    except (httpx.HTTPError, ServerError, ValueError, KeyError, IndexError) as error:
        client.close()
        raise LoadError(f"Cannot use the vLLM server at {url} for the {what} ({type(error).__name__}: {error}): "
                        f"start it (README, 'Serving at scale') or correct --{kind}-url.") from None
    return Server(url, served["id"], int(served["max_model_len"]), client)


def check_length(server: Server, preset: RMPreset) -> None:
    """Refuse an RM server that cannot take the longest input the project sends (`preset.max_length` ids)."""
    if server.max_model_len < preset.max_length:
        raise LoadError(f"The vLLM server at {server.url} takes at most {server.max_model_len} tokens, but "
                        f"{preset.name} scores inputs of up to {preset.max_length}: restart it with "
                        f"--max-model-len {preset.max_length}.")


def check_vocabulary(server: Server, tokenizer, preset: LMPreset | RMPreset, kind: str) -> None:
    """Refuse a server whose tokenizer gives other ids than the preset's for the probe text: its model is not
    the preset's, and the ids the project sends would mean other tokens there."""
    ours = tokenizer.encode(PROBE[kind], add_special_tokens=False)
    theirs = server.post("/tokenize", {"prompt": PROBE[kind], "add_special_tokens": False})["tokens"]
    if theirs != ours:
        differ = next(i for i, (a, b) in enumerate(zip([*ours, None], [*theirs, None])) if a != b)
        raise LoadError(f"The vLLM server at {server.url} serves {server.model}, whose vocabulary is not that of "
                        f"{preset.name}: the probe text's token {differ} is {theirs[differ:differ + 1]} there and "
                        f"{ours[differ:differ + 1]} here. Serve {preset.name}'s model there, or choose the preset "
                        "that matches the served model.")


@dataclass
class VllmLM:
    """A Starling LM served by `vllm serve`: N candidates from one `/v1/completions` request, streamed."""

    preset: LMPreset
    tokenizer: object
    server: Server
    in_process = False

    @property
    def where(self) -> str:
        return f"vLLM at {self.server.url}"

    @property
    def context(self) -> int:
        return self.server.max_model_len

    def stream(self, prompt_ids: list[int], n: int, temperature: float, top_p: float, max_new_tokens: int,
               seed: int, stop_ids: frozenset) -> Iterator[Candidates]:
        """The N candidates after each streamed token. Closing this iterator closes the connection, and vLLM
        aborts a request whose client went away: Stop ends the decoding on the server too."""
        body = {"model": self.server.model, "prompt": prompt_ids, "n": n, "temperature": temperature,
                "top_p": top_p, "max_tokens": max_new_tokens, "seed": seed, "stop_token_ids": sorted(stop_ids),
                "stream": True, "return_token_ids": True}
        state = Candidates([[] for _ in range(n)], [None] * n)
        try:
            with self.server.client.stream("POST", "/v1/completions", json=body) as response:
                if not response.is_success:
                    response.read()
                    _check(response, self.server.url)
                for line in response.iter_lines():
                    choices = streamed_choices(line, self.server.url)
                    for choice in choices:
                        take(state, choice, prompt_ids, stop_ids)
                    if choices:
                        yield Candidates([list(ids) for ids in state.ids], list(state.finished))
        except httpx.HTTPError as error:
            raise ServerError(f"The connection to the vLLM server at {self.server.url} failed "
                              f"({type(error).__name__}: {error}): check that it is running.") from None
        if not all(state.finished):
            raise ServerError(f"The vLLM server at {self.server.url} ended the stream before every candidate "
                              "finished: check its log.")


def streamed_choices(line: str, url: str) -> list[dict]:
    """The choice chunks of one line of a `/v1/completions` event stream; ServerError for an error event (a
    request that failed after its stream began, e.g. a dead engine).

    >>> streamed_choices('data: {"choices": [{"index": 0, "token_ids": [7]}]}', "URL"), streamed_choices("", "URL")
    ([{'index': 0, 'token_ids': [7]}], [])
    >>> streamed_choices('data: {"error": {"message": "EngineCore encountered an issue."}}', "URL")
    Traceback (most recent call last):
    starling_demo.backends.ServerError: The vLLM server at URL stopped the request: EngineCore encountered an issue.
    """
    if not line.startswith("data: ") or line == "data: [DONE]":
        return []
    chunk = json.loads(line.removeprefix("data: "))
    if "error" in chunk:
        error = chunk["error"]
        raise ServerError(f"The vLLM server at {url} stopped the request: "
                          f"{error.get('message', error) if isinstance(error, dict) else error}")
    return chunk.get("choices") or []


def take(state: Candidates, choice: dict, prompt_ids: list[int], stop_ids: frozenset) -> None:
    """Add one streamed choice chunk to `state`: its new ids, without the stop token vLLM includes, and why
    it finished ("stop" or "length"). The server's echo of the prompt must be the ids sent.

    >>> state = Candidates([[], []], [None, None])
    >>> take(state, {"index": 1, "token_ids": [5, 32000], "finish_reason": "stop", "prompt_token_ids": [1]},
    ...      [1], frozenset({32000}))
    >>> state
    Candidates(ids=[[], [5]], finished=[None, 'stop'])
    """
    echoed = choice.get("prompt_token_ids")
    if echoed is not None and echoed != prompt_ids:
        raise ServerError("The vLLM server decoded another prompt than the ids sent; its model or tokenizer "
                          "settings differ from the project's.")
    i = choice["index"]
    state.ids[i] += [token for token in choice.get("token_ids") or [] if token not in stop_ids]
    if choice.get("finish_reason"):
        state.finished[i] = "length" if choice["finish_reason"] == "length" else "stop"


@dataclass
class VllmRM:
    """A reward model converted by `convert-rm` and served by vLLM's pooling runner.

    A server started with `--pooler-config '{"task": "token_classify"}'` gives the value at every token (the
    reward trace; the last one is the reward); one started without gives the last token's value only.
    """

    preset: RMPreset
    tokenizer: object
    server: Server
    per_token: bool  # whether the server gives the value at every token
    in_process = False
    readouts = ("last-token",)  # a pooling server reads no padded position: the card's index 2047 is not there

    @property
    def where(self) -> str:
        return f"vLLM at {self.server.url}"

    def values(self, groups: list[list[list[int]]], pad_id: int, query_position: int | None, per_token: bool = False,
               share_prefix: bool = True, starts: list[list[int]] | None = None) -> list[Values]:
        """One request for every row of `groups` (the server batches them, and caches shared prefixes itself; how
        its batches move a value is the server's: `starts` is not used)."""
        if query_position is not None:
            raise ValueError(f"The vLLM server at {self.server.url} reads the last token only.")
        rows = [row for group in groups for row in group]
        try:
            if self.per_token:
                data = self.server.post("/pooling", {"input": rows, "task": "token_classify",
                                                     "use_activation": False})["data"]
                every = [[value for value, in item["data"]] for item in data]
                last = [values[-1] for values in every]
            else:
                data = self.server.post("/classify", {"input": rows, "use_activation": False})["data"]
                every, last = None, [item["probs"][0] for item in data]
        except httpx.HTTPError as error:
            raise ServerError(f"The connection to the vLLM server at {self.server.url} failed "
                              f"({type(error).__name__}: {error}): check that it is running.") from None
        return per_group(groups, last, None, every if per_token else None)

    def batch_tokens(self) -> int:
        """Ids in one request of many conversations: the server splits its work to fit its own memory."""
        return BATCH_TOKENS


def pooling_task(server: Server) -> bool:
    """Whether the server gives per-token values (token_classify) or only the last token's (classify); LoadError
    if it is not a one-output pooling server."""
    probe = {"input": [[1, 2]], "use_activation": False}
    for per_token, path, extra in ((True, "/pooling", {"task": "token_classify"}), (False, "/classify", {})):
        try:
            data = server.post(path, probe | extra)["data"][0]
        except (ServerError, httpx.HTTPError, KeyError, IndexError, ValueError):
            continue
        outputs = len(data["data"][0]) if per_token else len(data["probs"])
        if outputs == 1:
            return per_token
    raise LoadError(f"The vLLM server at {server.url} serves {server.model}, which is not a one-output reward "
                    "model: convert the RM with `python -m starling_demo convert-rm` and serve it with "
                    "`--runner pooling --convert classify` (README, 'Serving at scale').")


def connect(kind: str, preset: LMPreset | RMPreset, url: str) -> VllmLM | VllmRM:
    """The model of `preset` on the vLLM server at `url`, checked: reachable, the preset's vocabulary, and for
    an RM a one-output pooling model."""
    server = open_server(url, kind)
    try:
        tokenizer = lm_tokenizer(preset) if kind == "lm" else rm_tokenizer(preset)
        check_vocabulary(server, tokenizer, preset, kind)
        if kind == "lm":
            return VllmLM(preset, tokenizer, server)
        per_token = pooling_task(server)
        check_length(server, preset)
        return VllmRM(preset, tokenizer, server, per_token)
    except (ServerError, httpx.HTTPError) as error:
        server.client.close()
        raise LoadError(f"Cannot use the vLLM server at {url}: {error}") from None
    except BaseException:
        server.client.close()
        raise
