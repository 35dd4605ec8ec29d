"""`edgedet info FILE|RUN`: what an exported file or a run folder says about itself."""
from __future__ import annotations

import json


def test_info_reads_a_model_file_and_a_run_folder(rt_models, tmp_path, capsys):
    from edgedet.cli import main

    path = rt_models.tflite("fp32")
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert f"file:           {path}" in out and "target:         tflite-fp32" in out and "outputs:        raw" in out
    assert main(["info", path, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["target"] == "tflite-fp32" and facts["quantization"]["method"] == "none" and len(facts["classes"]) >= 1
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "qat", "variant": "lite0", "image_size": 320,
                                              "class_names": ["a", "b"], "best": {"metrics": {"AP": 0.5, "AP50": 0.75}}}))
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "kind:           qat" in out and "classes:        a, b" in out and "best val:       AP 50.00, AP50 75.00" in out
    junk = tmp_path / "x.tflite"
    junk.write_text("not a model")
    assert main(["info", str(junk)]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
