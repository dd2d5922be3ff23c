"""Job file of ``biolord-ray generate`` (``ray job submit -- python jobs/generate_definitions.py``);
``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["generate", *sys.argv[1:]])
