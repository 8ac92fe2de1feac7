"""The kit's HTTP service: scoring, inference jobs and the organiser's case scoring (see app.service.api)."""
