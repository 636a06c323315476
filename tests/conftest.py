import os

import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# One thread per test process, as the chapters run: their small batches gain nothing from more threads, results
# stay bit-reproducible, and two xdist workers on two cores do not oversubscribe the machine.
torch.set_num_threads(1)
