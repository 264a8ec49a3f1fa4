"""`warden demo --scenario zh-campus` as a user runs it (issue 19): a Chinese report, Chinese
alert texts by names, a Chinese summary; the ground truth still matches."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from simulators.broker import MosquittoBroker
from tests.support.scripts import console_script

SPEED = 20_000


def test_the_zh_campus_night_is_told_in_chinese(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    warden = console_script("warden")
    done = subprocess.run(
        [warden, "demo", "--scenario", "zh-campus", "--out", str(tmp_path), "--speed", str(SPEED), "--broker", "mosquitto"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "告警与基准结果一致" in done.stderr  # "The alerts match the ground truth"
    assert json.loads((tmp_path / "ground-truth-check.json").read_text())["ok"] is True

    alerts = {a["rule"]: a for a in json.loads((tmp_path / "alerts.json").read_text(encoding="utf-8"))}
    assert sorted(alerts) == ["ac_after_hours", "water_night_flow"]
    ac = alerts["ac_after_hours"]
    # A-301 is 高一（3）班 in the site file; its AC runs on after self-study ends at 21:30 and
    # the self-study schedule starts again at 07:00, which ends the alert.
    assert ac["message"].startswith("AC in A-301 on after hours for ")  # the rule's English, as always
    assert ac["text"].startswith("高一（3）班的空调在非工作时间开启已 ") and ac["text"].endswith(" CNY）")
    assert ac["end_text"].startswith("高一（3）班的作息时间于 07:00 开始；空调一直在非工作时间开启 9 小时 ")
    # The drip: 0.12 L/min from the night's start, 16:00 on the 17th, seen in the 02:00-05:00 window.
    assert alerts["water_night_flow"]["text"].startswith("wm-a 疑似漏水：自 2026-11-17 16:00 起持续用水未停（至少 0.12 升/分钟）")

    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in page
    assert "<h1>晨报：华夏中学</h1>" in page
    assert "<td>教学楼</td><td>高一（3）班</td>" in page
    assert "<td>wm-a</td><td>一楼卫生间</td>" in page
