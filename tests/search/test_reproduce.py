"""bench/reproduce.py --plan-only: both networks' facts and predictions, JSON shape."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plan_only_json(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce.py"), "--plan-only", "--json",
                          "--plot", str(tmp_path / "p.png")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    b, h = d["baseline"], d["hemet"]
    assert (b["depth"], b["log_n"]) == (19, 16) and (h["depth"], h["log_n"]) == (11, 15)
    assert h["predicted_s_2t"] < b["predicted_s_2t"]
    assert d["latency_reduction"] == round(1 - h["predicted_s_2t"] / b["predicted_s_2t"], 4)
    assert d["accuracy_gain"] is None  # plan only: no accuracy
    assert sum(s["seconds"] for s in b["predicted_steps_2t"]) == __import__("pytest").approx(
        b["predicted_s_2t"], abs=0.05)
