"""The file to ship: the fastest model within the accuracy budget, ties broken by smaller file."""
from __future__ import annotations

from edgedet.runtime.report.recommend import headline, recommend
from edgedet.runtime.report.schema import check_schema


def _m(name, e2e, size, d_ap=0.0, role="candidate", status="pass"):
    return {"name": name, "path": f"/run/{name}", "role": role, "status": status, "error": None if status != "fail" else "crashed",
            "file_size_bytes": size, "delta": {"AP": d_ap}, "latency": {"end_to_end": {"p50": e2e}} if e2e else None}


TH = {"max_ap_drop": 0.003, "latency_metric": "end_to_end.p50"}


def test_fastest_within_budget_wins_and_the_others_say_why():
    models = [_m("float", 80.0, 13_000_000, role="baseline"),
              _m("a.tflite", 20.0, 12_000_000),
              _m("b.tflite", 12.0, 4_000_000, d_ap=-0.010),  # fastest, but over the accuracy budget
              _m("c.onnx", 15.0, 4_500_000, d_ap=-0.002),
              _m("d.xml", None, 4_000_000, status="fail")]
    rec = recommend(models, TH)
    assert rec["path"] == "/run/c.onnx" and rec["latency_ms"] == 15.0
    assert "fastest within the accuracy budget" in rec["reason"]
    lost = {o["name"]: o["lost"] for o in rec["others"]}
    assert lost == {"a.tflite": "slower", "b.tflite": "over budget", "d.xml": "failed"}  # the baseline is no candidate
    assert "AP dropped 1.00 points (allowed 0.30)" in next(o["detail"] for o in rec["others"] if o["name"] == "b.tflite")


def test_the_reason_says_whether_ap_was_checked():
    models = [_m("float", 80.0, 13_000_000, role="baseline"), _m("int8.tflite", 10.0, 4_000_000, d_ap=-0.004)]
    assert recommend(models, TH) is None  # over the 0.30-point budget, and the baseline is no candidate
    no_budget = recommend(models, {"max_ap_drop": None, "latency_metric": "end_to_end.p50"})
    assert no_budget["name"] == "int8.tflite" and "ΔAP -0.40 points, no AP budget set" in no_budget["reason"]
    no_baseline = [dict(_m("int8.tflite", 10.0, 4_000_000), delta=None)]
    assert "AP not checked against a float baseline" in recommend(no_baseline, TH)["reason"]


def test_ties_go_to_the_smaller_file():
    # within 5 % of the fastest counts as equally fast: the smaller file wins
    models = [_m("fp32.tflite", 10.0, 12_000_000), _m("int8.tflite", 10.3, 4_000_000), _m("ov-int8", 10.4, 4_700_000)]
    rec = recommend(models, TH)
    assert rec["name"] == "int8.tflite" and "smallest of 3 files" in rec["reason"]
    assert {o["name"]: o["lost"] for o in rec["others"]} == {"fp32.tflite": "larger", "ov-int8": "larger"}
    # an exact tie on speed and size: the order of the entries does not matter
    same = [_m("x", 10.0, 4_000_000), _m("y", 10.0, 3_000_000)]
    assert recommend(same, TH)["name"] == recommend(same[::-1], TH)["name"] == "y"
    # outside the tie margin speed wins over size
    assert recommend([_m("big", 10.0, 12_000_000), _m("small", 11.0, 4_000_000)], TH)["name"] == "big"


def test_nothing_to_recommend_and_the_report_carries_it():
    assert recommend([_m("broken", None, 1, status="fail"), _m("float", 50.0, 1, role="baseline")], TH) is None
    from tests.runtime.report.test_report import make_report  # noqa: PLC0415

    from edgedet.runtime.report.md import render_markdown

    report = make_report()
    assert report["recommendation"]["name"] == "model-fp16.tflite"  # the faster int8 file is over budget
    assert not check_schema(report)
    md = render_markdown(report)
    assert "## File to ship" in md and "`/x/model-fp16.tflite`" in md


def test_nothing_is_shipped_unchecked_or_for_another_device():
    # the baseline was given but failed: AP could not be checked, so no file is named
    failed_base = [_m("float.tflite", None, 13_000_000, role="baseline", status="fail"),
                   dict(_m("int8.tflite", 10.0, 4_000_000), delta=None)]
    assert recommend(failed_base, {"max_ap_drop": None, "latency_metric": "end_to_end.p50"}) is None
    # a Coral runs LiteRT files through its delegate: an OpenVINO or ONNX file is no candidate there
    models = [_m("float", 80.0, 13_000_000, role="baseline"),
              dict(_m("m_edgetpu.tflite", 30.0, 4_000_000), path="/run/m_edgetpu.tflite"),
              dict(_m("m_openvino", 5.0, 4_000_000), path="/run/m.xml"),
              dict(_m("m.onnx", 6.0, 4_000_000), path="/run/m.onnx")]
    rec = recommend(models, {"device": "coral-usb", "max_ap_drop": 0.03, "latency_metric": "end_to_end.p50"})
    assert rec["path"] == "/run/m_edgetpu.tflite"
    lost = {o["name"]: (o["lost"], o["detail"]) for o in rec["others"]}
    assert lost["m_openvino"][0] == "not for this device" and "openvino file" in lost["m_openvino"][1]
    assert lost["m.onnx"][0] == "not for this device"
    # a CPU profile runs every backend's files on equal terms
    assert recommend(models, {"device": "x86-cpu", "max_ap_drop": 0.03, "latency_metric": "end_to_end.p50"})["path"] == "/run/m.xml"
    # ... among the runtimes its targets use: a Pi has LiteRT, so the OpenVINO folder measured on
    # this host's CPU is not what it would run
    rec = recommend(models, {"device": "raspberry-pi-4", "max_ap_drop": 0.03, "latency_metric": "end_to_end.p50"})
    assert rec["path"] == "/run/m_edgetpu.tflite"
    lost = {o["name"]: (o["lost"], o["detail"]) for o in rec["others"]}
    assert lost["m_openvino"][0] == "not for this device" and "run on litert" in lost["m_openvino"][1]


