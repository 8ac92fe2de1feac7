"""The organiser's report: one self-contained HTML file over one or more submissions' metrics.json."""
