import json

import pytest
from run_factory import write_run

from mcub.__main__ import main as mcub_main
from mcub.composition_gain import main as gain_main
from mcub.results import read_records, write_records
from mcub.stats import mcnemar_exact, paired_bootstrap

# Per task, item by item: composed, image expert, audio expert, blind LLM (1 right, 0 wrong).
T = ["1000", "1001", "0100", "0010", "1100", "0000", "1011", "0110"]
U = ["1000", "0000", "1100", "1111", "0000"]
SYNERGY = {"t": ["0", "1"], "u": ["0"]}
INTERFERENCE = {"t": ["2", "3", "7"], "u": ["2"]}  # u/2: the composed run has no record of it
AUDIO_IMAGE, ALL_THREE = ("image", "audio"), ("video", "image", "audio")


def _column(rows: list[str], position: int) -> list[bool]:
    return [row[position] == "1" for row in rows]


def _edit_records(run_dir, task, media, drop=()):
    """Rewrite a task's records with the project's own reader and writer: ids in `drop` removed, media set."""
    path = run_dir / "records" / f"{task}.jsonl"
    records, _ = read_records(path, repair=False)
    kept = []
    for record in records.values():
        if record.id in drop:
            continue
        entries = [{"modality": modality, "path": f"{record.id}.{modality}"} for modality in media(int(record.id))]
        kept.append(record.model_copy(update={"media": entries}))
    write_records(path, kept)


def _runs(tmp_path, data_hash="q" * 64, protocol="paper"):
    """Four runs of tasks t and u (the audio expert's on `data_hash`): no run has a record of u/4, the composed run
    none of u/2."""
    dirs = {}
    for position, name in enumerate(["composed", "image", "audio", "blind"]):
        run_dir = tmp_path / name
        outcomes = {"t": _column(T, position), "u": _column(U, position)}
        write_run(run_dir, outcomes, f"m-{name}", protocol, data_hash=data_hash if name == "audio" else "q" * 64)
        _edit_records(run_dir, "t", lambda index: AUDIO_IMAGE if index < 4 else ALL_THREE)
        _edit_records(run_dir, "u", lambda index: AUDIO_IMAGE, {"4", "2"} if name == "composed" else {"4"})
        dirs[name] = str(run_dir)
    return dirs


def _gain(tmp_path, dirs, *extra, blind=True):
    out = tmp_path / "gain.json"
    argv = [dirs["composed"], "--experts", dirs["image"], dirs["audio"], "--out", str(out), *extra]
    code = gain_main(argv + (["--blind", dirs["blind"]] if blind else []))
    return code, json.loads(out.read_text()) if out.exists() else None


def test_synergy_and_interference_per_task_modality_subset_and_overall(tmp_path, capsys):
    code, gain = _gain(tmp_path, _runs(tmp_path))
    assert code == 0
    tasks = {scope["scope"]: scope for scope in gain["tasks"]}
    assert [tasks["t"]["n"], tasks["u"]["n"]] == [8, 5]
    for task in ("t", "u"):
        assert tasks[task]["synergy_ids"] == {task: SYNERGY[task]}
        assert tasks[task]["interference_ids"] == {task: INTERFERENCE[task]}
    assert tasks["t"]["synergy"]["count"] == 2 and tasks["t"]["synergy"]["percent"] == 25.0
    assert tasks["t"]["interference"]["count"] == 3 and tasks["t"]["interference"]["percent"] == 37.5
    assert tasks["u"]["synergy"]["percent"] == 20.0 and tasks["u"]["interference"]["percent"] == 20.0
    accuracy = tasks["t"]["accuracy"]
    assert accuracy["m-composed (composed)"]["count"] == 4 and accuracy["expert union"]["count"] == 5
    assert accuracy["m-image (image)"]["count"] == 3 and accuracy["m-blind (blind)"]["count"] == 2
    subsets = {scope["scope"]: scope for scope in gain["modality_subsets"]}
    assert list(subsets) == ["image+audio", "image+video+audio", "no record"]
    assert [subsets[name]["n"] for name in subsets] == [8, 4, 1]
    assert subsets["image+audio"]["synergy_ids"] == {"t": ["0", "1"], "u": ["0"]}
    assert subsets["image+audio"]["interference_ids"] == {"t": ["2", "3"], "u": ["2"]}
    assert subsets["image+video+audio"]["interference_ids"] == {"t": ["7"]}
    assert subsets["image+video+audio"]["synergy"]["count"] == 0
    overall = gain["overall"]
    assert (overall["n"], overall["synergy"]["count"], overall["interference"]["count"]) == (13, 3, 4)
    assert overall["synergy_blind_right"] == 1 and tasks["u"]["synergy_blind_right"] == 0
    table = capsys.readouterr().out
    assert "| t | 8 | 50.00 [" in table and "| 2 (25.00 [" in table and "| [image+video+audio] | 4 |" in table
    assert "| all items | 13 |" in table


