"""The scoring container: autoPET metrics per study, statistics over a submission, metrics.json."""
