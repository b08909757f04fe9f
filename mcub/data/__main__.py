"""`python -m mcub.data check ...`: the same command as `mcub data check ...`."""

from mcub.check import main

raise SystemExit(main())