def test_paired_figures_against_the_union_and_each_run(tmp_path):
    _, gain = _gain(tmp_path, _runs(tmp_path))
    t = gain["tasks"][0]
    union = t["versus_union"]
    assert (union["base_only"], union["new_only"]) == (3, 2)  # interference, synergy
    assert union["difference"] == -12.5 and union["p_value"] == mcnemar_exact(3, 2) == 1.0
    assert (union["ci_low"], union["ci_high"]) == paired_bootstrap(8, 3, 2, seed=0)
    image = t["versus"]["m-image (image)"]
    assert (image["base_only"], image["new_only"], image["difference"]) == (2, 3, 12.5)
    assert list(t["versus"]) == ["m-image (image)", "m-audio (audio)", "m-blind (blind)"]
    overall = gain["overall"]["versus_union"]
    assert overall["p_value"] == mcnemar_exact(4, 3) and overall["difference"] == round(-100 / 13, 4)
    share = t["synergy"]
    assert share["ci_low"] <= share["percent"] <= share["ci_high"]
    _, again = _gain(tmp_path / "again", _runs(tmp_path / "again"))
    assert again["overall"] == gain["overall"]
    _, reseeded = _gain(tmp_path / "seeded", _runs(tmp_path / "seeded"), "--seed", "7")
    assert reseeded["seed"] == 7 and reseeded["overall"]["synergy_ids"] == gain["overall"]["synergy_ids"]


def test_missing_records_count_as_wrong_and_are_reported(tmp_path, capsys):
    _, gain = _gain(tmp_path, _runs(tmp_path))
    coverage = {(row["run"], row["task"]): row for row in gain["coverage"]}
    composed = coverage[("m-composed (composed)", "u")]
    assert (composed["recorded"], composed["n"], composed["missing_ids"]) == (3, 5, ["2"])
    image = coverage[("m-image (image)", "u")]
    assert (image["recorded"], image["n"], image["missing_ids"], image["role"]) == (4, 5, [], "expert")
    assert coverage[("m-blind (blind)", "t")]["role"] == "blind"
    assert gain["unrecorded"] == {"u": 1}
    table = capsys.readouterr().out
    assert "| m-composed (composed) | composed | 11 | 13 | u: 2 |" in table
    assert "| m-image (image) | expert | 12 | 13 | u: 1 |" in table
    assert "gold items no run has a record of (wrong for every run): u: 1" in table


def test_without_a_blind_run(tmp_path, capsys):
    code, gain = _gain(tmp_path, _runs(tmp_path), blind=False)
    assert code == 0 and gain["blind"] is None
    assert gain["overall"]["synergy_blind_right"] is None and list(gain["overall"]["versus"]) == [
        "m-image (image)",
        "m-audio (audio)",
    ]
    assert gain["overall"]["synergy"]["count"] == 3
    assert "blind right" not in capsys.readouterr().out


def test_an_expert_without_the_task_has_every_item_wrong(tmp_path):
    dirs = _runs(tmp_path)
    write_run(tmp_path / "point", {"other": [True]}, model="m-point")
    code, gain = _gain(tmp_path, {**dirs, "audio": str(tmp_path / "point")}, blind=False)
    t = gain["tasks"][0]
    assert code == 0 and t["accuracy"]["m-point (point)"]["count"] == 0
    assert {row["task"]: row["recorded"] for row in gain["coverage"] if row["run"] == "m-point (point)"} == {
        "t": 0,
        "u": 0,
    }
    assert t["interference_ids"] == {"t": ["2", "7"]} and t["synergy_ids"] == {"t": ["0", "1", "6"]}


def test_runs_on_other_task_data_or_protocols_are_refused(tmp_path, capsys):
    code, gain = _gain(tmp_path, _runs(tmp_path, data_hash="z" * 64))
    error = capsys.readouterr().err
    assert code == 2 and gain is None and error.count("\n") == 1
    assert error.startswith("error: run m-audio (audio): task t: the task data differ from the composed run's; ")
    assert "run m-audio (audio): task u: the task data differ" in error and "m-image" not in error
    dirs = _runs(tmp_path / "loglik", protocol="loglik")
    write_run(tmp_path / "paper", {"t": _column(T, 0)}, model="m-paper")
    assert gain_main([str(tmp_path / "paper"), "--experts", dirs["image"]]) == 2
    assert "error: run m-image (image): task t: protocol loglik, not paper" in capsys.readouterr().err


def test_cli_usage_and_input_errors(tmp_path, capsys):
    dirs = _runs(tmp_path)
    assert mcub_main(["gain", dirs["composed"], "--experts", dirs["image"]]) == 0
    assert "| all items | 13 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        gain_main([dirs["composed"]])
    assert stop.value.code == 2 and "--experts" in capsys.readouterr().err
    assert gain_main([dirs["composed"], "--experts", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'}: not a run directory (no summary.json)\n"
    assert gain_main([dirs["composed"], "--experts", dirs["image"], dirs["image"]]) == 2
    assert capsys.readouterr().err.startswith(f"error: {dirs['image']}: a run takes one role only")
