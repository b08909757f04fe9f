"""`python -m mcub.data check ...`: the same command as `mcub data check ...`."""

from mcub.check import main
from mcub.cli import exit_now

exit_now(main())
