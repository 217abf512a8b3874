"""``python -m sagaline.cli``: the ``sagaline`` command line."""

from sagaline.cli import main

if __name__ == "__main__":
    main()
