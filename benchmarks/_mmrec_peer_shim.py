"""Run MMRec's ``run_peer.py`` with T torch threads, also timing each ``pre_epoch_processing`` (a benchmark helper).

Run with MMRec's python, from MMRec's ``src/`` folder (``bench_mmrec_parity.py`` does):

    ../../venv/bin/python /work/main/benchmarks/_mmrec_peer_shim.py THREADS [run_peer.py arguments ...]

``run_peer.py`` times ``Trainer._train_epoch`` only; MMRec calls the model's ``pre_epoch_processing`` (edge
dropout, DualGNN's user sampling, ...) just before it, and clear-tune's epoch time includes the matching
``start_epoch``. After run_peer's ``PEER {...}`` line this prints ``SHIM {...}``: the torch threads it ran
with and the seconds of every ``pre_epoch_processing`` call.

One CPU fix, no change to any model's math: MMRec's DualGNN registers ``result_embed`` as a parameter on CPU
(``nn.Parameter(...).to('cpu')`` returns the Parameter itself, while on CUDA ``.to()`` returns a plain
tensor), and its first forward then fails assigning a tensor to it; the shim turns it back into a plain
tensor after ``__init__``, as on CUDA (the first forward overwrites its value either way).
"""

import json
import os
import runpy
import sys
import time

threads = int(sys.argv[1])
sys.argv = ["run_peer.py", *sys.argv[2:]]
sys.path.insert(0, os.getcwd())

import torch  # noqa: E402

torch.set_num_threads(threads)

import importlib  # noqa: E402

# MMRec's tree has utils/, MENTOR's (an MMRec fork, benchmarks/setup_mentor_peer.sh) renamed it utils_package/
quick_start = importlib.import_module("utils.quick_start" if os.path.isdir("utils") else "utils_package.quick_start")

pre_epoch_s = []
_get_model = quick_start.get_model


def get_model(name):
    cls = _get_model(name)

    def build(*args, **kwargs):
        model = cls(*args, **kwargs)
        for name in [n for n in model._parameters if n.startswith("result_embed")]:  # see the module docstring
            object.__setattr__(model, name, model._parameters.pop(name).detach())
        inner = model.pre_epoch_processing

        def timed_pre_epoch():
            start = time.perf_counter()
            out = inner()
            pre_epoch_s.append(time.perf_counter() - start)
            return out

        model.pre_epoch_processing = timed_pre_epoch
        return model

    return build


quick_start.get_model = get_model  # quick_start looks the name up at call time
runpy.run_path("run_peer.py", run_name="__main__")
print("SHIM " + json.dumps({"threads": torch.get_num_threads(), "sec_pre_epoch": pre_epoch_s}), flush=True)
