from hypothesis import given, settings
from hypothesis import strategies as st

from magma.codecs import (COORD_BINS, MarkTrace, ParseError, UIAction, denormalize_point,
                          normalize_point, parse_box, parse_mark, parse_point, parse_traces,
                          parse_ui_action, render_box, render_mark, render_point, render_traces,
                          render_ui_action)

coord = st.integers(0, COORD_BINS - 1)
point = st.tuples(coord, coord)
mark_id = st.integers(0, 9999)


@given(mark_id)
def test_mark_round_trip(m):
    assert parse_mark(render_mark(m)) == m


@given(point)
def test_point_round_trip(p):
    assert parse_point(render_point(p)) == p


@given(coord, coord, coord, coord)
def test_box_round_trip(a, b, c, d):
    box = (min(a, c), min(b, d), max(a, c), max(b, d))
    assert parse_box(render_box(box)) == box


@given(st.lists(st.builds(MarkTrace, mark_id, st.lists(point, min_size=1, max_size=8).map(tuple)),
                min_size=1, max_size=6))
def test_traces_round_trip(traces):
    assert parse_traces(render_traces(traces)) == traces


def _ui_actions():
    text = st.text(max_size=30)
    opt_mark = st.none() | mark_id
    opt_point = st.none() | point
    opt_text = st.none() | text
    click = st.builds(UIAction, st.just("click"), mark_id, opt_point, opt_text) | \
        st.builds(UIAction, st.just("click"), opt_mark, point, opt_text)
    typ = st.builds(UIAction, st.just("type"), opt_mark, opt_point, text)
    sel = st.builds(UIAction, st.just("select"), opt_mark, opt_point, text)
    scroll = st.builds(UIAction, st.just("scroll"), opt_mark, opt_point, opt_text,
                       st.sampled_from(["up", "down", "left", "right"]))
    return click | typ | sel | scroll


@given(_ui_actions())
@settings(max_examples=300)
def test_ui_action_round_trip(a):
    assert parse_ui_action(render_ui_action(a)) == a


def test_ui_action_text_form():
    a = UIAction("click", mark=7, point=(123, 456))
    assert render_ui_action(a) == "click Mark 7 at (123,456)"
    assert render_ui_action(UIAction("click", mark=7, text="OK")) == 'click "OK" Mark 7'
    assert render_ui_action(UIAction("type", mark=3, text='say "hi"')) == 'type "say \\"hi\\"" Mark 3'


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_malformed_text_never_raises(text):
    for parse in (parse_mark, parse_point, parse_box, parse_traces, parse_ui_action):
        out = parse(text)  # must not raise
        assert isinstance(out, ParseError) or out is not None


def test_malformed_examples_are_typed_errors():
    assert isinstance(parse_mark("Mark seven"), ParseError)
    assert isinstance(parse_point("(1000,5)"), ParseError)  # 4 digits: out of range
    assert isinstance(parse_box("[5,5,1,1]"), ParseError)  # corners out of order
    assert isinstance(parse_ui_action("click"), ParseError)  # click needs a mark or a point
    assert isinstance(parse_ui_action("scroll Mark 3"), ParseError)  # scroll needs a direction
    assert isinstance(parse_traces("Mark 1: (1,2); garbage"), ParseError)
    err = parse_ui_action("jump Mark 2")
    assert err.to_dict()["code"] == "unparsable_ui_action"


@given(st.floats(0, 1919.999), st.floats(0, 1079.999))
def test_normalised_points_land_in_the_same_pixel_cell(x, y):
    w, h = 1920, 1080
    p = normalize_point(x, y, w, h)
    assert all(0 <= v < COORD_BINS for v in p)
    cx, cy = denormalize_point(p, w, h)
    assert abs(cx - x) <= w / COORD_BINS and abs(cy - y) <= h / COORD_BINS
