"""``python -m service.cli``: the ``tuneline`` command without its console script."""

from service.cli.main import main

if __name__ == "__main__":  # importing this module (e.g. walking the package) runs nothing
    main()
