"""``python -m service.cli``: the ``tuneline`` command without its console script."""

from service.cli.main import main

main()
