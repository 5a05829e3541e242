"""Saving a scripted module the way the examples do: atomically (a crash mid-save leaves no
half-written model behind), with the directory created, and a clear message instead of a
traceback when the path cannot be written. Copy it along with an example."""
import os
import sys

import torch


def save_scripted(module, out, tag):
    """torch.jit.script(module) saved to `out`; returns the scripted module, or None after
    printing why it could not be written (the caller exits 1)."""
    scripted = torch.jit.script(module)
    out_dir = os.path.dirname(out)
    tmp = out + ".tmp"
    try:
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
        scripted.save(tmp)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as e:  # torch.jit.save raises RuntimeError for unwritable paths
        print("%s: cannot write %s: %s" % (tag, out, e), file=sys.stderr)
        return None
    return scripted
