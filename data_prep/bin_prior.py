"""Writes the ab bin prior of colour records: see koala/bin_prior.py for the flags.

  python data_prep/bin_prior.py --records=RECORDS --output=RECORDS/ab_prior.npz
"""

import pathlib
import sys

# Runs from a checkout without installing koala.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from koala.cli.bin_prior import run  # noqa: E402

if __name__ == "__main__":
    run()
