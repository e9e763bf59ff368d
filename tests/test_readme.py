"""The README's ckks example runs as written and prints matching values."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_ckks_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (example,) = [b for b in blocks if "import ckks" in b and "..." not in b]
    env = {}
    exec(compile(example, "README.md", "exec"), env)
    got, expect = capsys.readouterr().out.strip().split("] [")
    got = np.array(got.strip("[]").split(), dtype=float)
    expect = np.array(expect.strip("[]").split(), dtype=float)
    assert np.allclose(got, expect, atol=1e-4)
    assert env["z2"].level == env["z"].level and np.array_equal(env["z2"].data, env["z"].data)
