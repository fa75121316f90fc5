"""Builds sharded TFRecords from a folder of images: see koala/build_records.py for the flags.

  python data_prep/build_records.py --input_dir=PHOTOS --output_dir=RECORDS
"""

import pathlib
import sys

# Runs from a checkout without installing koala.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from koala.cli.build_records import run  # noqa: E402

if __name__ == "__main__":
    run()
