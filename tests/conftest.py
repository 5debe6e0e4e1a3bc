"""Shared fixtures: one tiny offline engine, and one launched demo for the API and browser tests."""
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest  # noqa: E402

from starling_demo.engine import Engine  # noqa: E402

# lm, rm, n, temperature, top_p, max_new_tokens, seed, mode, system, readout, rm2, rm_format: the chat settings, in order.
SETTINGS = dict(lm="tiny", rm="tiny", n=4, temperature=0.7, top_p=1.0, max_new_tokens=10, seed="7",
                mode="GPT4 Correct", system="", readout="card", rm2="none", rm_format="rlhf")


def pytest_report_header(config):
    from browser import describe

    return f"browser tests drive: {describe()}"


@pytest.fixture(autouse=True)
def private_views(tmp_path, monkeypatch):
    """Keep the folders the loader writes for local checkpoints out of the user's cache."""
    from starling_demo import loading

    monkeypatch.setattr(loading, "VIEWS", tmp_path / "views")


@pytest.fixture(scope="session")
def engine():
    return Engine("tiny", "tiny", "fp32", "cpu")


@pytest.fixture(scope="session")
def app_url(engine):
    """The demo, launched once in this process; yields its local URL."""
    from starling_demo.ui import build_demo, launch_kwargs

    demo = build_demo(engine, "**Offline demo:** tiny models: replies are noise; the wiring is real.")
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield url
    demo.close()
