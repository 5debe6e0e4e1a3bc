"""The Gradio page: `build_demo(engine)` builds it, `launch_kwargs()` are its theme, CSS and server limits."""
from .page import build_demo, launch_kwargs

__all__ = ["build_demo", "launch_kwargs"]
