"""Notebook times have one source: notebooks/timings.yaml, generated everywhere else."""

import pytest
import yaml

from benchmarks import notebook_timings as nt


def test_every_notebook_has_measured_times():
    data = nt.load()
    names = sorted(p.stem for p in nt.NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    assert sorted(data["notebooks"]) == names, "timings.yaml must list every notebook"
    for name, nb in data["notebooks"].items():
        for mode in ("full", "fast"):
            for field in ("run", "short") + (("train",) if nb.get("features") else ()):
                value = str(nb[mode].get(field, ""))
                assert value and "TBD" not in value, f"{name}.{mode}.{field} is not measured"
    for mode in ("full", "fast"):
        assert isinstance(data["first_run"][mode]["minutes"], (int, float))


def test_headers_and_readmes_agree_with_the_yaml():
    changed = nt.render_all(write=False)
    assert not changed, (
        f"out of date with notebooks/timings.yaml: {[str(p) for p in changed]}; "
        "run `python -m benchmarks.notebook_timings`"
    )


def test_generated_header_mentions_first_run_and_training(tmp_path):
    data = nt.load()
    name = next(n for n, nb in data["notebooks"].items() if nb.get("features") is True)
    text = "\n".join(nt.header_lines(name, data))
    assert "First run on a new machine" in text and "training it yourself" in text
    assert str(data["first_run"]["full"]["minutes"]) in text


def test_a_time_changed_in_the_yaml_only_is_detected(tmp_path, monkeypatch):
    data = yaml.safe_load(nt.TIMINGS.read_text())
    name = sorted(data["notebooks"])[0]
    data["notebooks"][name]["full"]["run"] = "99 min"
    fake = tmp_path / "timings.yaml"
    fake.write_text(yaml.safe_dump(data, allow_unicode=True))
    monkeypatch.setattr(nt, "TIMINGS", fake)
    assert nt.NOTEBOOKS / f"{name}.py" in nt.render_all(write=False)


def test_missing_fields_are_named(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("measured_on: x\n")
    with pytest.raises(ValueError, match="missing top-level field"):
        nt.load(bad)


def test_first_run_notice_reads_the_yaml_and_agrees_with_the_headers():
    """The FIRST RUN notice estimates from timings.yaml's measured rates, not its own."""
    from hihpq_lib.app.prepare import first_run_notice, first_run_rates

    full = nt.load()["first_run"]["full"]
    rates = first_run_rates(nt.TIMINGS)
    assert rates == full["rates"]
    for seconds in (rates["images_s"], rates["views_s"]):
        assert f"{seconds} s" in full["what"], f"first_run.full.what must quote {seconds} s"
    notice = first_run_notice(rates["images"], rates["views"], rates["resolution"], rates=rates)
    assert f"about {full['minutes']} min" in notice.splitlines()[0], notice
    doubled = dict(rates, images_s=2 * rates["images_s"], views_s=2 * rates["views_s"])
    slower = first_run_notice(rates["images"], rates["views"], rates["resolution"], rates=doubled)
    assert slower != notice, "the estimate must follow the measured rates"
