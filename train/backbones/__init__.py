"""Tiny backbones pretrained here: the embedded default's language model and ConvNeXt tower.

Real Magma starts from Llama-3-8B and CLIP ConvNeXt-XXLarge; the embedded default starts the same
way, from a tiny LM and a tiny tower trained by these commands on data the project generates
offline (nothing is downloaded):

    magma backbones pretrain-lm     --out backbones/tiny-lm      [--steps N] [--resume]
    magma backbones pretrain-vision --out backbones/tiny-convnext [--steps N] [--resume]
    magma backbones probe           --lm backbones/tiny-lm
    magma backbones pretrain-lm     --out DIR --init-from backbones/tiny-lm [--recall-frac F]  (a second stage)
    magma backbones pretrain-lm     --out DIR --tokenizer words   (label words as single tokens)

Both write an ordinary Hugging Face folder (`LlamaForCausalLM` + tokenizer; `ConvNextModel` +
preprocessor config) that `text.pretrained` / `vision.pretrained` load like any other backbone,
plus `training_log.jsonl` (loss and probe results) and `command.txt` (what reproduces it).
Runs are seeded end to end (every batch is a function of (seed, step)), checkpoint every few
hundred steps into `<out>/.work/`, and resume exactly from there.
"""
