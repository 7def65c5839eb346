"""`python -m liftloop.cli`: how `liftloop up` starts its services (`serve worker`, ...)."""

from liftloop.cli import main

main()
