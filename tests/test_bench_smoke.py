"""CI runs the bench's CPU smoke mode: the tiny model through every section (stock path, fast
path, streaming, concurrency, fidelity, record, history). No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from ishowttsd.bench import cli, record


def test_smoke_mode_writes_a_complete_record(tmp_path: Path) -> None:
    res = tmp_path / "results"
    out = tmp_path / "raw.json"
    argv = ["--smoke", "--results", str(res), "--reps", "1", "--warmups", "0", "--out", str(out)]
    assert cli.main(argv) == 0
    rec = json.loads((res / "latest-smoke.json").read_text())
    for key in record.REQUIRED_KEYS:
        assert key in rec, key
    assert rec["mode"] == "smoke" and rec["nfe"] == 8
    assert not rec.get("errors"), rec.get("errors")
    # fast path vs the fp32 reference sampler, and the stock CFM.sample vs the same: equal in fp32
    assert rec["rel_error"] < 1e-4
    assert rec["fidelity"]["stock_fp32_CFM.sample"] < 1e-4
    assert rec["batch_equality"]["max_rel_error"] < 1e-4
    for name in ("line_ms", "ttfa_ms", "rtf"):
        assert rec["fast"]["fp32"][name] > 0
    assert rec["stock_rtf"] > 0 and rec["speedup"] > 0
    conc = rec["fast"]["fp32"]["concurrency"]
    assert conc["4"]["lines"] == 4 and conc["4"]["grouped_x_realtime"] > 0
    assert rec["flops"]["per_job"]["line"]["step_flops"] > 0
    assert len(record.read_history(res / "history.jsonl")) == 1
    assert json.loads(out.read_text())["mode"] == "smoke"
    # the same record ingested elsewhere (as the GPU box's records are) appends to history
    assert cli.main(["--ingest", str(out), "--results", str(res)]) == 0
    assert len(record.read_history(res / "history.jsonl")) == 2