def test_the_reason_says_when_even_the_fastest_misses_the_latency_budget():
    models = [_m("float", 80.0, 13_000_000, role="baseline"), _m("int8.tflite", 30.0, 4_000_000)]
    rec = recommend(models, dict(TH, latency_budget_ms=20.0))
    assert rec["name"] == "int8.tflite" and "over the 20 ms latency budget" in rec["reason"]
    assert rec["meets_latency_budget"] is False
    assert headline(rec, md=False).startswith("None meets the latency budget; the nearest is /run/int8.tflite")
    ok = recommend(models, dict(TH, latency_budget_ms=40.0))
    assert "latency budget" not in ok["reason"] and ok["meets_latency_budget"] is True
    assert headline(ok, md=False).startswith("/run/int8.tflite (int8.tflite): fastest within")
    assert recommend(models, TH)["meets_latency_budget"] is None  # no budget set


def test_an_accelerator_ships_only_its_own_files_run_on_it():
    """Under coral-usb: a plain int8 file is not an Edge TPU file, and a file that ran on the CPU
    fallback has the CPU's latency, not the Coral's."""
    models = [_m("float", 80.0, 13_000_000, role="baseline"),
              dict(_m("m_tflite-int8.tflite", 3.0, 4_000_000), path="/run/m_tflite-int8.tflite", target="tflite-int8"),
              dict(_m("m_edgetpu.tflite", 5.0, 4_000_000), path="/run/m_edgetpu.tflite", target="edgetpu",
                   provenance={"device": "cpu"}),
              dict(_m("other_edgetpu.tflite", 9.0, 4_000_000), path="/run/other_edgetpu.tflite", target="edgetpu",
                   provenance={"device": "edgetpu:usb:0"})]
    rec = recommend(models, {"device": "coral-usb", "max_ap_drop": 0.03, "latency_metric": "end_to_end.p50"})
    assert rec["path"] == "/run/other_edgetpu.tflite"
    lost = {o["name"]: o["detail"] for o in rec["others"] if o["lost"] == "not for this device"}
    assert "a tflite-int8 file; coral-usb runs edgetpu files" in lost["m_tflite-int8.tflite"]
    assert "ran on the CPU fallback" in lost["m_edgetpu.tflite"]


def test_a_user_profile_given_as_a_file_is_found_again(tmp_path):
    """validate records the profile's file, so the rule also holds for a profile outside the search path."""
    import shutil

    from edgedet.devices import PROFILE_DIR

    mine = tmp_path / "my-coral.toml"
    shutil.copyfile(PROFILE_DIR / "coral-usb.toml", mine)
    mine.write_text(mine.read_text().replace('name = "coral-usb"', 'name = "my-coral"'))
    models = [_m("float", 80.0, 13_000_000, role="baseline"),
              dict(_m("m_edgetpu.tflite", 30.0, 4_000_000), path="/run/m_edgetpu.tflite"),
              dict(_m("m_openvino", 5.0, 4_000_000), path="/run/m.xml")]
    th = {"device": "my-coral", "device_file": str(mine), "max_ap_drop": 0.03, "latency_metric": "end_to_end.p50"}
    assert recommend(models, th)["path"] == "/run/m_edgetpu.tflite"


def test_the_interleaved_re_run_decides_where_there_is_one():
    """Per-image latencies say b is quicker (it ran while the machine was idle); the interleaved
    re-run of both says a is: the ranking follows the re-run, and says so."""
    models = [_m("float", 80.0, 13_000_000, role="baseline"),
              dict(_m("a.tflite", 9.0, 4_000_000), rank_ms=5.0), dict(_m("b.tflite", 6.0, 4_000_000), rank_ms=8.0)]
    rec = recommend(models, dict(TH, latency_budget_ms=7.0))
    assert rec["name"] == "a.tflite" and "end_to_end.p50 interleaved 5.00 ms" in rec["reason"]
    assert rec["meets_latency_budget"] is False  # the budget is judged on the report's own 9.0 ms, as its ❎ is
    assert rec["others"][0]["detail"] == "end_to_end.p50 interleaved 8.00 ms vs 5.00 ms (+60 %)"
