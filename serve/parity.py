"""hf vs vLLM greedy-token parity on a fixed set of image+text prompts.

    python -m serve.parity --checkpoint DIR [--out result.json]

Prints/writes per-prompt token lists from both engines and whether they are identical
(free text and constrained action decoding). Run as a script: vLLM spawns processes.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def fixed_requests(processor, n: int = 6):
    from PIL import Image

    from magma.prompts import robot_action_prompt, ui_action_prompt, verbal_prompt
    from serve.engines.base import GenerationRequest

    rs = np.random.RandomState(7)
    texts = [ui_action_prompt("click the OK button"), verbal_prompt("Describe the image."),
             robot_action_prompt("pick up the red cube", [0.1, -0.3, 0.25]),
             ui_action_prompt("type hello into the search box", history=["click Mark 2"]),
             verbal_prompt("What is in the top left corner?"), robot_action_prompt("open the drawer")]
    reqs = []
    for i in range(n):
        img = Image.fromarray(rs.randint(0, 255, (100 + 23 * i, 140 + 31 * i, 3), np.uint8))
        prompt = processor.render_prompt(texts[i % len(texts)], 0)
        reqs.append(GenerationRequest(prompt, [img], 16, constrain_to_actions=False))
        reqs.append(GenerationRequest(prompt, [img], 8, constrain_to_actions=True))
    return reqs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.parity", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    from serve.engines.hf import HFEngine
    from serve.engines.vllm_engine import VLLMEngine

    hf = HFEngine.from_checkpoint(args.checkpoint)
    reqs = fixed_requests(hf.processor)
    hf_out = [hf.generate_sync([r])[0].token_ids for r in reqs]
    hf.close()
    vl = VLLMEngine.from_checkpoint(args.checkpoint)
    vl_out = [o.token_ids for o in vl.generate_sync(reqs)]
    vl.close()
    result = {"identical": hf_out == vl_out, "n": len(reqs), "hf": hf_out, "vllm": vl_out}
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print("PARITY", "identical" if result["identical"] else "DIFFERENT", f"({len(reqs)} requests)")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
