"""Job file of ``biolord-ray train`` (``ray job submit -- python jobs/train_contrastive.py``);
``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
