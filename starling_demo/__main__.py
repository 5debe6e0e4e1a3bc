"""`python -m starling_demo`: the command line."""
import sys

from .cli import main

if __name__ == "__main__":  # also imported by pytest's doctest collection
    sys.exit(main())
