"""Job file of ``biolord-ray ingest`` (``ray job submit -- python jobs/ingest_kg.py``);
``--help`` shows its usage."""

import sys

from biolord_ray.cli import main

if __name__ == "__main__":
    main(["ingest", *sys.argv[1:]])
