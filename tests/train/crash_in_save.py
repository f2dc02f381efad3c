"""Runs `python -m train ...` but SIGKILLs itself half-way through writing checkpoint step-N
(after the optimizer state, before the HF weights): the crash-during-save scenario."""
import os
import signal
import sys

import train.checkpointing as ck

CRASH_AT = f".tmp-step-{os.environ['CRASH_AT_STEP']}"
_export = ck.export_hf_folder


def export_then_die(engine, processor, folder, *args, **kwargs):
    if folder.name == CRASH_AT:
        (folder / "model.safetensors").write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return _export(engine, processor, folder, *args, **kwargs)


ck.export_hf_folder = export_then_die
from train.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
