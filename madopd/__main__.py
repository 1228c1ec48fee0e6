"""``python -m madopd ...`` is the ``madopd`` command line."""

from madopd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
