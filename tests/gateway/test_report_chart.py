"""The morning report's energy chart in zh-CN (issue 19): names and words in Chinese, drawn
with a CJK font found through matplotlib's font manager, so no glyph is missing; without
such a font it is still drawn, and the log says why the labels are boxes, once."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest

from gateway import report

#: One room's waste, as build_morning_report shapes it: 1.5 kWh of air-conditioning in 科学实验室 of 教学楼.
REPORT: dict[str, Any] = {
    "site": {"locale": "zh-CN", "names": {"A": "教学楼", "A-204": "科学实验室"}},
    "energy": {"currency": "CNY", "by_kind": [{"kind": "ac"}],
               "by_room": [{"building": "A", "room": "A-204", "kwh": 1.5, "cost": 0.9, "kinds": {"ac": 1.5}}]},
}


def test_a_zh_cn_chart_has_every_glyph() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = report.energy_chart_svg(REPORT)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert svg is not None and svg.startswith("<?xml")
    assert not missing, missing
    assert len(report.chart_fonts()) == 2, "fonts-wqy-microhei (or another CJK font) is installed on this machine"
    # The labels are the names and the catalogue's words; SVG text is drawn as paths, so the
    # words are found in the figure's text objects, not in the file: check them there.
    assert "教学楼 / 科学实验室" in _texts(REPORT)
    assert "下班后浪费的电量（千瓦时），按回路类型" in _texts(REPORT)


def test_english_keeps_ids_and_words() -> None:
    english = {**REPORT, "site": {"locale": "en", "names": REPORT["site"]["names"]}}
    texts = _texts(english)
    assert "A / A-204" in texts
    assert "kWh wasted after hours, by circuit kind" in texts


def test_without_a_cjk_font_the_chart_is_drawn_and_the_log_says_so_once(monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(report, "CJK_FONTS", {"No Such CJK Font": "/nonexistent/font.ttc"})
    report.chart_fonts.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.report"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the boxes' missing-glyph warnings: expected here
            first = report.energy_chart_svg(REPORT)
            second = report.energy_chart_svg(REPORT)
        assert first is not None and second is not None
        said = [r for r in caplog.records if "no CJK font" in r.getMessage()]
        assert len(said) == 1
    finally:
        report.chart_fonts.cache_clear()


def _texts(data: dict[str, Any]) -> set[str]:
    """Every text the chart draws (tick labels, axis label, legend), captured from the figure."""
    from matplotlib.figure import Figure

    drawn: set[str] = set()
    original = Figure.savefig

    def capture(figure: Figure, *args: Any, **kwargs: Any) -> Any:
        saved = original(figure, *args, **kwargs)  # drawing sets the tick labels
        drawn.update(t.get_text() for t in figure.findobj(lambda o: hasattr(o, "get_text")))
        return saved

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Figure, "savefig", capture)
        report.energy_chart_svg(data)
    return drawn
