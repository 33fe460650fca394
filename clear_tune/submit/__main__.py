import sys

from clear_tune._cli_errors import run_cli
from clear_tune.submit._cli import main

sys.exit(run_cli(main))
