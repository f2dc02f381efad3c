"""The Gradio demo (`magma demo`): app.py composes the tabs in tabs/, logic.py holds their work
without Gradio, backend.py talks to a policy (in process or over HTTP), live.py drives pages."""
import os

# Before any module of the demo imports gradio: no analytics calls from a local demo.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
