"""Source types for public dataset layouts, read exactly as published.

`ui_sources.py` (LLaVA, SeeClick, ScreenSpot) and `mind2web.py` turn records parsed by
`magma.layouts` into samples: the offline benchmarks in `eval/benchmarks/` read the same layouts,
so their parsers live in `magma/`. `video_layouts.py` (SSv2, EPIC-KITCHENS-100, Ego4D annotation
files; no benchmark reads them) and `video_datasets.py` (their source types) stay here. The robot
layouts (LeRobot v3, RLDS) live with the other episode readers in `data_pipeline/robot/`.
"""
