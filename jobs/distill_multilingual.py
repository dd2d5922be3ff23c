"""Job file of ``biolord-ray multilingual``
(``ray job submit -- python jobs/distill_multilingual.py``); ``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["multilingual", *sys.argv[1:]])
