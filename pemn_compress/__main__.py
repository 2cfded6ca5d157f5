"""``python -m pemn_compress``: the ``pemn`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
