"""Job file of ``biolord-ray distill`` (``ray job submit -- python jobs/distill_tune_soup.py``);
``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["distill", *sys.argv[1:]])
