"""One builder per demo tab; each lays out its components and wires its handlers inside the
`gr.Blocks` context that `serve.demo.app.build_app` opens."""
from serve.demo.tabs.agent import build_agent_tab
from serve.demo.tabs.live import build_live_tab
from serve.demo.tabs.som import build_som_tab
from serve.demo.tabs.tom import build_tom_tab

__all__ = ["build_agent_tab", "build_live_tab", "build_som_tab", "build_tom_tab"]
