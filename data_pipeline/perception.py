"""Public perception functions: the only data_pipeline module `serve` may import, so that a
screen at inference is marked exactly as the training screens were.

Set-of-Mark:
    marks_from_dom_elements(dom_elements, screen_size=None) -> (marks, {ref: mark id})
    propose_marks(image, max_marks=32, backend="opencv"|"sam", sam_checkpoint=None) -> marks
    render_marks(image, marks, style="box"|"dot") -> marked image
    layout_labels(marks, (w, h), style) -> (label boxes, font scale)
    capture_page(url_or_html_path, viewport=(1280, 800)) -> (screenshot, marks)
    mark_table(marks) -> [{"id", "box", "centre", "text", "role"}]
"""
from __future__ import annotations

from data_pipeline.som.dom_marks import marks_from_dom_elements, reading_order
from data_pipeline.som.rendering import layout_labels, mark_table, render_marks
from data_pipeline.som.page_capture import CaptureError, PageCapturer, capture_page, close_shared_capturer
from data_pipeline.som.region_proposals import ProposalBackendError, propose_marks

__all__ = [
    "marks_from_dom_elements", "reading_order", "propose_marks", "render_marks", "layout_labels",
    "mark_table", "capture_page", "close_shared_capturer", "PageCapturer", "CaptureError", "ProposalBackendError",
]

# Trace-of-Mark (ToM helper) re-exports go below this line.
#   track_points(frames, queries, backend="lk"|"cotracker") -> (tracks [T,N,2], visible [T,N])
#   trace_of_mark(frames, params=TomParams(), backend="lk") -> TomResult (marks, traces, ...)
#   render_traces(image, tracks, marks, mark_tracks=None) -> image with marks + trace polylines
from data_pipeline.tom.traces import TomParams, TomResult, TomSkip, draw_point_marks, trace_of_mark
from data_pipeline.tom.traces import render_trace_overlay as render_traces
from data_pipeline.tom.tracking import TrackerUnavailable, grid_queries
from data_pipeline.tom.tracking import track as track_points

__all__ += ["track_points", "grid_queries", "trace_of_mark", "render_traces", "draw_point_marks",
            "TomParams", "TomResult", "TomSkip", "TrackerUnavailable"]
