"""`python -m app dry-run`: run an algorithm on studies laid out as grand-challenge lays them out,
check every output against the platform's contract, then score the outputs with the kit's
evaluation container exactly as the platform would run it (see app.dryrun.run)."""
