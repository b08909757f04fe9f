"""The leaderboard page in headless Chromium: rows, benchmark column groups and their means, sorting, the family and
protocol filters (rows and chart marks), the chart, and a screenshot kept as an artifact."""

from __future__ import annotations

import html
import json
import re

from chromium import chromium_dom, chromium_screenshot
from run_factory import write_run

from mcub.leaderboard import build
from mcub.leaderboard_page import benchmark_of, column_groups, model_family
from mcub.results import read_summary, write_summary
from mcub.schema import ModelInfo
from mcub.tasks import load_registry

FLAGS_75 = [True, True, False, True]
FLAGS_50 = [True, False, True, False]
FLAGS_25 = [False, False, True, False]

PROBE = """<script>
(function () {
  function visible() {
    return Array.from(document.querySelectorAll("#board tbody tr")).filter(function (r) { return !r.hidden; })
      .map(function (r) { return r.children[1].textContent; });
  }
  function marks() {
    return Array.from(document.querySelectorAll("#chart g.mark")).filter(function (m) {
      return m.style.display !== "none"; }).map(function (m) { return m.dataset.entry + ":" + m.dataset.group; });
  }
  function choose(id, value) {
    var select = document.getElementById(id);
    select.value = value;
    select.dispatchEvent(new Event("change"));
  }
  var out = {initial: visible(), marks: marks(), ranks: Array.from(document.querySelectorAll("#board tbody tr"))
    .map(function (r) { return r.children[0].textContent; })};
  var score = document.querySelector('#board th[data-column="3"]');
  score.click(); out.ascending = visible();
  score.click(); out.descending = visible();
  var mean = document.querySelector('#board th[data-column="7"]');
  mean.click(); mean.click(); out.meanDescending = visible();
  choose("family-filter", "baseline"); out.baseline = visible(); out.baselineMarks = marks();
  choose("family-filter", ""); choose("protocol-filter", "loglik"); out.loglik = visible();
  out.loglikMarks = marks();
  choose("family-filter", "composed"); out.composedLoglik = visible();
  choose("family-filter", ""); choose("protocol-filter", ""); out.all = visible(); out.allMarks = marks();
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def _submission(board, name, outcomes, adapter, args, protocol="paper"):
    run = write_run(board / "submissions" / name, outcomes, model=name, protocol=protocol)
    summary = read_summary(run)
    summary.model = ModelInfo(name=name, adapter=adapter, args=args, modalities=["audio", "image", "video"])
    write_summary(run, summary)
    return run


def _board(tmp_path):
    board = tmp_path / "board"
    experts = {"image": "i", "video": "v", "audio": "a"}
    _submission(board, "damc", {"mcub-4": FLAGS_75, "mcub-3-image-audio-video": FLAGS_50, "avqa-audio": FLAGS_75,
                                "mcub-3-audio-video-pointcloud": [True] * 4, "avqa-image+audio": [True] * 4},
                "modelcompose", {"experts": experts})  # fmt: skip
    _submission(board, "naivemc-loglik", {"mcub-4": FLAGS_50, "avqa-audio": FLAGS_50, "avqa-image+audio": FLAGS_50},
                "modelcompose", {"experts": experts}, protocol="loglik")  # fmt: skip
    _submission(board, "random", {"mcub-4": FLAGS_25, "mcub-3-image-audio-video": FLAGS_25, "avqa-audio": FLAGS_25},
                "random", {})  # fmt: skip
    return board


def test_the_page_groups_sorts_filters_and_charts_in_chromium(tmp_path):
    board = _board(tmp_path)
    entries = build(board)
    page = (board / "index.html").read_text()
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    dom = chromium_dom(board / "index.html")
    head = dom[dom.index("<thead>") : dom.index("</thead>")]
    groups = re.findall(r'<th colspan="(\d+)" class="group">(.*?)</th>', head)
    assert groups == [("1", "MCUB-4"), ("3", "MCUB-3"), ("3", "AVQA")]
    columns = re.findall(r"<th data-column=\"\d+\"[^>]*>(.*?)</th>", head)
    assert columns == ["rank", "model", "run", "score", "family", "protocol", "mcub-4", "mean", "image-audio-video",
                       "audio-video-pointcloud", "mean", "audio", "image+audio"]  # fmt: skip
    rows = re.findall(r"<tr>(.*?)</tr>", dom[dom.index("<tbody>") : dom.index("</tbody>")], re.S)
    cells = {re.findall(r"<td[^>]*>(.*?)</td>", row)[1]: re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows}
    assert [cells[name][4:6] for name in ("damc", "naivemc-loglik", "random")] == [
        ["composed", "paper"],
        ["composed", "loglik"],
        ["baseline", "paper"],
    ]
    assert cells["damc"][3] == "75.00"  # the score: the mean over the shared tasks mcub-4 and avqa-audio (75, 75)
    assert cells["damc"][7].startswith("75.00 [")  # MCUB-3 mean: (50 + 100) / 2
    assert cells["damc"][10].startswith("87.50 [")  # AVQA mean: (75 + 100) / 2
    assert cells["damc"][6] == "75.00 [25.00, 100.00]"  # a one-task group: the task's own accuracy and interval
    assert cells["naivemc-loglik"][7] == "-" and cells["random"][7] == "-" and cells["random"][10] == "-"
    assert cells["random"][8].startswith("25.00 [") and cells["random"][9] == "-"

    probe_page = board / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"))
    probed = chromium_dom(probe_page)
    result = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', probed, re.S).group(1)))
    assert result["initial"] == ["damc", "naivemc-loglik", "random"] == [entry.model for entry in entries]
    assert result["ranks"] == [entry.rank_label for entry in entries] == ["1", "1=", "1="]  # 4 items: tied
    assert result["ascending"] == ["random", "naivemc-loglik", "damc"]
    assert result["descending"] == ["damc", "naivemc-loglik", "random"]
    assert result["baseline"] == ["random"]
    assert result["loglik"] == ["naivemc-loglik"]
    assert result["composedLoglik"] == ["naivemc-loglik"]
    assert result["all"] == ["damc", "naivemc-loglik", "random"]
    # chart marks: one per submission and group it has a mean for (damc: 3, naivemc-loglik: 2, random: 1)
    marks = ["0:avqa", "0:mcub-3", "0:mcub-4", "1:avqa", "1:mcub-4", "2:mcub-4"]
    assert sorted(result["allMarks"]) == sorted(result["marks"]) == marks
    assert result["baselineMarks"] == ["2:mcub-4"]
    assert sorted(result["loglikMarks"]) == ["1:avqa", "1:mcub-4"]
    assert result["meanDescending"] == ["damc", "naivemc-loglik", "random"]
    assert '<svg id="chart"' in dom and dom.count('<g class="mark"') == 6
    screenshot = chromium_screenshot(board / "index.html", tmp_path / "leaderboard.png")
    print(f"leaderboard screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_family_and_benchmark_rules():
    registry = load_registry()
    assert model_family(ModelInfo(name="d", adapter="modelcompose", args={"experts": {"image": "x", "audio": "y"}}))\
        == "composed"  # fmt: skip
    assert model_family(ModelInfo(name="e", adapter="modelcompose", args={"experts": {"image": "x"}})) == "expert"
    assert model_family(ModelInfo(name="t", adapter="modelcompose-tiny", modalities=["image", "audio"])) == "composed"
    assert model_family(ModelInfo(name="q", adapter="qwen-omni")) == "baseline"
    benchmarks = {task: benchmark_of(task, registry) for task in
                  ("mcub-4", "mcub-3-image-audio-pointcloud", "music-avqa-video", "avqa-audio", "modelnet40",
                   "objaverse-cap", "mcub-sample", "made-up")}  # fmt: skip
    assert benchmarks == {"mcub-4": "mcub-4", "mcub-3-image-audio-pointcloud": "mcub-3", "music-avqa-video":
                          "music-avqa", "avqa-audio": "avqa", "modelnet40": "point tasks", "objaverse-cap":
                          "point tasks", "mcub-sample": "mcub-sample", "made-up": "made-up"}  # fmt: skip
    ordered = column_groups(["made-up", "objaverse-cls", "music-avqa-audio", "avqa-video", "avqa-audio", "mcub-4"],
                            registry)  # fmt: skip
    assert [(group.name, group.tasks) for group in ordered] == [
        ("mcub-4", ("mcub-4",)),
        ("avqa", ("avqa-audio", "avqa-video")),
        ("music-avqa", ("music-avqa-audio",)),
        ("point tasks", ("objaverse-cls",)),
        ("made-up", ("made-up",)),
    ]
