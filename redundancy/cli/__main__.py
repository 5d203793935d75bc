"""`python -m redundancy.cli ...`, as the `redundancy` script."""
from . import app

app()
