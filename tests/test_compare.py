import json
import math

import pytest
from run_factory import write_run

from mcub.compare import main as compare_main
from mcub.stats import holm, mcnemar_exact

N = 400
BASE = [index % 5 < 3 for index in range(N)]  # 240 of 400 correct


def _drop(flags, count):
    """The first `count` correct items turned wrong."""
    flipped, left = list(flags), count
    for index, flag in enumerate(flipped):
        if flag and left:
            flipped[index], left = False, left - 1
    return flipped


def _compare(tmp_path, new, *extra, base=BASE):
    write_run(tmp_path / "base", {"t": base})
    write_run(tmp_path / "new", {"t": new})
    out = tmp_path / "cmp.json"
    code = compare_main([str(tmp_path / "base"), str(tmp_path / "new"), "--json", str(out), *extra])
    return code, json.loads(out.read_text()) if out.exists() else None


def test_identical_runs(tmp_path):
    code, result = _compare(tmp_path, BASE)
    paired = result["tasks"][0]["paired"]
    assert code == 0 and paired["difference"] == 0 and paired["p_value"] == 1.0
    assert (paired["ci_low"], paired["ci_high"]) == (0.0, 0.0)


def test_one_flip_is_noise(tmp_path):
    code, result = _compare(tmp_path, _drop(BASE, 1))
    paired = result["tasks"][0]["paired"]
    assert code == 0 and paired["difference"] == -0.25 and (paired["base_only"], paired["new_only"]) == (1, 0)
    assert paired["p_value"] == 1.0  # 2 * P(X <= 0), X ~ Bin(1, 1/2)


def test_a_ten_point_drop_on_400_items_fails_the_gate(tmp_path, capsys):
    code, result = _compare(tmp_path, _drop(BASE, 40))
    paired = result["tasks"][0]["paired"]
    assert code == 1 and result["tasks"][0]["regression"]
    assert paired["difference"] == -10.0
    assert paired["p_value"] == pytest.approx(2 * 0.5**40, rel=1e-9)
    # the paired bootstrap interval is close to the normal one: d in {-1, 0}, p = 0.1
    half = 1.96 * math.sqrt(0.1 * 0.9 / N) * 100
    assert paired["ci_low"] == pytest.approx(-10 - half, abs=0.6) and paired["ci_high"] == pytest.approx(
        -10 + half, abs=0.6
    )
    assert "REGRESSION" in capsys.readouterr().out
    code, _ = _compare(tmp_path / "lenient", _drop(BASE, 40), "--max-drop", "12")
    assert code == 0


def test_exact_mcnemar_and_holm_against_direct_computation():
    assert mcnemar_exact(3, 9) == pytest.approx(2 * sum(math.comb(12, k) for k in range(4)) / 2**12)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_runs_with_other_protocols_or_data_are_refused(tmp_path, capsys):
    write_run(tmp_path / "a", {"t": BASE})
    write_run(tmp_path / "b", {"t": BASE}, protocol="loglik")
    write_run(tmp_path / "c", {"t": BASE}, data_hash="z" * 64)
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "t: protocol paper vs loglik" in capsys.readouterr().err
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "t: the task data differ" in capsys.readouterr().err


def test_different_task_sets_and_groups(tmp_path, capsys):
    write_run(tmp_path / "a", {"t": BASE, "u": BASE, "only-a": BASE}, groups={"g": ["t", "u"]})
    write_run(tmp_path / "b", {"t": BASE, "u": _drop(BASE, 40), "only-b": BASE}, groups={"g": ["t", "u"]})
    out = tmp_path / "c.json"
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out)]) == 1
    result = json.loads(out.read_text())
    assert [task["task"] for task in result["tasks"]] == ["t", "u"]
    assert result["groups"]["g"]["difference"] == -5.0 and result["groups"]["g"]["n"] == 800
    assert result["only_in_base"] == ["only-a"] and result["only_in_new"] == ["only-b"]
    assert "not compared (only in the base run): only-a" in capsys.readouterr().out


def test_bad_run_directories(tmp_path, capsys):
    write_run(tmp_path / "a", {"t": BASE})
    assert compare_main([str(tmp_path / "a"), str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    duplicated = write_run(tmp_path / "d", {"t": BASE})
    path = duplicated / "records" / "t.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    assert compare_main([str(tmp_path / "a"), str(duplicated)]) == 2
    assert "id '0' is recorded twice" in capsys.readouterr().err
    newer = write_run(tmp_path / "n", {"t": BASE})
    summary = json.loads((newer / "summary.json").read_text())
    (newer / "summary.json").write_text(json.dumps(summary | {"schema_version": 99}))
    assert compare_main([str(tmp_path / "a"), str(newer)]) == 2
    assert "schema version 99" in capsys.readouterr().err


def test_the_gate_fails_a_new_run_that_lacks_records_unless_allowed(tmp_path, capsys):
    from mcub.results import read_records, write_records

    write_run(tmp_path / "base", {"t": [True] * 5, "u": [True] * 3})
    write_run(tmp_path / "new", {"t": [True] * 5})
    new_records = tmp_path / "new" / "records" / "t.jsonl"
    kept, _ = read_records(new_records)
    write_records(new_records, [kept["0"]])  # 1 of 5 records left: "no significant change" on the one pair
    assert compare_main([str(tmp_path / "base"), str(tmp_path / "new")]) == 1
    out = capsys.readouterr().out
    assert "COVERAGE: u: in the base run only" in out
    assert "COVERAGE: t: 4 of the base run's 5 sample(s) have no record in the new run (allowed: 0%)" in out
    write_run(tmp_path / "base-t", {"t": [True] * 5})
    assert compare_main([str(tmp_path / "base-t"), str(tmp_path / "new"), "--max-missing", "0.8"]) == 0
    assert compare_main([str(tmp_path / "base-t"), str(tmp_path / "new"), "--max-missing", "0.7"]) == 1


def test_the_binomial_tail_is_exact_to_float_rounding_and_linear_in_time():
    import time
    from fractions import Fraction

    from mcub.stats import binomial_lower_tail

    for n in [*range(1, 90), 1001]:
        for k in range(0, n + 1, max(1, n // 25)):
            exact = float(Fraction(sum(math.comb(n, j) for j in range(k + 1)), 2**n))
            assert binomial_lower_tail(k, n) == pytest.approx(exact, rel=1e-10, abs=1e-300)
    start = time.perf_counter()
    assert mcnemar_exact(99_950, 100_050) == pytest.approx(0.8248038, rel=1e-6)
    assert time.perf_counter() - start < 0.5  # 200k discordant pairs (the sum of binomials took minutes)
