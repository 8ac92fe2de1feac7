"""The kit's FastAPI service (app.service) and the grand-challenge dry run (app.dryrun); see app.__main__."""
