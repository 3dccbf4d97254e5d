"""``python -m include.warehouse.queries``: list, render or run the analysts' queries."""

from include.warehouse.queries import main

main()
