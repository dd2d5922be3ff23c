"""Job file of ``biolord-ray run`` (``ray job submit -- python jobs/full_pipeline.py``);
``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
