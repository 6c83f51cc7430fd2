"""`kaito demo` end to end, as a user runs it: the installed `kaito` command in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from kaito_core.local import processes


def test_kaito_demo_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = dict(os.environ, KAITO_HOME=str(home), HF_HUB_OFFLINE="1", NO_PROXY="127.0.0.1,localhost")
    kaito = Path(sys.executable).with_name("kaito")
    proc = subprocess.run([str(kaito), "demo", "--workdir", str(tmp_path / "demo")], env=env,
                          capture_output=True, text=True, timeout=240)
    out = proc.stdout
    assert proc.returncode == 0, f"kaito demo failed ({proc.returncode}):\n{out[-4000:]}\n{proc.stderr[-4000:]}"
    # Clearly labelled random weights, the steps' commands, the sizing table and the endpoint.
    assert "RANDOM weights" in out and "meaningless" in out
    assert out.count("$ kaito up ") == 3
    assert "MEMORY NEEDED" in out and "fits" in out
    assert re.search(r"is serving phi-3-mini-4k-instruct at http://127\.0\.0\.1:\d+", out)
    # A real OCI registry when docker-registry is installed, else a directory.
    if shutil.which("docker-registry"):
        assert re.search(r"pushed adapter to 127\.0\.0\.1:\d+/kaito-demo/phi-3-faq:0\.0\.1", out)
        assert "pulling 127.0.0.1:" in out
    else:
        assert "adapter: " + str(tmp_path / "demo" / "adapters" / "phi-3-faq") in out
    # Both answers are shown, from the base model and from the adapter, and they differ.
    base = re.search(r"^A from phi-3-mini-4k-instruct \(base model, random weights\): (.*)$", out, re.M)
    tuned = re.search(r"^A from phi-3-faq \(base \+ the LoRA adapter .*?\): (.*)$", out, re.M)
    assert base and tuned, out[-3000:]
    assert base.group(1) != tuned.group(1), "the adapter did not change the answer"
    # kaito down left nothing: the pids the demo stopped are gone, and so is every state dir.
    checked = re.search(r"no process is left running \(checked pids ([\d, ]+)\)", out)
    assert checked, out[-2000:]
    pids = [int(p) for p in checked.group(1).split(",")]
    assert len(pids) >= 4 and not [p for p in pids if processes.alive(p)]
    assert not list((home / "local").glob("*/launch.json"))
    # The registry the demo started is stopped too.
    for line in out.splitlines():
        m = re.search(r"local OCI registry at \S+ \(pid (\d+)\)", line)
        if m:
            assert not processes.alive(int(m.group(1)))
