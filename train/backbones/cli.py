"""`magma backbones`: pretrain the embedded default's tiny backbones here (see the package docstring).

  magma backbones pretrain-lm     --out backbones/tiny-lm       [--steps N] [--seed S] [--no-resume]
  magma backbones pretrain-vision --out backbones/tiny-convnext [--steps N] [--seed S] [--no-resume]
  magma backbones probe --lm backbones/tiny-lm                   (re-run the LM probes on a folder)
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from magma.cli import run_cli, subcommand
from magma.config_io import ConfigError


def _record_command(out: Path, args: argparse.Namespace) -> None:
    """`<out>/command.txt`: the command line that reproduces the folder."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "command.txt").write_text("magma backbones " + shlex.join(args._argv) + "\n")


def run_pretrain_lm(args: argparse.Namespace) -> int:
    from train.backbones.lm import pretrain_lm

    out = Path(args.out)
    _record_command(out, args)
    probe = pretrain_lm(out, steps=args.steps, resume=args.resume, seed=args.seed, batch=args.batch,
                        length=args.length, lr=args.lr, stop_after=args.stop_after,
                        recall_frac=args.recall_frac, init_from=args.init_from, vocabulary=args.tokenizer)
    print(json.dumps(probe, indent=1))
    return 0


def run_pretrain_vision(args: argparse.Namespace) -> int:
    from train.backbones.vision import pretrain_vision

    out = Path(args.out)
    _record_command(out, args)
    probe = pretrain_vision(out, steps=args.steps, resume=args.resume, seed=args.seed, stop_after=args.stop_after)
    print(json.dumps(probe, indent=1))
    return 0


def run_probe(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.backbones.lm import probe_lm

    folder = Path(args.lm)
    if not (folder / "config.json").exists():
        raise ConfigError("not a language-model folder (no config.json)", file=folder,
                          fix="give the --out folder of `magma backbones pretrain-lm`")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype="float32").eval()
    import torch

    with torch.no_grad():
        print(json.dumps(probe_lm(model, tok, len(tok)), indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="magma backbones", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lm = subcommand(sub, "pretrain-lm", run_pretrain_lm, "pretrain the tiny language model on generated text")
    lm.add_argument("--out", required=True, help="output folder (an HF LlamaForCausalLM folder + tokenizer)")
    lm.add_argument("--steps", type=int, default=8000)
    lm.add_argument("--batch", type=int, default=24)
    lm.add_argument("--length", type=int, default=256, help="tokens per row")
    lm.add_argument("--lr", type=float, default=1e-3)
    lm.add_argument("--recall-frac", type=float, default=0.0,
                    help="share of the non-copy rows that are gapped-recall rows (the legend lookup in random tokens)")
    lm.add_argument("--tokenizer", choices=("builtin", "words"), default="builtin",
                    help="builtin: the 1,024-token BPE (spells most labels a letter at a time); "
                         "words: a BPE that also holds every label word of the corpus as one token")
    lm.add_argument("--init-from", type=Path, default=None, metavar="DIR",
                    help="start from the weights of an earlier pretrain-lm folder (a second stage)")
    vis = subcommand(sub, "pretrain-vision", run_pretrain_vision,
                     "pretrain the tiny ConvNeXt tower on generated screens and scenes")
    vis.add_argument("--out", required=True, help="output folder (an HF ConvNextModel folder)")
    vis.add_argument("--steps", type=int, default=3000)
    for q in (lm, vis):
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                       help="end this run at STEP of the --steps schedule and write the weights of that step "
                            "(the same run, cut there: a later call with a later STEP, or without it, continues)")
        q.add_argument("--no-resume", dest="resume", action="store_false",
                       help="start over even if <out>/.work holds a checkpoint")
    pr = subcommand(sub, "probe", run_probe, "run the language-model probes on a folder")
    pr.add_argument("--lm", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.set_defaults(_argv=argv)
    return run_cli(parser, argv, errors=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
