"""Job file of ``biolord-ray evaluate`` (``ray job submit -- python jobs/evaluate.py``);
``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
