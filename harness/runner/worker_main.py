"""Entry point of a worker process: ``python -m harness.runner.worker_main JOBFILE`` (see ``workers``)."""

import os
import pickle
import sys

from harness.runner.workers import worker_main

if __name__ == "__main__":
    with open(sys.argv[1], "rb") as fh:
        job = pickle.load(fh)
    os.unlink(sys.argv[1])
    worker_main(job)
